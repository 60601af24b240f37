"""Interrupts at every phase, as signals to a real process: the drill heals, then exits.

A child process runs a drill on the simulation and holds at one phase; the test
sends it SIGINT (Ctrl-C) or SIGTERM (what `kill` and CI cancellations send). The
child must heal the fault, stop its writers, check that no fault is left, and exit
130 or 143: chaoslib's rule that rollbacks run after KeyboardInterrupt and
SystemExit too, not only after Exception.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The child first puts Ctrl-C back, as a shell starts a command: a process inherits an
# ignored SIGINT, and a worker of this test run may ignore it at that moment (a drill's
# clean-up holds it off), which made the child deaf to the test's signal.
CHILD = r"""
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
import json, sys, time
from pathlib import Path
from _cli.common import sigterm_as_exit
from regions.drills import DrillOptions, DrillRunner, get_scenario
from regions.drills.backends import SimBackend
from regions.local.sim import simulation
from residency.policy import load_policy

root, scenario, hold_at = sys.argv[1:4]
lag = float(sys.argv[4]) if len(sys.argv) > 4 else None
policy = load_policy(Path(root) / "policies" / "minimal.yaml")

def hold(name, detail):
    if name == "phase" and detail["name"] == hold_at:
        print("AT " + hold_at, flush=True)
        while True:  # hold this phase until the parent's signal arrives
            time.sleep(0.01)

with simulation(policy, seed=5) as sim:
    backend = SimBackend(sim)
    sc = get_scenario(scenario)
    runner = DrillRunner(
        backend, sc, sc.parse(policy, {"region": "eu-central-1"}),
        options=DrillOptions(
            duration=0.3, rate=10, recovery=0.2, baseline=0.2, seed=5, lag=lag
        ),
        on_event=hold,
    )
    code = 0
    with sigterm_as_exit():
        try:
            runner.run()
        except KeyboardInterrupt:
            code = 130
        except SystemExit as exc:
            code = int(exc.code or 0)
    j = runner.journal
    print(json.dumps({
        "faults_left": backend.faults_left(),
        "fault_active": runner.fault_active,
        "load_running": runner.load.running,
        "cleanup": j.cleanup,
        "reasons": j.reasons,
        "verdict": j.verdict,
    }), flush=True)
    sys.exit(code)
"""

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
# Each case is a child process importing the stack and running a drill (5-10 s of CPU):
# the first tier tries a fault in place (inject, workload) and after heal (convergence),
# by both signals; the second tier every phase.
FIRST_TIER = {
    ("inject", signal.SIGINT, "region-outage"),
    ("convergence", signal.SIGINT, "region-outage"),
    ("workload", signal.SIGTERM, "replication-pause"),
}
CASES = [
    pytest.param(*case, marks=() if case in FIRST_TIER else pytest.mark.slow)
    for case in [(p, signal.SIGINT, "region-outage") for p in PHASES]
    + [
        (p, signal.SIGTERM, s)
        for p, s in (
            ("workload", "region-outage"),
            ("workload", "replication-pause"),
            ("recovery", "partition"),
        )
    ]
]


def _read_line(proc: subprocess.Popen[str], timeout: float = 120.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child never reached its phase"
    return proc.stdout.readline().strip()


def _interrupt(
    scenario: str, phase: str, sig: signal.Signals, *lag: str
) -> tuple[int, dict[str, Any]]:
    """Run the child's drill, send ``sig`` when it holds at ``phase``; its exit code and
    the report it prints after its clean-up."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT), scenario, phase, *lag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert _read_line(proc) == f"AT {phase}"
        proc.send_signal(sig)
        report = json.loads(_read_line(proc))
        return proc.wait(timeout=120), report
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("phase", "sig", "scenario"), CASES, ids=str)
def test_a_signal_at_any_phase_heals_before_exit(
    phase: str, sig: signal.Signals, scenario: str
) -> None:
    code, report = _interrupt(scenario, phase, sig)
    assert code == (130 if sig == signal.SIGINT else 143)
    assert report["faults_left"] == [], report
    assert report["fault_active"] is False and report["load_running"] is False
    assert report["verdict"] == "error"
    assert any("interrupted" in r for r in report["reasons"]), report
    assert "checked after heal: no fault left in place" in report["cleanup"], report
    if phase in {"workload", "heal"}:  # the fault was in place: the cleanup healed it
        assert any(c.startswith("healed") for c in report["cleanup"]), report


def test_a_drill_interrupted_while_rehearsing_lag_removes_the_lag() -> None:
    """``--lag`` is a fault too: an interrupted drill takes it off every link, and the
    check after heal looks for it (a review found the lag left behind, reported clean)."""
    code, report = _interrupt("region-outage", "workload", signal.SIGINT, "0.25")
    assert code == 130
    assert report["faults_left"] == [], report
    assert "removed the replication lag after the abort" in report["cleanup"], report
    assert "checked after heal: no fault left in place" in report["cleanup"], report


def test_the_check_after_heal_sees_an_injected_lag() -> None:
    from regions.drills.backends import faults_in_status

    links = [{"src": "a", "dst": "b", "paused": False, "injected_lag_ms": 250.0}]
    assert faults_in_status({"links": links}) == ["replication lag injected on 1 links: a>b"]
    assert faults_in_status({"links": [{**links[0], "injected_lag_ms": 0.0}]}) == []
