"""Opening a drill in the library (:mod:`regions.drills.launch`), as ``drill run`` does.

The AWS set-up runs on moto's STS, FIS and CloudWatch (in process): the account
check, finding or creating the template and its stop alarm, the duration the
experiment will really have, and nothing created when the set-up is refused.
The whole AWS drill through :func:`open_aws_drill` is in ``test_drill_aws.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regions.drills import get_scenario
from regions.drills.launch import open_aws_drill, open_local_drill, prepare_fis
from regions.drills.runner import DrillOptions
from residency.deployment import plan_deployment
from residency.errors import BackendError, ConfigError
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


class _Identity:
    """STS in another partition (moto's is always ``aws``)."""

    def __init__(self, partition: str) -> None:
        self.partition = partition

    def get_caller_identity(self) -> dict[str, str]:
        arn = f"arn:{self.partition}:sts::{ACCOUNT}:assumed-role/sre/drill"
        return {"Account": ACCOUNT, "Arn": arn}


@pytest.mark.parametrize("partition", ["aws-cn", "aws-us-gov"])
def test_the_partition_comes_from_the_caller(moto: _Moto, partition: str) -> None:
    real = moto.client

    def client(service: str, region: str) -> Any:
        return _Identity(partition) if service == "sts" else real(service, region)

    moto.client = client  # type: ignore[method-assign]
    made = prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT, create_template=True)
    assert made.partition == partition
    assert all(arn.startswith(f"arn:{partition}:dynamodb:") for _, arn in made.tables)
    [listed] = _templates(moto)
    template = moto.client("fis", REGION).get_experiment_template(id=listed["id"])
    body = template["experimentTemplate"]
    assert body["roleArn"].startswith(f"arn:{partition}:iam::{ACCOUNT}:role/")
    assert body["stopConditions"][0]["value"].startswith(f"arn:{partition}:cloudwatch:")


def test_a_region_without_fis_is_refused_before_any_call(moto: _Moto) -> None:
    social = load_policy(ROOT / "policies" / "social-network.yaml")
    with pytest.raises(ConfigError, match="not available in ap-south-2"):
        prepare_fis(moto, social, "ap-south-2", confirm_account=ACCOUNT, create_template=True)
    assert moto.asked == []


class _Denied:
    """FIS refusing the caller, as botocore raises it (the message quotes the ARN)."""

    def list_experiment_templates(self, **_: Any) -> Any:
        from botocore.exceptions import ClientError

        error = {"Code": "AccessDeniedException", "Message": "arn:aws:iam::1:user/x is not"}
        raise ClientError({"Error": error}, "ListExperimentTemplates")


def test_a_refused_call_is_a_backend_error_in_regionkit_s_words(moto: _Moto) -> None:
    real = moto.client
    moto.client = lambda s, r: _Denied() if s == "fis" else real(s, r)  # type: ignore[method-assign]
    with pytest.raises(BackendError) as info:
        prepare_fis(moto, MINIMAL, REGION, confirm_account=ACCOUNT)
    err = info.value
    assert (err.operation, err.code) == ("fis:ListExperimentTemplates", "AccessDeniedException")
    assert "may not do this" in str(err) and "user/x" not in str(err)
    assert isinstance(err.__cause__, Exception)  # the original stays inspectable


