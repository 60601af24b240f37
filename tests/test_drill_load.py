"""Faults under load: writers run through the fault, RPO exposure is real, and the
runner heals on every way out (exceptions, Ctrl-C, SystemExit), then checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regions.drills import DrillOptions, DrillRunner, get_scenario
from regions.drills.backends import SimBackend, faults_in_status
from regions.drills.runner import Outcome
from regions.drills.series import MAX_BUCKETS, build_series
from regions.local.sim import simulation
from residency.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = load_policy(ROOT / "policies" / "minimal.yaml")


def _with_targets(policy: Policy, **targets: float) -> Policy:
    drills = policy.targets.drills.model_copy(update=targets)
    return policy.model_copy(
        update={"targets": policy.targets.model_copy(update={"drills": drills})}
    )


def _run(
    policy: Policy,
    scenario: str,
    region: str,
    *,
    on_event: Any = None,
    **opts: Any,
) -> tuple[DrillRunner, SimBackend, Any]:
    options = {"duration": 0.6, "rate": 10, "recovery": 0.4, "baseline": 0.3, "seed": 3, **opts}
    with simulation(policy, seed=3) as s:
        sc = get_scenario(scenario)
        backend = SimBackend(s)
        runner = DrillRunner(
            backend,
            sc,
            sc.parse(policy, {"region": region}),
            options=DrillOptions(**options),
            on_event=on_event,
        )
        try:
            j = runner.run()
        except BaseException as exc:  # the caller checks what was cleaned up
            return runner, backend, exc
        return runner, backend, j


def test_high_lag_makes_the_rpo_target_fail() -> None:
    """Writers never stop, so the fault catches writes in flight: with 1.5 s of lag on
    every link and a 0.5 s RPO target, exposure is measured and the target is missed."""
    policy = _with_targets(MINIMAL, rpo_seconds=0.5)
    _runner, backend, j = _run(policy, "replication-pause", "eu-central-1", lag=1.5, baseline=2.0)
    f = j.figures
    assert f.rpo_exposure_count > 0
    assert f.rpo_exposure_max_age_seconds > 0.5
    assert j.verdict == "fail"
    assert any(r.startswith("RPO exposure") for r in j.reasons), j.reasons
    # the pause loses nothing: every exposed write replicated late
    assert f.rpo_lost == 0 and f.rpo_recovered == f.rpo_exposure_count
    assert f.converged and backend.faults_left() == []
    # a slow link's convergence includes its lag (the lag stays on until it is measured):
    # the last writes, made as the load stopped, drain 1.5 s later
    at = {e.kind: e.t for e in j.events}
    # (virtual time, seeded: with the lag cleared first it drained in 1.477 s)
    assert at["backlog-drained"] - at["load-stopped"] >= 1.5
    # the rehearsed lag is not a fault left behind by the heal
    assert "checked after heal: no fault left in place" in j.cleanup, j.cleanup
    assert not any("STILL IN PLACE" in r for r in j.reasons), j.reasons
    # the load ran before, during and after the fault
    inject = next(p for p in j.phases if p.name == "inject")
    assert inject.detail["writes_before_fault"] > 0
    kinds = [e.kind for e in j.events]
    assert kinds.index("load-started") < kinds.index("fault-injected")
    assert kinds.index("fault-healed") < kinds.index("load-stopped")
    # the lag chart sees the backlog grow during the pause
    lag = j.series.replication_lag_ms["eu-central-1>eu-west-1"]
    assert max(v for v in lag if v is not None) >= 1000


def test_time_series_and_events_of_an_outage() -> None:
    _runner, _backend, j = _run(MINIMAL, "region-outage", "eu-central-1")
    s = j.series
    assert s.bucket_seconds == 1.0 and s.buckets >= 1
    assert set(MINIMAL.regions) <= set(s.writes_ok)
    assert "eu-central-1/profile" in s.writes_ok
    assert sum(s.failovers["eu-central-1"]) > 0
    assert all(len(v) == s.buckets for v in s.latency_p99_ms.values())
    kinds = {e.kind for e in j.events}
    assert {"fault-injected", "breaker-open", "fault-healed", "converged"} <= kinds
    assert j.verdict == "pass", j.reasons


def test_series_stay_bounded_for_long_drills() -> None:
    outcomes = [
        Outcome(float(t), "eu-west-1", "content", "write", True, False, None, 1.0)
        for t in range(0, 7200, 3)
    ]
    lags = [(float(t), "eu-west-1>eu-central-1", 12.0) for t in range(0, 7200, 5)]
    s = build_series(outcomes, lags, start=0.0, end=7200.0, drill_start=0.0)
    assert s.buckets <= MAX_BUCKETS and s.bucket_seconds == 24.0
    assert sum(s.writes_ok["eu-west-1"]) == len(outcomes)
    assert len(s.model_dump_json()) < 20_000


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, RuntimeError])
@pytest.mark.parametrize("phase", ["workload", "heal", "recovery"])
def test_every_way_out_heals_the_fault(exc: type[BaseException], phase: str) -> None:
    def boom(name: str, detail: dict[str, Any]) -> None:
        if name == "phase" and detail["name"] == phase:
            raise exc()

    runner, backend, out = _run(MINIMAL, "region-outage", "eu-central-1", on_event=boom)
    j = runner.journal
    if exc is RuntimeError:
        assert out is j and j.verdict == "error"  # an error is reported, not raised
    else:
        assert isinstance(out, exc)  # Ctrl-C and SystemExit go on after the heal
        assert any("interrupted" in r for r in j.reasons)
    assert backend.faults_left() == []
    assert runner.fault_active is False and not runner.load.running
    assert any("no fault left in place" in c for c in j.cleanup), j.cleanup
    assert j.ended_at is not None


def test_a_heal_that_does_not_heal_is_said_loudly() -> None:
    sc = get_scenario("region-outage")

    class Stuck(SimBackend):
        def restore(self, region: str) -> None:  # the heal "succeeds" but does nothing
            pass

    with simulation(MINIMAL, seed=3) as s:
        b = Stuck(s)
        j = DrillRunner(
            b,
            sc,
            sc.parse(MINIMAL, {"region": "eu-central-1"}),
            options=DrillOptions(duration=0.3, rate=10, recovery=0.2, baseline=0.1, seed=3),
        ).run()
        s.restore("eu-central-1")
    assert j.verdict != "pass"
    assert any("FAULT STILL IN PLACE" in r and "eu-central-1" in r for r in j.reasons)


def test_faults_in_status() -> None:
    status = {
        "outages": {"eu-west-1": "stop"},
        "links": [{"src": "a", "dst": "b", "paused": True}, {"src": "b", "dst": "a"}],
        "clock_skew_ms": {"us-east-1": 0, "eu-west-1": 250},
    }
    assert faults_in_status(status) == [
        "outage of eu-west-1 (stop)",
        "replication blocked on 1 links: a>b",
        "clock skew of 250 ms in eu-west-1",
    ]
    assert faults_in_status({}) == []
