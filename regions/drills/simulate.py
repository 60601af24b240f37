"""Seeded random fault schedules on the deterministic simulation.

Each schedule interleaves writes (pinned profiles and shared content, from
writers in every region, read-modify-write or create) with faults (region
outages, replication pauses, partitions, clock skew, link lag) and heals, then
heals everything and checks what a drill must prove:

* **0 residency violations**: no pinned item outside its subject's jurisdiction,
  and no write the guard had to refuse;
* **100 % convergence**: every replica set identical, item for item (SHA-256);
* **every acknowledged write accounted for**: in the final state (or an ancestor
  of it), a logged conflict loser (or an ancestor of one), or RPO exposure:
  acknowledged in a region that was down when the schedule ended (none here:
  every schedule heals, and an outage keeps the region's data).

The whole history is hashed: the same seed gives the same digest.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from regions.drills.backends import replication_groups, table_digest
from regions.ids import mint_user_id, parse_user_id
from regions.local.sim import simulation
from residency.errors import RegionkitError, RegionUnavailable, ResidencyViolation, StaleWrite
from residency.policy import GlobalDataClass, PinnedDataClass, Policy

__all__ = ["ScheduleResult", "run_schedule"]

FAULTS = ("outage", "pause", "partition", "skew", "lag")


@dataclass
class ScheduleResult:
    seed: int
    events: list[str] = field(default_factory=list)
    acknowledged: int = 0
    refused: int = 0
    unavailable: int = 0
    stale: int = 0
    conflicts: int = 0
    residency_violations: int = 0
    converged: bool = False
    unaccounted: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def ok(self) -> bool:
        return self.converged and not self.residency_violations and not self.unaccounted


def run_schedule(policy: Policy, seed: int, *, events: int = 24) -> ScheduleResult:
    """Run one random schedule; see the module docstring for what it checks."""
    rng = random.Random(seed)
    res = ScheduleResult(seed)
    regions = list(policy.regions)
    glob = next(
        n
        for n, dc in policy.data_classes.items()
        if isinstance(dc, GlobalDataClass) and n != policy.system.directory
    )
    pinned = next(n for n, dc in policy.data_classes.items() if isinstance(dc, PinnedDataClass))
    # version -> base version (None for a create)
    acked: dict[str, str | None] = {}

    with simulation(policy, seed=seed) as sim:
        users = {}
        for r in regions:
            uid = mint_user_id(r, idempotency_key=f"sim-{seed}-{r}")
            country = policy.country_in(policy.jurisdiction_of_region(r))
            sim.routers[r].assign_home(uid, country=country)
            users[r] = uid
        sim.settle()
        down: set[str] = set()
        for i in range(events):
            roll = rng.random()
            if roll < 0.55:
                writer = rng.choice(regions)
                router = sim.routers[writer]
                if rng.random() < 0.5:
                    dc, key = glob, {"pk": f"k{rng.randrange(4)}"}
                else:
                    dc, key = pinned, {"pk": users[rng.choice(regions)]}
                try:
                    current = router.get(dc, key)
                    body = {**key, "n": i, "by": writer}
                    w = (
                        router.put(dc, body, based_on=current)
                        if current
                        else router.put(dc, body, create_only=True)
                    )
                    acked[w.version] = str(current["rk_v"]) if current else None
                    res.events.append(
                        f"{i} write {dc} {key['pk'][:12]} @{writer} -> {w.route.region} {w.version}"
                    )
                except ResidencyViolation:
                    res.refused += 1
                    res.events.append(f"{i} write {dc} @{writer} refused")
                except RegionUnavailable:
                    res.unavailable += 1
                    res.events.append(f"{i} write {dc} @{writer} unavailable")
                except StaleWrite:
                    res.stale += 1
                    res.events.append(f"{i} write {dc} @{writer} stale")
                except RegionkitError as exc:
                    res.events.append(f"{i} write {dc} @{writer} {type(exc).__name__}")
            elif roll < 0.75:
                kind = rng.choice(FAULTS)
                r = rng.choice(regions)
                if kind == "outage" and len(down) < len(regions) - 1:
                    sim.outage(r)
                    down.add(r)
                elif kind == "pause":
                    sim.faults.pause(r, rng.choice([x for x in regions if x != r]))
                elif kind == "partition":
                    sim.faults.partition([[r], [x for x in regions if x != r]])
                elif kind == "skew":
                    sim.skew(r, rng.randint(-200, 200))
                elif kind == "lag":
                    sim.faults.set_lag(r, None, rng.uniform(0, 0.5), jitter=rng.uniform(0, 0.3))
                res.events.append(f"{i} fault {kind} {r}")
            elif roll < 0.85:
                if down:
                    r = sorted(down)[0]
                    sim.restore(r)
                    down.discard(r)
                    res.events.append(f"{i} restore {r}")
                else:
                    sim.faults.heal()
                    res.events.append(f"{i} heal links")
            else:
                sim.step(rng.uniform(0.01, 0.4))
                res.events.append(f"{i} tick")
        for r in sorted(down):
            sim.restore(r)
        sim.faults.heal()
        for r in regions:
            sim.skew(r, 0)
        sim.settle()

        # convergence, item for item
        digests: list[str] = []
        res.converged = True
        for table, group in replication_groups(policy):
            per = {r: table_digest(sim.items(r, table).values())[0] for r in group}
            if len(set(per.values())) > 1:
                res.converged = False
            digests.append(f"{table}:{sorted(per.items())}")
        # residency: every pinned item in its subject's jurisdiction
        table = policy.data_classes[pinned].table
        for r in regions:
            for item in sim.items(r, table).values():
                home = parse_user_id(str(item["pk"])).home_hint
                if policy.jurisdiction_of_region(home) != policy.jurisdiction_of_region(r):
                    res.residency_violations += 1
        res.residency_violations += res.refused
        # accounting
        log = sim.detector.log.scan(regions[0])
        res.conflicts = len(log)
        finals = [
            str(i["rk_v"])
            for t in (table, policy.data_classes[glob].table)
            for r in regions
            for i in sim.items(r, t).values()
            if "rk_v" in i
        ]
        accounted: set[str] = set()
        for start in finals + [c.loser_version for c in log]:
            v: str | None = start
            while v is not None and v not in accounted:
                accounted.add(v)
                v = acked.get(v)
        res.unaccounted = sorted(set(acked) - accounted)
        res.acknowledged = len(acked)
        history: dict[str, Any] = {
            "events": res.events,
            "digests": digests,
            "conflicts": sorted((c.kind, c.winner_version, c.loser_version) for c in log),
        }
        res.digest = hashlib.sha256(json.dumps(history, sort_keys=True).encode()).hexdigest()
    return res
