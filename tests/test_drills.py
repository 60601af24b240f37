"""Failover drills: scenarios, the runner's journal and figures, reports, AWS safety,
and the deterministic simulation over seeded random fault schedules."""

from __future__ import annotations

import html.parser
import json
import os
from pathlib import Path
from typing import Any

import pytest

from regions.drills import DrillOptions, DrillRunner, get_scenario, load_history, save_journal
from regions.drills.backends import SimBackend
from regions.drills.report import render_html, render_markdown, write_reports
from regions.drills.simulate import run_schedule
from regions.local.sim import simulation
from residency.errors import ConfigError, UnknownName, UnknownRegion
from residency.policy import Policy, load_policy
from residency.records import DrillSummary

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = load_policy(ROOT / "policies" / "minimal.yaml")
SCHEDULES = int(os.environ.get("REGIONKIT_TEST_SCHEDULES", "10"))  # the slow tier: 200 more
PHASES = [
    "plan",
    "steady-state",
    "baseline",
    "inject",
    "workload",
    "heal",
    "recovery",
    "convergence",
    "measure",
    "verdict",
]


def sim_drill(policy: Policy, scenario: str, region: str, seed: int = 1, **params: Any) -> Any:
    with simulation(policy, seed=seed) as s:
        sc = get_scenario(scenario)
        runner = DrillRunner(
            SimBackend(s),
            sc,
            sc.parse(policy, {"region": region, **params}),
            options=DrillOptions(duration=0.6, rate=10, recovery=0.5, baseline=0.3, seed=seed),
        )
        return runner.run()


# --- the deterministic simulation ----------------------------------------------------


def test_seeded_random_fault_schedules() -> None:
    """Every schedule: 0 residency violations, full convergence, every ack accounted for."""
    _check_schedules(SCHEDULES)


@pytest.mark.slow
def test_seeded_random_fault_schedules_at_scale() -> None:
    """The same, over 200 schedules (REGIONKIT_TEST_SCHEDULES_AT_SCALE to change)."""
    _check_schedules(int(os.environ.get("REGIONKIT_TEST_SCHEDULES_AT_SCALE", "200")))


def _check_schedules(count: int) -> None:
    failures: list[str] = []
    totals = {"acknowledged": 0, "conflicts": 0, "unavailable": 0}
    kinds: set[str] = set()
    for seed in range(count):
        r = run_schedule(MINIMAL, seed)
        totals["acknowledged"] += r.acknowledged
        totals["conflicts"] += r.conflicts
        totals["unavailable"] += r.unavailable
        kinds |= {e.split()[2] for e in r.events if " fault " in e}
        if not r.ok:
            failures.append(
                f"seed {seed}: converged={r.converged} "
                f"violations={r.residency_violations} unaccounted={r.unaccounted}"
            )
    assert not failures, "\n".join(failures)
    # the schedules really exercised what they claim
    assert kinds == {"outage", "pause", "partition", "skew", "lag"}
    assert totals["acknowledged"] > 10 * count // 2
    assert totals["conflicts"] > 0 and totals["unavailable"] > 0


def test_the_same_seed_reproduces_the_same_history() -> None:
    a, b, c = run_schedule(MINIMAL, 42), run_schedule(MINIMAL, 42), run_schedule(MINIMAL, 43)
    assert a.digest == b.digest and a.events == b.events
    assert a.digest != c.digest


# --- the runner on the simulation ---------------------------------------------------


@pytest.mark.parametrize(
    "scenario,region,params",
    [
        ("region-outage", "eu-central-1", {}),
        ("replication-pause", "eu-west-1", {}),
        # 20-70 s of CPU each on the in-process simulation: the second tier
        pytest.param("partition", "us-east-1", {}, marks=pytest.mark.slow),
        pytest.param("clock-skew", "eu-central-1", {"ms": 250}, marks=pytest.mark.slow),
        pytest.param("failback", "eu-central-1", {}, marks=pytest.mark.slow),
    ],
)
def test_every_scenario_passes_on_the_simulation(
    scenario: str, region: str, params: dict[str, Any]
) -> None:
    j = sim_drill(MINIMAL, scenario, region, **params)
    assert j.verdict == "pass", j.reasons
    names = [p.name for p in j.phases]
    expected = PHASES if scenario != "failback" else PHASES[:8] + ["failback"] + PHASES[8:]
    assert names == expected
    assert all(p.ended_at is not None and p.ended_at >= p.started_at for p in j.phases)
    f = j.figures
    assert f.converged and f.residency_violations == 0 and f.tables_compared >= 3
    assert f.writes_acknowledged > 0
    assert {d.data_class for d in f.data_classes} == {"content", "profile"}
    assert {r.region for r in f.regions} == set(MINIMAL.regions)


