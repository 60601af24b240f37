"""Opening a drill in the library (:mod:`regions.drills.launch`), as ``drill run`` does.

The AWS set-up runs on moto's STS, FIS and CloudWatch (in process): the account
check, finding or creating the template and its stop alarm, the duration the
experiment will really have, and nothing created when the set-up is refused.
The whole AWS drill through :func:`open_aws_drill` is in ``test_drill_aws.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regions.drills import get_scenario
from regions.drills.launch import open_aws_drill, open_local_drill, prepare_fis
from regions.drills.runner import DrillOptions
from residency.deployment import plan_deployment
from residency.errors import ConfigError
from residency.fis_template import customer_harm_alarm_name
from residency.policy import load_policy
from residency.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = load_policy(ROOT / "policies" / "minimal.yaml")
REGION = "eu-central-1"
ACCOUNT = "123456789012"  # moto's


class _Moto:
    """A client provider on moto's in-process backends (inside ``mock_aws``)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def client(self, service: str, region: str) -> Any:
        import boto3

        self.asked.append((service, region))
        return boto3.client(service, region_name=region)


@pytest.fixture
def moto() -> Iterator[_Moto]:
    from moto import mock_aws

    with mock_aws():
        yield _Moto()


def _templates(moto: _Moto) -> list[dict[str, Any]]:
    found = moto.client("fis", REGION).list_experiment_templates()["experimentTemplates"]
    return list(found)


def _alarms(moto: _Moto) -> list[str]:
    alarms = moto.client("cloudwatch", REGION).describe_alarms()["MetricAlarms"]
    return [a["AlarmName"] for a in alarms]


def test_no_template_is_refused_and_nothing_is_created(moto: _Moto) -> None:
    with pytest.raises(ConfigError, match=r"no regionkit FIS template.*--create-template"):
        prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT)
    assert _templates(moto) == [] and _alarms(moto) == []


@pytest.mark.parametrize(
    ("confirm", "match"),
    [(None, "pass --confirm-account 123456789012"), ("999999999999", "does not match")],
)
def test_the_account_is_confirmed_before_anything_is_created(
    moto: _Moto, confirm: str | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        prepare_fis(moto, MINIMAL, REGION, confirm_account=confirm, create_template=True)
    assert _templates(moto) == [] and _alarms(moto) == []


def test_a_created_template_is_found_again_with_its_duration(moto: _Moto) -> None:
    made = prepare_fis(
        moto, MINIMAL, REGION, confirm_account=ACCOUNT, duration=42, create_template=True
    )
    assert made.created and made.seconds == 42
    assert (made.account, made.partition, made.region) == (ACCOUNT, "aws", REGION)
    # its stop condition exists: the customer-harm alarm the CDK app would deploy
    harm = customer_harm_alarm_name(plan_deployment(MINIMAL), REGION)
    assert _alarms(moto) == [harm]
    [listed] = _templates(moto)
    assert listed["id"] == made.template_id
    assert listed["tags"]["regionkit:policy"] == MINIMAL.name
    assert listed["tags"]["regionkit:region"] == REGION
    # the replicas it pauses, checked afterwards for a statement FIS left
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"
    assert made.tables == tuple((REGION, arn + t) for t in ("profiles", "content", "directory"))

    again = prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT)
    assert not again.created and again.template_id == made.template_id
    assert again.seconds == 42  # read back from FIS, not assumed
    assert len(_templates(moto)) == 1  # found, not made twice


def test_a_duration_the_deployed_template_would_not_honour_is_refused(moto: _Moto) -> None:
    prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT, duration=42, create_template=True)
    with pytest.raises(ConfigError, match=r"pauses replication for 42 s.*omit --duration"):
        prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT, duration=60)
    assert prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT, duration=42).seconds == 42


def test_a_region_outside_the_policy_is_refused_before_any_call(moto: _Moto) -> None:
    with pytest.raises(ConfigError, match="not in policy"):
        prepare_fis(moto, MINIMAL, "ap-south-1", confirm_account=ACCOUNT, create_template=True)
    assert moto.asked == []


def _open_aws(moto: _Moto, scenario: str, options: DrillOptions) -> None:
    sc = get_scenario(scenario)
    with open_aws_drill(
        sc,
        sc.parse(MINIMAL, {"region": REGION}),
        MINIMAL,
        Settings(mode="aws"),
        options,
        confirm_account=ACCOUNT,
        create_template=True,
        clients=moto,
    ):
        pytest.fail("the drill opened")


@pytest.mark.parametrize(
    ("scenario", "options", "match"),
    [
        ("region-outage", DrillOptions(), "only replication-pause has an FIS action"),
        ("replication-pause", DrillOptions(lag=0.5), "for local drills"),
    ],
)
def test_what_aws_cannot_run_is_refused_before_any_call(
    moto: _Moto, scenario: str, options: DrillOptions, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _open_aws(moto, scenario, options)
    assert moto.asked == []


def test_a_simulated_drill_opens_runs_and_says_where() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    sc = get_scenario("region-outage")
    options = DrillOptions(duration=0.6, rate=10, recovery=0.5, baseline=0.3, seed=3)
    with open_local_drill(
        sc,
        sc.parse(MINIMAL, {"region": REGION}),
        MINIMAL,
        Settings(mode="local"),
        options,
        target="sim",
        on_event=lambda kind, detail: events.append((kind, detail)),
    ) as runner:
        journal = runner.run()
    assert events[0] == ("setup", {"backend": "sim", "regions": 3})
    assert [d["name"] for k, d in events if k == "phase"][:2] == ["plan", "steady-state"]
    assert journal.verdict == "pass", journal.reasons
    assert journal.figures.residency_violations == 0


def test_an_unknown_local_target_is_refused() -> None:
    sc = get_scenario("region-outage")
    params = sc.parse(MINIMAL, {"region": REGION})
    drill = open_local_drill(
        sc,
        params,
        MINIMAL,
        Settings(mode="local"),
        DrillOptions(),
        target="aws",  # type: ignore[arg-type]
    )
    with pytest.raises(ConfigError, match="use 'local' or 'sim'"), drill:
        pytest.fail("the drill opened")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--confirm-account", ACCOUNT], "no regionkit FIS template for eu-central-1"),
        (["--confirm-account", "999999999999"], "does not match the caller's account"),
        (["--confirm-account", ACCOUNT, "--lag", "0.5"], "for local drills"),
    ],
)
def test_the_cli_drill_on_aws_is_the_library_s(
    extra: list[str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``drill run --target aws`` reaches the library's set-up (on moto) and renders its
    refusal: exit 2, the message, no traceback, and no template left behind."""
    import cli
    from moto import mock_aws

    monkeypatch.setenv("REGIONKIT_MODE", "aws")
    monkeypatch.chdir(tmp_path)
    args = ["drill", "run", "replication-pause", "--region", REGION, "--target", "aws", *extra]
    with mock_aws(), pytest.raises(SystemExit) as info:
        cli.main(["--policy", str(ROOT / "policies" / "minimal.yaml"), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert needle in " ".join(err.split()) and "Traceback" not in err
