"""The drill runner: plan, steady state, inject, workload, measure, heal, converge, verdict.

One :class:`DrillRunner` drives any :class:`~regions.drills.backends.DrillBackend`.
Every phase is time-stamped in the :class:`~regions.drills.journal.DrillJournal`.
Writers run in every region, on every pinned and global data class (the
directory excepted), through the same :class:`~regions.router.RegionRouter` a
service uses, so the figures are what a service would have seen:

* **RTO**, per data class and writer region: from the fault until routed writes
  succeed again, by failover or at home. Pinned data in a one-region
  jurisdiction cannot fail over by law; it is reported, not counted as a miss.
* **RPO exposure**: writes acknowledged in the faulted region that had not
  reached every replica when the fault hit, with their ages.
* **convergence**: from heal until every replica set is identical, item for
  item, compared by SHA-256 digests of the tables.
* **conflicts** from the conflict log, by kind and resolution;
* **residency violations**: refusals raised to writers plus pinned items found
  outside their subject's jurisdiction after the drill (must be 0);
* **client errors** by type.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from regions.drills.backends import DrillBackend, replication_groups, table_digest
from regions.drills.journal import (
    DataClassFigures,
    DrillJournal,
    Phase,
    RegionFigures,
)
from regions.drills.scenarios import Params, Scenario
from regions.ids import mint_user_id, parse_user_id
from residency.__about__ import __version__
from residency.errors import (
    RegionkitError,
    RegionUnavailable,
    ResidencyViolation,
    StaleWrite,
)
from residency.logs import get_logger
from residency.policy import GlobalDataClass, PinnedDataClass, Policy

__all__ = ["DrillOptions", "DrillRunner", "Outcome"]

log = get_logger("regionkit.drills")

EventHook = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class DrillOptions:
    duration: float = 5.0  # seconds of workload while the fault is active
    rate: float = 10.0  # workload rounds per second per writer region
    recovery: float = 2.0  # seconds of workload after heal
    converge_timeout: float = 60.0
    hot_key_every: int = 5  # every Nth round also edits a shared item (conflicts)
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    t: float
    region: str
    data_class: str
    op: str
    ok: bool
    failover: bool
    error: str | None


def policy_sha256(policy: Policy, path: str | Path | None) -> str:
    if path is not None and Path(path).is_file():
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


class DrillRunner:
    def __init__(
        self,
        backend: DrillBackend,
        scenario: Scenario,
        params: Params,
        *,
        options: DrillOptions | None = None,
        policy_path: str | Path | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.b = backend
        self.policy = backend.policy
        self.scenario = scenario
        self.params = params
        self.opt = options or DrillOptions()
        self.on_event = on_event or (lambda name, detail: None)
        self.drill_id = (
            uuid.UUID(int=self.opt.seed, version=4).hex[:12]
            if self.opt.seed is not None
            else uuid.uuid4().hex[:12]
        )
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self.users: dict[str, str] = {}  # writer region -> a drill user homed there
        self.keys_written: dict[str, set[str]] = defaultdict(set)
        self.t_fault: float = 0.0
        self.t_heal: float = 0.0
        dcs = self.policy.data_classes
        self.global_classes = [
            n
            for n, dc in dcs.items()
            if isinstance(dc, GlobalDataClass) and n != self.policy.system.directory
        ]
        self.pinned_classes = [n for n, dc in dcs.items() if isinstance(dc, PinnedDataClass)]
        self.journal = DrillJournal(
            drill_id=self.drill_id,
            scenario=scenario.name,
            description=scenario.description,
            parameters=params.model_dump(),
            target=backend.name,
            policy=self.policy.name,
            policy_sha256=policy_sha256(self.policy, policy_path),
            regions=self._fault_regions(),
            seed=self.opt.seed,
            started_at=self._dt(),
            tool_version=__version__,
            targets={
                "rto_seconds": self.policy.targets.drills.rto_seconds,
                "rpo_seconds": self.policy.targets.drills.rpo_seconds,
                "convergence_seconds": self.policy.targets.drills.convergence_seconds,
                "residency_violations": 0,
            },
        )

    # --- helpers ---

    def _dt(self) -> datetime:
        return datetime.fromtimestamp(self.b.now(), UTC)

    def _fault_regions(self) -> list[str]:
        groups = getattr(self.params, "groups", None)
        if self.scenario.name == "partition" and groups:
            return sorted({r for g in groups for r in g})
        return [self.params.region]

    def _phase(self, name: str) -> Phase:
        phase = Phase(name=name, started_at=self._dt())
        self.journal.phases.append(phase)
        self.on_event("phase", {"name": name})
        return phase

    def _end(self, phase: Phase, ok: bool = True, **detail: Any) -> None:
        phase.ended_at = self._dt()
        phase.ok = ok
        phase.detail.update(detail)

    def _record(self, region: str, data_class: str, op: str, fn: Callable[[], Any]) -> Any:
        t = self.b.now()
        try:
            result = fn()
        except (RegionUnavailable, ResidencyViolation, StaleWrite, RegionkitError) as exc:
            self._add(Outcome(t, region, data_class, op, False, False, type(exc).__name__))
            return None
        except Exception as exc:  # a backend failure the router did not map: count it, go on
            self._add(Outcome(t, region, data_class, op, False, False, type(exc).__name__))
            return None
        failover = bool(getattr(getattr(result, "route", None), "failover", False))
        self._add(Outcome(self.b.now(), region, data_class, op, True, failover, None))
        return result

    def _add(self, o: Outcome) -> None:
        with self._lock:
            self.outcomes.append(o)

    # --- the phases ---

    def run(self) -> DrillJournal:
        j = self.journal
        try:
            self._plan()
            if not self._steady_state():
                j.verdict, j.reasons = (
                    "fail",
                    [
                        "steady state not reached: canary writes did "
                        "not replicate within the convergence target"
                    ],
                )
                return self._finish()
            self._inject()
            self._workload(self.opt.duration, "workload")
            self._heal()
            self._converge()
            if self.scenario.name == "failback":
                self._failback()
            self._measure()
            self._verdict()
        except Exception as exc:
            j.verdict = "error"
            j.reasons.append(f"drill aborted: {type(exc).__name__}: {exc}")
            log.error("drill aborted", drill_id=self.drill_id, error=type(exc).__name__)
            # always heal: a drill must never leave a fault behind
            try:
                self.scenario.heal(self.b, self.params)
            except Exception as heal_exc:
                j.reasons.append(f"heal after abort failed: {type(heal_exc).__name__}")
        return self._finish()

    def _finish(self) -> DrillJournal:
        self.journal.ended_at = self._dt()
        self.on_event("done", {"verdict": self.journal.verdict})
        return self.journal

    def _plan(self) -> None:
        ph = self._phase("plan")
        self._end(
            ph,
            scenario=self.scenario.name,
            fault_regions=self.journal.regions,
            writer_regions=list(self.policy.regions),
            data_classes=self.global_classes + self.pinned_classes,
            duration_s=self.opt.duration,
            rate_per_s=self.opt.rate,
        )

    def _steady_state(self) -> bool:
        ph = self._phase("steady-state")
        policy = self.policy
        for region in policy.regions:
            uid = mint_user_id(region, idempotency_key=f"{self.drill_id}-{region}")
            jid = policy.jurisdiction_of_region(region)
            self.b.router(region).assign_home(uid, country=policy.country_in(jid))
            self.users[region] = uid
        t0 = self.b.now()
        canary = f"drill-{self.drill_id}-canary"
        for region in policy.regions:
            for dc in self.global_classes:
                self.b.router(region).put(
                    dc,
                    {policy.data_classes[dc].partition_key: f"{canary}-{region}", "canary": True},
                )
        target = policy.targets.drills.convergence_seconds
        deadline = t0 + target
        missing: list[str] = []
        while True:
            missing = [
                f"{dc}@{r}"
                for dc in self.global_classes
                for r in policy.data_classes[dc].replicas  # type: ignore[union-attr]
                if not self._has_canaries(r, dc, canary)
            ]
            if not missing or self.b.now() >= deadline:
                break
            self.b.sleep(0.05)
        elapsed = self.b.now() - t0
        self.journal.figures.steady_state_seconds = round(elapsed, 3)
        self._end(
            ph,
            ok=not missing,
            canary_replication_s=round(elapsed, 3),
            users=len(self.users),
            missing=missing[:10],
        )
        return not missing

    def _has_canaries(self, region: str, dc: str, canary: str) -> bool:
        pk = self.policy.data_classes[dc].partition_key
        table = self.b.router(region).settings.table_name(self.policy.data_classes[dc].table)
        return all(
            self.b.get(region, table, {pk: f"{canary}-{r}"}) is not None
            for r in self.policy.regions
        )

    def _inject(self) -> None:
        ph = self._phase("inject")
        ages: list[float] = []
        for region in self.journal.regions:
            ages.extend(self.b.unreplicated_ages(region))
        self.t_fault = self.b.now()
        self.scenario.inject(self.b, self.params)
        f = self.journal.figures
        f.rpo_exposure_count = len(ages)
        f.rpo_exposure_max_age_seconds = round(max(ages, default=0.0), 4)
        self._end(
            ph,
            fault=self.scenario.name,
            parameters=self.params.model_dump(),
            rpo_exposure_count=len(ages),
        )

    def _round(self, region: str, n: int) -> None:
        router = self.b.router(region)
        policy = self.policy
        hot = f"drill-{self.drill_id}-hot"
        for dc in self.global_classes:
            pk = policy.data_classes[dc].partition_key
            key = f"drill-{self.drill_id}-{region}-{n}"
            self.keys_written[dc].add(key)
            self._record(
                region, dc, "write", partial(router.put, dc, {pk: key, "n": n, "writer": region})
            )
            if self.opt.hot_key_every and n % self.opt.hot_key_every == 0:
                self.keys_written[dc].add(hot)
                self._record(
                    region,
                    dc,
                    "edit",
                    partial(self._edit, router, dc, {pk: hot, "n": n, "writer": region}),
                )
            self._record(region, dc, "read", partial(router.get, dc, {pk: key}))
        uid = self.users[region]
        for dc in self.pinned_classes:
            pk = policy.data_classes[dc].partition_key
            self._record(region, dc, "write", partial(router.put, dc, {pk: uid, "drill_n": n}))

    @staticmethod
    def _edit(router: Any, dc: str, body: dict[str, Any]) -> Any:
        """Read-modify-write of a shared item: concurrent edits across regions conflict."""
        pk = router.policy.data_classes[dc].partition_key
        current = router.get(dc, {pk: body[pk]})
        return router.put(dc, body, based_on=current) if current else router.put(dc, body)

    def _workload(self, seconds: float, name: str) -> None:
        ph = self._phase(name)
        start = self.b.now()
        interval = 1.0 / self.opt.rate
        before = len(self.outcomes)
        if self.b.threaded:
            stop = threading.Event()
            errors: list[BaseException] = []

            def writer(region: str) -> None:
                n = 0
                try:
                    while not stop.is_set() and self.b.now() - start < seconds:
                        t0 = self.b.now()
                        self._round(region, n)
                        n += 1
                        stop.wait(max(0.0, interval - (self.b.now() - t0)))
                except BaseException as exc:  # never lose a worker's failure
                    errors.append(exc)

            threads = [
                threading.Thread(target=writer, args=(r,), name=f"drill-{r}")
                for r in self.policy.regions
            ]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                self.on_event(
                    "progress", {"phase": name, "elapsed": self.b.now() - start, "of": seconds}
                )
                for t in threads:
                    t.join(timeout=0.25)
            stop.set()
            if errors:
                raise errors[0]
        else:
            n = 0
            step = interval / len(self.policy.regions)
            while self.b.now() - start < seconds:
                for region in self.policy.regions:  # writers spread over the interval
                    self._round(region, 10_000 * (name == "recovery") + n)
                    self.b.sleep(step)
                n += 1
        done = self.outcomes[before:]
        self._end(ph, operations=len(done), failed=sum(not o.ok for o in done))

    def _failback(self) -> None:
        """After recovery, time until writes for data homed in the region land at home again."""
        ph = self._phase("failback")
        region = self.params.region
        t0 = self.b.now()
        uid = self.users[region]
        home_again: float | None = None
        deadline = t0 + max(self.opt.recovery, 1.0)
        while self.b.now() < deadline and home_again is None:
            router = self.b.router(region)
            for dc in self.pinned_classes:
                pk = self.policy.data_classes[dc].partition_key
                w = self._record(region, dc, "write", partial(router.put, dc, {pk: uid}))
                if w is not None and w.route.region == region and not w.route.failover:
                    home_again = self.b.now() - self.t_heal
            if home_again is None:
                self.b.sleep(0.05)
        self.journal.figures.failback_seconds = (
            round(home_again, 3) if home_again is not None else None
        )
        self._end(ph, ok=home_again is not None, failback_s=self.journal.figures.failback_seconds)

    def _heal(self) -> None:
        ph = self._phase("heal")
        self.scenario.heal(self.b, self.params)
        self.t_heal = self.b.now()
        self._end(ph)

    def _converge(self) -> None:
        ph = self._phase("convergence")
        t0 = self.b.now()
        quiet = self.b.wait_converged(self.opt.converge_timeout)
        t_quiet = self.b.now()
        digests: dict[str, dict[str, str]] = {}
        equal = True
        prefix = self.b.router(self.policy.regions[0]).settings.table_prefix
        groups = replication_groups(self.policy, prefix)
        for table, regions in groups:
            per = {r: table_digest(self.b.scan(r, table)) for r in regions}
            digests[f"{table}@{','.join(regions)}"] = {r: d[0][:16] for r, d in per.items()}
            if len({d for d, _ in per.values()}) > 1:
                equal = False
        f = self.journal.figures
        f.converged = quiet and equal
        f.tables_compared = len(groups)
        f.convergence_seconds = round(t_quiet - self.t_heal, 3) if f.converged else None
        self._end(
            ph,
            ok=f.converged,
            quiescent=quiet,
            identical=equal,
            waited_s=round(t_quiet - t0, 3),
            digests=digests,
        )

    def _measure(self) -> None:
        ph = self._phase("measure")
        f = self.journal.figures
        policy = self.policy
        writes = [o for o in self.outcomes if o.op in {"write", "edit"}]
        f.writes_acknowledged = sum(o.ok for o in writes)
        errors = Counter(o.error for o in self.outcomes if o.error)
        f.client_errors = dict(errors)
        violations = errors.get("ResidencyViolation", 0) + self._placement_violations()
        f.residency_violations = violations
        per_region: dict[str, RegionFigures] = {r: RegionFigures(region=r) for r in policy.regions}
        for o in self.outcomes:
            rf = per_region[o.region]
            if o.op == "read":
                rf.reads_ok += o.ok
                rf.reads_failed += not o.ok
            else:
                rf.writes_ok += o.ok
                rf.writes_failed += not o.ok
                rf.failover_writes += o.failover
            if o.error:
                rf.errors[o.error] = rf.errors.get(o.error, 0) + 1
        f.regions = list(per_region.values())
        for dc in self.global_classes + self.pinned_classes:
            f.data_classes.append(self._rto(dc))
        rtos = [d.rto_seconds for d in f.data_classes if d.rto_seconds is not None]
        f.rto_seconds = round(max(rtos), 3) if rtos else None
        mine = [
            c
            for c in self.b.conflicts()
            if c.key.startswith(f"drill-{self.drill_id}") or c.key in self.users.values()
        ]
        f.conflicts = dict(Counter(c.kind for c in mine))
        f.conflict_resolutions = dict(Counter(c.resolution for c in mine))
        self._end(ph, outcomes=len(self.outcomes))

    def _rto(self, dc: str) -> DataClassFigures:
        kind = self.policy.data_classes[dc].kind
        fig = DataClassFigures(data_class=dc, kind=kind)
        lawful_wait: set[str] = set()
        for region in self.policy.regions:
            seq = sorted(
                (
                    o
                    for o in self.outcomes
                    if o.data_class == dc and o.region == region and o.op in {"write", "edit"}
                ),
                key=lambda o: o.t,
            )
            fig.writes_ok += sum(o.ok for o in seq)
            fig.writes_failed += sum(not o.ok for o in seq)
            fig.failover_writes += sum(o.failover for o in seq)
            after = [o for o in seq if o.t >= self.t_fault and o.error != "StaleWrite"]
            # Affected: a write failed, or only succeeded by failing over.
            first_hit = next((i for i, o in enumerate(after) if not o.ok or o.failover), None)
            if first_hit is None:
                continue
            recovered = next((o for o in after[first_hit:] if o.ok), None)
            if recovered is None:
                jid = self.policy.jurisdiction_of_region(region)
                if kind == "pinned" and len(self.policy.jurisdictions[jid].regions) == 1:
                    lawful_wait.add(jid)
                    continue
                fig.recovered = False
                continue
            rto = recovered.t - self.t_fault
            if kind == "pinned":
                jid = self.policy.jurisdiction_of_region(region)
                if len(self.policy.jurisdictions[jid].regions) == 1 and recovered.t >= self.t_heal:
                    lawful_wait.add(jid)  # it waited for its only region: the law, not a miss
                    continue
            fig.rto_by_region[region] = round(rto, 3)
        fig.no_compliant_failover = sorted(lawful_wait)
        if fig.rto_by_region:
            fig.rto_seconds = max(fig.rto_by_region.values())
        return fig

    def _placement_violations(self) -> int:
        """Pinned items of the drill's users found outside their subject's jurisdiction."""
        count = 0
        policy = self.policy
        users = set(self.users.values())
        prefix = self.b.router(policy.regions[0]).settings.table_prefix
        for dc_name in self.pinned_classes:
            dc = policy.data_classes[dc_name]
            for region in policy.regions:
                region_j = policy.jurisdiction_of_region(region)
                for item in self.b.scan(region, prefix + dc.table):
                    uid = str(item.get(dc.partition_key, ""))
                    if uid not in users:
                        continue
                    subject_j = policy.jurisdiction_of_region(parse_user_id(uid).home_hint)
                    if subject_j != region_j:
                        count += 1
        return count

    def _verdict(self) -> None:
        ph = self._phase("verdict")
        f, t, j = self.journal.figures, self.policy.targets.drills, self.journal
        reasons: list[str] = []
        attempted = sum(r.writes_ok + r.writes_failed for r in f.regions)
        if attempted == 0:  # nothing measured proves nothing: never a pass (issue 16)
            reasons.append("the workload made no writes, so nothing was measured")
        for d in f.data_classes:
            if d.rto_seconds is not None and d.rto_seconds > t.rto_seconds:
                reasons.append(
                    f"RTO of {d.data_class} is {d.rto_seconds:.2f} s, target {t.rto_seconds:g} s"
                )
            if not d.recovered:
                reasons.append(f"writes of {d.data_class} did not recover before heal")
        if f.rpo_exposure_max_age_seconds > t.rpo_seconds:
            reasons.append(
                f"RPO exposure: {f.rpo_exposure_count} writes up to "
                f"{f.rpo_exposure_max_age_seconds:.2f} s old, target {t.rpo_seconds:g} s"
            )
        if not f.converged:
            reasons.append("replicas did not converge after heal")
        elif f.convergence_seconds is not None and f.convergence_seconds > t.convergence_seconds:
            reasons.append(
                f"convergence took {f.convergence_seconds:.2f} s, target "
                f"{t.convergence_seconds:g} s"
            )
        if f.residency_violations:
            reasons.append(f"{f.residency_violations} residency violations (must be 0)")
        j.verdict = "fail" if reasons else "pass"
        j.reasons = reasons
        self._end(ph, verdict=j.verdict)