def test_the_default_control_plane_ignores_data_plane_endpoints_and_is_closed(
    moto: _Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STS and FIS at AWS's own endpoints even when the settings point DynamoDB at a
    VPC endpoint; control-plane timeouts; every pool the call made is closed."""
    from regions.pool import ClientPool

    made: list[ClientPool] = []
    closed: list[ClientPool] = []
    real_init, real_close = ClientPool.__init__, ClientPool.close

    def init(self: ClientPool, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    def close(self: ClientPool) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(ClientPool, "__init__", init)
    monkeypatch.setattr(ClientPool, "close", close)
    sc = get_scenario("replication-pause")
    settings = Settings(mode="aws", endpoints={REGION: "https://vpce.example.internal"})
    with (
        pytest.raises(ConfigError, match="no regionkit FIS template"),  # moto's FIS answered
        open_aws_drill(
            sc,
            sc.parse(MINIMAL, {"region": REGION}),
            MINIMAL,
            settings,
            DrillOptions(),
            confirm_account=ACCOUNT,
        ),
    ):
        pytest.fail("the drill opened")
    assert made and set(map(id, closed)) >= set(map(id, made))
    assert all(p.config.read_timeout >= 10 and p.retries == "botocore" for p in made)
    # one pool at AWS's own endpoints (STS, FIS, CloudWatch), one where DynamoDB is reached
    assert sorted(len(p.config.endpoints) for p in made) == [0, 1]


def test_a_local_up_backend_is_closed_after_the_drill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regions.drills import backends
    from regions.local import control

    closed: list[str] = []

    class Backend:
        name = "local"
        threaded = True

        def __init__(self, policy: Any, settings: Any, client: Any) -> None:
            self.policy, self.client = policy, client

        def close(self) -> None:
            closed.append(self.client)

        def __getattr__(self, name: str) -> Any:  # the rest of a backend, never used here
            return lambda *args, **kwargs: 0.0

    state = tmp_path / "state.json"
    state.write_text("{}")
    monkeypatch.setattr(backends, "RemoteClusterBackend", Backend)
    monkeypatch.setattr(control.ControlClient, "from_state_file", lambda path: "control")
    sc = get_scenario("region-outage")
    with (
        pytest.raises(RuntimeError, match="drill failed"),
        open_local_drill(
            sc,
            sc.parse(MINIMAL, {"region": REGION}),
            MINIMAL,
            Settings(mode="local", state_file=state),
            DrillOptions(),
        ) as runner,
    ):
        assert runner.b.client == "control"
        raise RuntimeError("drill failed")
    assert closed == ["control"]


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
    from moto import mock_aws

    import cli

    monkeypatch.setenv("REGIONKIT_MODE", "aws")
    monkeypatch.chdir(tmp_path)
    args = ["drill", "run", "replication-pause", "--region", REGION, "--target", "aws", *extra]
    with mock_aws():
        with pytest.raises(SystemExit) as info:
            cli.main(["--policy", str(ROOT / "policies" / "minimal.yaml"), *args])
        made = _Moto()
        assert _templates(made) == [] and _alarms(made) == []
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert needle in " ".join(err.split()) and "Traceback" not in err


def test_the_cli_drill_on_aws_needs_aws_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import cli

    monkeypatch.setenv("REGIONKIT_MODE", "local")
    monkeypatch.chdir(tmp_path)
    args = ["drill", "run", "replication-pause", "-r", REGION, "--target", "aws"]
    with pytest.raises(SystemExit) as info:
        cli.main(["--policy", str(ROOT / "policies" / "minimal.yaml"), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "REGIONKIT_MODE=aws" in err, err


def test_ctrl_c_in_the_cli_saves_the_journal_of_the_healed_drill(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The CLI keeps the runner the library opened, so an interrupt still has a journal."""
    import cli
    from _cli import drill_run

    real = drill_run._describe

    def interrupt(name: str, kind: str, detail: dict[str, Any]) -> str | None:
        if kind == "phase" and detail["name"] == "workload":
            raise KeyboardInterrupt
        return real(name, kind, detail)

    monkeypatch.setattr(drill_run, "_describe", interrupt)
    monkeypatch.chdir(tmp_path)
    args = ["drill", "run", "region-outage", "-r", REGION, "--target", "sim", "--json"]
    with pytest.raises(SystemExit) as info:
        cli.main(["--policy", str(ROOT / "policies" / "minimal.yaml"), *args])
    out = capsys.readouterr().out
    assert info.value.code == 130, out
    [saved] = (tmp_path / ".regionkit" / "drills").glob("*.json")
    journal = json.loads(saved.read_text())
    assert journal["verdict"] == "error"
    assert "workload" in [p["name"] for p in journal["phases"]]
    assert journal["cleanup"]  # healed before the exit