def test_region_outage_fails_over_and_measures_rto() -> None:
    j = sim_drill(MINIMAL, "region-outage", "eu-central-1")
    by = {d.data_class: d for d in j.figures.data_classes}
    assert by["content"].failover_writes > 0 and by["profile"].failover_writes > 0
    assert by["profile"].rto_seconds is not None and by["profile"].rto_seconds < 1.0
    assert "eu-central-1" in by["profile"].rto_by_region


def test_single_region_jurisdiction_waits_by_law() -> None:
    """us-east-1 is the US's only region: its profiles cannot fail over, and say why."""
    j = sim_drill(MINIMAL, "region-outage", "us-east-1")
    profile = next(d for d in j.figures.data_classes if d.data_class == "profile")
    assert profile.no_compliant_failover == ["US"]
    assert j.figures.client_errors.get("RegionUnavailable", 0) > 0
    assert j.figures.residency_violations == 0
    assert j.verdict == "pass", j.reasons


def test_a_missed_target_fails_the_verdict() -> None:
    strict = MINIMAL.model_copy(
        update={
            "targets": MINIMAL.targets.model_copy(
                update={
                    "drills": MINIMAL.targets.drills.model_copy(
                        update={"convergence_seconds": 1e-9}
                    )
                }
            )
        }
    )
    j = sim_drill(strict, "replication-pause", "eu-central-1")
    assert j.verdict == "fail"
    assert any("convergence" in r for r in j.reasons), j.reasons


def test_scenario_parameters_are_validated() -> None:
    with pytest.raises(UnknownName):
        get_scenario("meteor-strike")
    with pytest.raises(UnknownRegion):
        get_scenario("region-outage").parse(MINIMAL, {"region": "mars-east-1"})
    with pytest.raises(ConfigError, match="mode"):
        get_scenario("region-outage").parse(MINIMAL, {"region": "eu-west-1", "mode": "nuke"})


# --- journal, history and reports -----------------------------------------------------


