"""Merges never lose an update: G-counters under random pauses and outages, 3 regions.

Each region's writer owns one component of each counter (a grow-only counter) and
knows how many of its own increments were acknowledged, as a G-counter's replica
does. It reads the item where it can, sets its component to its own count plus one,
and writes based on what it read (the router merges on a failed condition). Links
pause and resume, regions go down and come back (the router fails over to another
replica), virtual time moves on, replication runs between steps. After healing,
every replica holds the same item and every counter equals the number of
acknowledged increments: nothing acknowledged is lost, nothing counted twice.

50 examples per run (REGIONKIT_TEST_MERGE_EXAMPLES overrides it).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regions.local.sim import Simulation, simulation
from regions.merges import total
from residency.errors import RegionkitError
from residency.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("REGIONKIT_TEST_MERGE_EXAMPLES", "50"))
KEYS = ("k0", "k1", "k2")


def _policy(tmp: Path) -> Policy:
    raw = yaml.safe_load((ROOT / "policies" / "minimal.yaml").read_text())
    raw["data_classes"]["reactions"] = {
        "kind": "global",
        "table": "reactions",
        "replicas": list(raw["regions"]),
        "conflicts": {"merge": "regions.merges:merge_counters"},
    }
    path = tmp / "merge-policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_policy(path)


POLICY = _policy(Path(os.environ.get("TMPDIR", "/tmp")))
REGIONS = list(POLICY.regions)

_op = st.one_of(
    st.tuples(st.just("inc"), st.sampled_from(REGIONS), st.sampled_from(KEYS)),
    st.tuples(st.just("inc"), st.sampled_from(REGIONS), st.sampled_from(KEYS)),
    st.tuples(st.just("inc"), st.sampled_from(REGIONS), st.sampled_from(KEYS)),
    st.tuples(st.just("pause"), st.sampled_from(REGIONS), st.sampled_from(REGIONS)),
    st.tuples(st.just("resume"), st.sampled_from(REGIONS), st.sampled_from(REGIONS)),
    st.tuples(st.just("down"), st.sampled_from(REGIONS), st.just("")),
    st.tuples(st.just("up"), st.sampled_from(REGIONS), st.just("")),
    st.tuples(st.just("wait"), st.sampled_from(("0.001", "0.01", "0.2")), st.just("")),
    st.tuples(st.just("step"), st.just(""), st.just("")),
)


def _increment(sim: Simulation, region: str, key: str, count: int) -> bool:
    """The writer in ``region`` sets its component of ``key`` to ``count + 1``.

    True when the write was acknowledged.
    """
    router = sim.routers[region]
    try:
        cur = router.get("reactions", {"pk": key}) or {}
    except RegionkitError:
        return False  # nothing readable: the writer does not increment
    counts = dict(cur.get("counts") or {})
    counts[f"like#{region}"] = Decimal(count + 1)
    try:
        router.put("reactions", {"pk": key, "counts": counts}, based_on=cur or None)
    except RegionkitError:
        return False  # not acknowledged (refused, or every replica down)
    return True


def _apply(
    sim: Simulation,
    op: tuple[str, str, str],
    own: dict[tuple[str, str], int],
    acked: dict[str, int],
) -> None:
    """Run one generated operation; count an acknowledged increment in ``own`` and ``acked``."""
    kind, a, b = op
    if kind == "inc":
        if _increment(sim, a, b, own[(a, b)]):
            own[(a, b)] += 1
            acked[b] += 1
    elif kind == "pause" and a != b:
        sim.faults.pause(a, b)
    elif kind == "resume":
        sim.faults.resume(a, b)
    elif kind == "down" and len(sim.clients.down) < len(REGIONS) - 1:
        sim.outage(a)
    elif kind == "up" and a in sim.clients.down:
        sim.restore(a)
    elif kind == "wait":
        sim.advance(float(a))
    elif kind == "step":
        sim.step()


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=st.lists(_op, min_size=5, max_size=40), seed=st.integers(0, 2**16))
def test_every_acknowledged_increment_survives_pauses_and_outages(
    ops: list[tuple[str, str, str]], seed: int
) -> None:
    with simulation(POLICY, seed=seed) as sim:
        for key in KEYS:
            sim.routers[REGIONS[0]].put("reactions", {"pk": key, "counts": {}})
        sim.settle()
        own = {(r, k): 0 for r in REGIONS for k in KEYS}
        acked = dict.fromkeys(KEYS, 0)
        for op in ops:
            _apply(sim, op, own, acked)
        for region in list(sim.clients.down):
            sim.restore(region)
        sim.faults.heal()
        sim.faults.resume()
        sim.settle()
        assert sim.converged("reactions", REGIONS)
        for region in REGIONS:
            items = sim.items(region, "reactions")
            for key in KEYS:
                assert total(items[key], "like") == acked[key], (region, key, acked, own)
        assert not sim.detector.errors
        assert not list(sim.engine.errors)


def test_the_policy_names_the_merge(tmp_path: Any) -> None:
    dc = _policy(tmp_path).data_classes["reactions"]
    assert dc.conflicts.merge == "regions.merges:merge_counters"  # type: ignore[union-attr]
