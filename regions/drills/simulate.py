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
from regions.local.sim import Simulation, simulation
from residency.errors import RegionkitError, RegionUnavailable, ResidencyViolation, StaleWrite
from residency.policy import GlobalDataClass, PinnedDataClass, Policy
from residency.records import ConflictRecord

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
    res = ScheduleResult(seed)
    glob = next(
        n
        for n, dc in policy.data_classes.items()
        if isinstance(dc, GlobalDataClass) and n != policy.system.directory
    )
    pinned = next(n for n, dc in policy.data_classes.items() if isinstance(dc, PinnedDataClass))

    with simulation(policy, seed=seed) as sim:
        run = _Schedule(policy, sim, random.Random(seed), res, glob, pinned)
        run.assign_users()
        for i in range(events):
            run.event(i)
        run.heal_all()
        digests = run.check_convergence()
        table = policy.data_classes[pinned].table
        run.check_residency(table)
        log = run.account(table)
        history: dict[str, Any] = {
            "events": res.events,
            "digests": digests,
            "conflicts": sorted((c.kind, c.winner_version, c.loser_version) for c in log),
        }
        res.digest = hashlib.sha256(json.dumps(history, sort_keys=True).encode()).hexdigest()
    return res


@dataclass
class _Schedule:
    """One schedule's run: its random choices, the simulation, and what it saw."""

    policy: Policy
    sim: Simulation
    rng: random.Random
    res: ScheduleResult
    glob: str  # the shared data class written to
    pinned: str  # the pinned data class written to
    regions: list[str] = field(init=False)
    users: dict[str, str] = field(default_factory=dict)  # region -> a user homed there
    acked: dict[str, str | None] = field(default_factory=dict)  # version -> base (None: create)
    down: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.regions = list(self.policy.regions)

    def assign_users(self) -> None:
        for r in self.regions:
            uid = mint_user_id(r, idempotency_key=f"sim-{self.res.seed}-{r}")
            country = self.policy.country_in(self.policy.jurisdiction_of_region(r))
            self.sim.routers[r].assign_home(uid, country=country)
            self.users[r] = uid
        self.sim.settle()

    def event(self, i: int) -> None:
        """Event ``i``: a write, a fault, a restore or heal, or a tick of time."""
        roll = self.rng.random()
        if roll < 0.55:
            self.write(i)
        elif roll < 0.75:
            self.fault(i)
        elif roll < 0.85:
            self.restore_one(i)
        else:
            self.sim.step(self.rng.uniform(0.01, 0.4))
            self.res.events.append(f"{i} tick")

    def write(self, i: int) -> None:
        rng, res = self.rng, self.res
        writer = rng.choice(self.regions)
        router = self.sim.routers[writer]
        if rng.random() < 0.5:
            dc, key = self.glob, {"pk": f"k{rng.randrange(4)}"}
        else:
            dc, key = self.pinned, {"pk": self.users[rng.choice(self.regions)]}
        try:
            current = router.get(dc, key)
            body = {**key, "n": i, "by": writer}
            w = (
                router.put(dc, body, based_on=current)
                if current
                else router.put(dc, body, create_only=True)
            )
            self.acked[w.version] = str(current["rk_v"]) if current else None
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

    def fault(self, i: int) -> None:
        rng, sim, regions = self.rng, self.sim, self.regions
        kind = rng.choice(FAULTS)
        r = rng.choice(regions)
        if kind == "outage" and len(self.down) < len(regions) - 1:
            sim.outage(r)
            self.down.add(r)
        elif kind == "pause":
            sim.faults.pause(r, rng.choice([x for x in regions if x != r]))
        elif kind == "partition":
            sim.faults.partition([[r], [x for x in regions if x != r]])
        elif kind == "skew":
            sim.skew(r, rng.randint(-200, 200))
        elif kind == "lag":
            sim.faults.set_lag(r, None, rng.uniform(0, 0.5), jitter=rng.uniform(0, 0.3))
        self.res.events.append(f"{i} fault {kind} {r}")

    def restore_one(self, i: int) -> None:
        """Restore the first region that is down, or else heal every link."""
        if self.down:
            r = sorted(self.down)[0]
            self.sim.restore(r)
            self.down.discard(r)
            self.res.events.append(f"{i} restore {r}")
        else:
            self.sim.faults.heal()
            self.res.events.append(f"{i} heal links")

    def heal_all(self) -> None:
        sim = self.sim
        for r in sorted(self.down):
            sim.restore(r)
        sim.faults.heal()
        for r in self.regions:
            sim.skew(r, 0)
        sim.settle()

    def check_convergence(self) -> list[str]:
        """Convergence, item for item; the digest of every replica set."""
        digests: list[str] = []
        self.res.converged = True
        for table, group in replication_groups(self.policy):
            per = {r: table_digest(self.sim.items(r, table).values())[0] for r in group}
            if len(set(per.values())) > 1:
                self.res.converged = False
            digests.append(f"{table}:{sorted(per.items())}")
        return digests

    def check_residency(self, table: str) -> None:
        """Residency: every pinned item in its subject's jurisdiction."""
        policy, res = self.policy, self.res
        for r in self.regions:
            for item in self.sim.items(r, table).values():
                home = parse_user_id(str(item["pk"])).home_hint
                if policy.jurisdiction_of_region(home) != policy.jurisdiction_of_region(r):
                    res.residency_violations += 1
        res.residency_violations += res.refused

    def account(self, table: str) -> list[ConflictRecord]:
        """Every acknowledged write in the final state or the conflict log (or an
        ancestor of one); returns the conflict log."""
        regions, res = self.regions, self.res
        log = self.sim.detector.log.scan(regions[0])
        res.conflicts = len(log)
        finals = [
            str(i["rk_v"])
            for t in (table, self.policy.data_classes[self.glob].table)
            for r in regions
            for i in self.sim.items(r, t).values()
            if "rk_v" in i
        ]
        accounted: set[str] = set()
        for start in finals + [c.loser_version for c in log]:
            v: str | None = start
            while v is not None and v not in accounted:
                accounted.add(v)
                v = self.acked.get(v)
        res.unaccounted = sorted(set(self.acked) - accounted)
        res.acknowledged = len(self.acked)
        return log
