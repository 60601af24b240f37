"""Clock skew: a writer 5 s ahead, and the causally later writes made after reading it.

Measured on the simulation: for each of 100 keys the skewed writer (eu-central-1,
+5 s) writes, replication settles, then us-east-1 reads the item and writes based
on it (causally later). Two figures per mode: the share of those writes refused
(ClockDriftError), and causally later writes lost (the final item is not the
later write).

* default (refuse a stamp more than ``max_offset_ms`` ahead): 100% refused, which
  is the documented cost of keeping one broken clock from dragging every stamp
  (regions/hlc.py); 0 lost;
* the operator's path (``adopt_drift_ms`` = 10 s): at most 1% refused (0 measured),
  0 lost, every adoption counted and logged.
"""

from __future__ import annotations

from typing import Any

import pytest

from regions.conflicts import ConflictLog
from regions.hlc import ClockDriftError
from regions.local.sim import simulation
from residency.policy import load_policy

EU1, US = "eu-central-1", "us-east-1"
KEYS = 100


def _measure(policy: Any, adopt_drift_ms: int) -> tuple[float, int, int, int]:
    with simulation(policy, seed=4, adopt_drift_ms=adopt_drift_ms) as sim:
        sim.skew(EU1, 5_000)
        for i in range(KEYS):
            sim.routers[EU1].put("content", {"pk": f"skew-{i}", "body": "ahead"})
        sim.settle()
        refused, later = 0, {}
        for i in range(KEYS):
            key = f"skew-{i}"
            base = sim.routers[US].get("content", {"pk": key}, consistent=True)
            try:
                w = sim.routers[US].put("content", {"pk": key, "body": "later"}, based_on=base)
            except ClockDriftError:
                refused += 1
                continue
            later[key] = w.version
            sim.advance(0.001)
        sim.settle()
        items = sim.items(EU1, "content")
        lost = sum(1 for k, v in later.items() if items[k]["rk_v"] != v)
        conflicts = len(ConflictLog(sim.policy, sim.clients).scan(US))
        return refused / KEYS, lost, sim.routers[US].clock.drift_adopted, conflicts


@pytest.fixture(scope="module")
def policy(minimal_policy_path: Any) -> Any:
    return load_policy(minimal_policy_path)


def test_refusing_is_the_default_and_loses_nothing(policy: Any) -> None:
    refused, lost, adopted, conflicts = _measure(policy, 0)
    print(f"5 s skew, refuse (default): refused {refused:.0%}, lost {lost}")
    assert refused == 1.0 and lost == 0 and adopted == 0 and conflicts == 0


def test_adopting_bounded_drift_keeps_causally_later_writes_available(policy: Any) -> None:
    refused, lost, adopted, conflicts = _measure(policy, 10_000)
    print(f"5 s skew, adopt up to 10 s: refused {refused:.0%}, lost {lost}, adopted {adopted}")
    assert refused <= 0.01
    assert lost == 0 and conflicts == 0
    assert adopted >= 1