@pytest.mark.slow  # several drills end to end
def test_history_reports_and_summary(tmp_path: Path) -> None:
    j = sim_drill(MINIMAL, "replication-pause", "eu-west-1")
    path = save_journal(j, tmp_path / "history")
    assert path.exists()
    (tmp_path / "history" / "junk.json").write_text("{not json", encoding="utf-8")
    [back] = load_history(tmp_path / "history")
    assert back == j
    summary = DrillSummary.model_validate(json.loads(path.read_text()))
    assert summary.regions == ["eu-west-1"] and summary.verdict == "pass"
    paths = write_reports(j, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["drill_id"] == j.drill_id
    md = paths["markdown"].read_text()
    assert "| RTO" in md and "## Timeline" in md
    page = paths["html"].read_text()

    class Links(html.parser.HTMLParser):
        external: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                if name in {"src", "href"} and value and "://" in value:
                    self.external.append(value)

    parser = Links()
    parser.feed(page)
    assert parser.external == []  # self-contained
    assert "<script" not in page and page.count("<svg") == 4 and j.drill_id in page
    assert render_markdown(j) == md and render_html(j) == page


def test_html_escapes_text() -> None:
    j = sim_drill(MINIMAL, "clock-skew", "eu-west-1")
    j.reasons.append("<script>alert(1)</script>")
    assert "<script>alert" not in render_html(j)


# --- AWS target safety -----------------------------------------------------------------


def test_aws_drill_refuses_without_a_matching_account() -> None:
    from moto import mock_aws

    from regions.drills.aws import require_account

    with mock_aws():
        import boto3

        sts = boto3.client("sts", region_name="eu-west-1")
        with pytest.raises(ConfigError, match="--confirm-account 123456789012"):
            require_account(sts, None)
        with pytest.raises(ConfigError, match="does not match"):
            require_account(sts, "999999999999")
        assert require_account(sts, "123456789012") == "123456789012"


# --- on the real local cluster ---------------------------------------------------------


@pytest.mark.slow  # real servers, wall-clock faults; the demo runs the same on 7 regions
@pytest.mark.wallclock
@pytest.mark.parametrize("scenario", ["region-outage", "replication-pause"])
def test_drill_on_the_local_cluster(cluster: Any, scenario: str, tmp_path: Path) -> None:
    """Real moto servers, a SIGSTOPped region or paused links, wall-clock figures."""
    from regions.drills.backends import DRILL_SETTINGS, LocalClusterBackend

    sc = get_scenario(scenario)
    # By default the drill's routers run with the service's settings (what a service
    # sees); a 1.5 s fault is rehearsed here with the fast drill timeouts instead.
    service = cluster.config()
    assert LocalClusterBackend(cluster).settings == service
    runner = DrillRunner(
        LocalClusterBackend(cluster, fast=True),
        sc,
        sc.parse(cluster.policy, {"region": "eu-central-1"}),
        # 3 s of fault: recovery needs a timeout, the breaker and a failover, which a
        # loaded machine (the suite on 4 workers) stretches past 1.5 s.
        options=DrillOptions(duration=3.0, rate=10),
    )
    j = runner.run()
    # the failing phase's details (quiescent, identical, digests) say why in the CI log
    assert j.verdict == "pass", (j.reasons, [p.model_dump() for p in j.phases if not p.ok])
    assert j.settings["read_timeout"] == DRILL_SETTINGS["read_timeout"] < service.read_timeout
    f = j.figures
    assert f.converged and f.residency_violations == 0
    assert f.convergence_seconds is not None
    assert f.convergence_seconds <= cluster.policy.targets.drills.convergence_seconds
    if scenario == "region-outage":
        by = {d.data_class: d for d in f.data_classes}
        assert by["content"].failover_writes > 0
        # Measured on the wall clock with real timeouts: bounded here by the policy's
        # target, which a loaded machine does not break; how far inside a second the
        # failover is, is bench_drill's figure (goal: RTO <= 1 s).
        rto = by["content"].rto_seconds
        assert rto is not None and rto <= cluster.policy.targets.drills.rto_seconds
        assert "eu-central-1" in by["profile"].rto_by_region
    write_reports(j, tmp_path)


# --- the CLI ------------------------------------------------------------------------------


def _cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path
) -> tuple[int, str, str]:
    import cli

    monkeypatch.chdir(cwd)
    try:
        cli.main(["--policy", str(ROOT / "policies" / "minimal.yaml"), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_drill_list_and_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = _cli(["drill", "list", "--json"], monkeypatch, capsys, tmp_path)
    assert code == 0
    assert {s["name"] for s in json.loads(out)} == {
        "region-outage",
        "replication-pause",
        "partition",
        "clock-skew",
        "failback",
    }
    code, out, _ = _cli(
        [
            "drill",
            "plan",
            "replication-pause",
            "--region",
            "eu-west-1",
            "--target",
            "aws",
            "--json",
        ],
        monkeypatch,
        capsys,
        tmp_path,
    )
    assert code == 0
    plan = json.loads(out)
    steps = " ".join(plan["steps"])
    assert "FIS experiment" in steps and "SHA-256" not in steps and "for 5 s" not in steps
    assert "resource policies are checked" in steps
    actions = plan["fis_experiment_template"]["actions"].values()
    assert [a["actionId"] for a in actions] == ["aws:dynamodb:global-table-pause-replication"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["drill", "run", "meteor", "--region", "eu-west-1"], "unknown scenario 'meteor'"),
        (["drill", "run", "region-outage", "--region", "mars-1"], "mars-1"),
        (
            ["drill", "plan", "region-outage", "--region", "eu-west-1", "--target", "aws"],
            "only replication-pause",
        ),
        (
            ["drill", "run", "region-outage", "--region", "eu-west-1", "--target", "moon"],
            "--target must be",
        ),
    ],
)
def test_cli_drill_bad_input_is_exit_2(
    args: list[str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    code, _, err = _cli(args, monkeypatch, capsys, tmp_path)
    assert code == 2
    assert needle in err and "Traceback" not in err


@pytest.mark.slow  # several drills end to end
def test_cli_drill_history(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    j = sim_drill(MINIMAL, "partition", "us-east-1")
    save_journal(j, tmp_path / ".regionkit" / "drills")
    code, out, _ = _cli(["drill", "history", "--json"], monkeypatch, capsys, tmp_path)
    assert code == 0
    [entry] = json.loads(out)
    assert entry["drill_id"] == j.drill_id and entry["verdict"] == "pass"
    code, out, _ = _cli(["drill", "history"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "us-east-1" in out and "never" in out
