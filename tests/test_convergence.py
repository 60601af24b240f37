"""Stateful property test: random concurrent writes, pauses, partitions and skew.

Driven step by step on the deterministic simulation. At the end, after healing:

* every replica holds the same item, and it is the HLC winner (the largest
  acknowledged version of that key);
* the detector flagged every write that was lost, and nothing else: each logged
  loser is truly not an ancestor of its winner;
* every acknowledged write is accounted for: in the final state, an ancestor of
  it, a logged conflict loser, or an ancestor of one. None vanishes unrecorded.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from regions.conflicts import ConflictLog
from regions.hlc import ClockDriftError, Stamp
from regions.local.sim import simulation
from residency.errors import StaleWrite
from residency.policy import load_policy

POLICY = load_policy(os.path.join(os.path.dirname(__file__), "..", "policies", "minimal.yaml"))
REGIONS = list(POLICY.regions)
KEYS = ["a", "b", "c"]
EXAMPLES = int(os.environ.get("REGIONKIT_TEST_CONVERGENCE_EXAMPLES", "20"))


class ConvergenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._ctx: Any = None
        self.counter = 0
        # version -> (key, base version or None, region)
        self.acked: dict[str, tuple[str, str | None, str]] = {}

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self._ctx = simulation(POLICY, seed=seed)
        self.sim = self._ctx.__enter__()
        self.sim.faults.set_lag(None, None, 0.05, jitter=0.2)

    @rule(region=st.sampled_from(REGIONS), key=st.sampled_from(KEYS))
    def read_modify_write(self, region: str, key: str) -> None:
        router = self.sim.routers[region]
        self.counter += 1
        current = router.get("content", {"pk": key})
        body = {"pk": key, "body": f"{region}-{self.counter}"}
        try:
            if current is None:
                w = router.put("content", body, create_only=True)
                base = None
            else:
                w = router.put("content", body, based_on=current)
                base = str(current["rk_v"])
        except (StaleWrite, ClockDriftError):
            return
        self.acked[w.version] = (key, base, region)

    @rule(dt=st.floats(0.001, 0.5))
    def tick(self, dt: float) -> None:
        self.sim.step(dt)

    @rule(src=st.sampled_from(REGIONS), dst=st.sampled_from(REGIONS))
    def pause(self, src: str, dst: str) -> None:
        self.sim.faults.pause(src, dst)

    @rule()
    def resume_all(self) -> None:
        self.sim.faults.resume()

    @rule(region=st.sampled_from(REGIONS))
    def partition(self, region: str) -> None:
        self.sim.faults.partition([[region], [r for r in REGIONS if r != region]])

    @rule()
    def heal(self) -> None:
        self.sim.faults.heal()

    @rule(region=st.sampled_from(REGIONS), ms=st.integers(-200, 200))
    def skew(self, region: str, ms: int) -> None:
        self.sim.skew(region, ms)

    def ancestors(self, version: str) -> set[str]:
        out: set[str] = set()
        v: str | None = version
        while v is not None and v in self.acked and v not in out:
            out.add(v)
            v = self.acked[v][1]
        return out

    def teardown(self) -> None:
        if self._ctx is None:
            return
        try:
            self.check_final_state()
        finally:
            self._ctx.__exit__(None, None, None)

    def check_final_state(self) -> None:
        sim = self.sim
        sim.faults.heal()
        sim.settle()
        assert sim.converged("content", REGIONS), "replicas differ after heal"
        final = sim.items(REGIONS[0], "content")
        log = ConflictLog(POLICY, sim.clients).scan(REGIONS[0])
        losers = {c.loser_version for c in log}
        accounted: set[str] = set()
        for key in KEYS:
            versions = [v for v, (k, _, _) in self.acked.items() if k == key]
            if not versions:
                continue
            winner = str(final[key]["rk_v"])
            assert winner == max(versions, key=Stamp.parse), "not the HLC winner"
            accounted |= self.ancestors(winner)
        for loser in losers:
            accounted |= self.ancestors(loser)
        missing = set(self.acked) - accounted
        assert not missing, f"acknowledged writes vanished unrecorded: {sorted(missing)}"
        for c in log:
            assert c.loser_version not in self.ancestors(c.winner_version), (
                f"false positive: {c.loser_version} is an ancestor of {c.winner_version}"
            )
            assert c.data_class == "content" and c.key in KEYS


ConvergenceMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConvergence = ConvergenceMachine.TestCase
