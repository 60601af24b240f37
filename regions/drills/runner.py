"""The drill runner: plan, steady state, load, inject, workload, heal, recovery, converge.

One :class:`DrillRunner` drives any :class:`~regions.drills.backends.DrillBackend`.
Every phase is time-stamped in the :class:`~regions.drills.journal.DrillJournal`.
Writers run in every region, on every pinned and global data class (the
directory excepted), through the same :class:`~regions.router.RegionRouter` a
service uses, **continuously from the steady state, through the fault, to after
the heal**: the fault hits a region in the middle of its traffic, as a real
outage does. The figures are what a service would have seen:

* **RTO**, per data class and writer region: from the fault until routed writes
  succeed again, by failover or at home. Pinned data in a one-region
  jurisdiction cannot fail over by law; it is reported, not counted as a miss.
* **RPO exposure**: writes acknowledged in the faulted region that had not
  reached every replica when the fault hit, with their ages; after the heal,
  each is classed as recovered (replicated late) or lost.
* **convergence**: from heal until every write made before the heal reached
  every replica; then, with the load stopped, every replica set is compared item
  for item by SHA-256 digests of the tables.
* **conflicts** from the conflict log, by kind and resolution;
* **residency violations**: refusals raised to writers plus pinned items found
  outside their subject's jurisdiction after the drill (must be 0);
* **client errors** by type, and a time series of all of it (see
  :mod:`regions.drills.series`).

A drill never leaves its fault behind: the heal runs in a ``finally`` that also
sees ``KeyboardInterrupt`` and ``SystemExit``, and a check after the heal asks
the backend which faults are still in place.
"""

from __future__ import annotations

import hashlib
import math
import signal
import threading
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from regions.drills.backends import DrillBackend, replication_groups, table_digest
from regions.drills.journal import (
    DataClassFigures,
    DrillEvent,
    DrillJournal,
    Phase,
    RegionFigures,
)
from regions.drills.scenarios import Params, Scenario
from regions.drills.series import build_series
from regions.hlc import Stamp
from regions.ids import mint_user_id, parse_user_id
from residency.__about__ import __version__
from residency.errors import (
    ConfigError,
    RegionkitError,
    RegionUnavailable,
    ResidencyViolation,
    StaleWrite,
)
from residency.logs import get_logger
from residency.policy import GlobalDataClass, PinnedDataClass, Policy

__all__ = ["Ack", "DrillOptions", "DrillRunner", "Outcome"]

log = get_logger("regionkit.drills")

EventHook = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class DrillOptions:
    duration: float = 5.0  # seconds of load while the fault is active
    rate: float = 10.0  # load: rounds per second per writer region (each: 1 write per class)
    recovery: float = 2.0  # seconds of load after heal
    baseline: float = 1.0  # seconds of load before the fault
    converge_timeout: float = 60.0
    hot_key_every: int = 5  # every Nth round also edits a shared item (conflicts)
    lag: float | None = None  # base replication lag on every link, s (rehearse a slow link)
    sample_every: float = 0.2  # seconds between replication samples
    seed: int | None = None

    def __post_init__(self) -> None:
        # NaN compares false with everything: a NaN duration made a drill that measured
        # nothing of the fault and passed. Every span is a finite number, or refused.
        spans = {
            "duration": self.duration,
            "recovery": self.recovery,
            "baseline": self.baseline,
            "converge_timeout": self.converge_timeout,
            "sample_every": self.sample_every,
        }
        for name, value in [*spans.items(), ("rate", self.rate)]:
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    message=f"drill option {name} is {value!r}: it must be a finite number of "
                    "seconds (rounds per second for rate), 0 or more"
                )
        for name in ("rate", "converge_timeout", "sample_every"):
            if getattr(self, name) == 0:
                raise ConfigError(message=f"drill option {name} must be more than 0")


@dataclass(frozen=True, slots=True)
class Outcome:
    t: float
    region: str
    data_class: str
    op: str
    ok: bool
    failover: bool
    error: str | None
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledged write, kept to class RPO exposure as recovered or lost."""

    t: float
    landed: str
    table: str
    key: tuple[str, str]
    version: str


def _ignore_signals() -> Callable[[], None]:
    """Hold off SIGINT and SIGTERM (main thread only); return what restores them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):
            continue

    def restore() -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    return restore


def policy_sha256(policy: Policy, path: str | Path | None) -> str:
    if path is not None and Path(path).is_file():
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


def _newer_or_same(have: Any, mine: str) -> bool:
    if not isinstance(have, str):
        return False
    try:
        return Stamp.parse(have) >= Stamp.parse(mine)
    except RegionkitError:
        return have >= mine


class _Load:
    """Writers in every region, from :meth:`start` to :meth:`stop`.

    Threaded backends run one writer thread per region on wall-clock time; the
    simulation interleaves the regions' rounds on virtual time in :meth:`run_for`.
    """

    def __init__(self, runner: DrillRunner) -> None:
        self.r = runner
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.n: dict[str, int] = defaultdict(int)
        self.running = False

    def start(self) -> None:
        self.running = True
        self.r._event("load-started", detail=f"{self.r.opt.rate:g} rounds/s per region")
        if not self.r.b.threaded:
            return
        interval = 1.0 / self.r.opt.rate

        def writer(region: str) -> None:
            try:
                while not self.stop_event.is_set():
                    t0 = self.r.b.now()
                    self.r._round(region, self.n[region])
                    self.n[region] += 1
                    self.stop_event.wait(max(0.0, interval - (self.r.b.now() - t0)))
            except BaseException as exc:  # never lose a worker's failure
                self.errors.append(exc)

        def sampler() -> None:  # its own thread: a slow sample never stretches a phase
            try:
                while not self.stop_event.is_set():
                    self.r._sample()
                    self.stop_event.wait(self.r.opt.sample_every)
            except BaseException as exc:
                self.errors.append(exc)

        self.threads = [
            threading.Thread(target=writer, args=(reg,), name=f"drill-{reg}", daemon=True)
            for reg in self.r.policy.regions
        ] + [threading.Thread(target=sampler, name="drill-sampler", daemon=True)]
        for t in self.threads:
            t.start()

    def run_for(self, seconds: float, name: str) -> None:
        b, opt = self.r.b, self.r.opt
        start = b.now()
        if b.threaded:
            while b.now() - start < seconds:
                if self.errors:
                    raise self.errors[0]
                self.r.on_event(
                    "progress", {"phase": name, "elapsed": b.now() - start, "of": seconds}
                )
                self.stop_event.wait(min(0.25, max(0.0, seconds - (b.now() - start))))
            return
        step = 1.0 / opt.rate / len(self.r.policy.regions)
        while b.now() - start < seconds:
            for region in self.r.policy.regions:  # writers spread over the interval
                self.r._round(region, self.n[region])
                self.n[region] += 1
                b.sleep(step)
            self.r._sample()

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10.0)
        self.r._event("load-stopped")


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
        self.acks: dict[str, deque[Ack]] = defaultdict(lambda: deque(maxlen=200_000))
        self.lags: list[tuple[float, str, float]] = []
        self._lock = threading.Lock()
        self.users: dict[str, str] = {}  # writer region -> a drill user homed there
        self.keys_written: dict[str, set[str]] = defaultdict(set)
        self.t_start = self.b.now()
        self.t_load: float | None = None
        self.t_fault: float = 0.0
        self.t_heal: float = 0.0
        self.t_drained: float | None = None
        self.fault_active = False
        self.completed = False
        self.exposed_ages: list[float] = []
        self.load = _Load(self)
        self.observes = bool(getattr(backend, "observes_replication", True))
        self._breakers: dict[tuple[str, str], bool] = {}
        self._applied: dict[str, int] = {}
        dcs = self.policy.data_classes
        self.global_classes = [
            n
            for n, dc in dcs.items()
            if isinstance(dc, GlobalDataClass) and n != self.policy.system.directory
        ]
        self.pinned_classes = [n for n, dc in dcs.items() if isinstance(dc, PinnedDataClass)]
        settings = getattr(backend, "settings", None)
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
            settings={
                k: getattr(settings, k)
                for k in (
                    "connect_timeout",
                    "read_timeout",
                    "max_attempts",
                    "failover_attempts",
                    "breaker_failures",
                    "breaker_reset_seconds",
                )
                if settings is not None and hasattr(settings, k)
            },
        )
        for region in self.policy.regions:
            health = getattr(self.b.router(region), "health", None)
            if health is not None and hasattr(health, "subscribe"):
                health.subscribe(partial(self._on_health, region))

    # --- helpers ---

    def _dt(self) -> datetime:
        return datetime.fromtimestamp(self.b.now(), UTC)

    def _event(self, kind: str, region: str = "", detail: str = "") -> None:
        with self._lock:
            if len(self.journal.events) >= 500:  # bounded, whatever the drill's length
                return
            self.journal.events.append(
                DrillEvent(
                    t=round(self.b.now() - self.t_start, 3),
                    kind=kind,
                    region=region,
                    detail=detail,
                )
            )

    def _on_health(self, router_region: str, st: Any) -> None:
        is_open = str(getattr(st, "breaker", "closed")) != "closed"
        key = (router_region, st.region)
        if self._breakers.get(key, False) == is_open:
            return
        self._breakers[key] = is_open
        self._event(
            "breaker-open" if is_open else "breaker-closed",
            region=st.region,
            detail=f"seen by the router in {router_region}",
        )

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
        t1 = self.b.now()
        route = getattr(result, "route", None)
        failover = bool(getattr(route, "failover", False))
        self._add(
            Outcome(t1, region, data_class, op, True, failover, None, round((t1 - t) * 1000, 3))
        )
        version = getattr(result, "version", None)
        if route is not None and isinstance(version, str):
            pk = self.policy.data_classes[data_class].partition_key
            args = fn.args if isinstance(fn, partial) else ()
            key = next((a for a in args if isinstance(a, dict)), {})
            if pk in key:
                ack = Ack(t1, route.region, route.table_name, (pk, str(key[pk])), version)
                with self._lock:
                    self.acks[route.region].append(ack)
        return result

    def _add(self, o: Outcome) -> None:
        with self._lock:
            self.outcomes.append(o)

    def _sample(self) -> None:
        """Replication lag per link, and whether the pre-heal backlog has drained."""
        now = self.b.now()
        try:
            links = self.b.links()
        except Exception:  # a sample is not worth failing a drill for
            links = []
        backlog: dict[str, float] = {}
        need_backlog = self.observes and self.t_heal > 0 and self.t_drained is None
        # only sources with changes waiting: asking a region costs a stream poll
        for region in sorted({src for src, _, _, pending, _ in links if pending}):
            try:
                ages = self.b.unreplicated_ages(region, fresh=False)
                backlog[region] = max(ages, default=0.0)
            except Exception:
                backlog[region] = 0.0
        samples = []
        for src, dst, last_ms, pending, applied in links:
            link = f"{src}>{dst}"
            moved = applied != self._applied.get(link)
            self._applied[link] = applied
            if pending:  # a blocked link applies nothing: its lag is its oldest change's age
                ms = max(last_ms or 0.0, backlog.get(src, 0.0) * 1000)
            elif moved and last_ms is not None:
                ms = last_ms
            else:  # idle: no data point, like CloudWatch's ReplicationLatency
                continue
            samples.append((now, link, ms))
        with self._lock:
            self.lags.extend(samples)
        drained = max(backlog.values(), default=0.0) <= now - self.t_heal
        if need_backlog and not self.fault_active and drained:
            self.t_drained = now
            self._event("backlog-drained", detail="every write made before the heal replicated")

    # --- the phases ---

    def run(self) -> DrillJournal:
        """Run the drill; on any exception, and on Ctrl-C or SystemExit, heal first.

        ``KeyboardInterrupt`` and ``SystemExit`` are re-raised after the heal, so
        the caller exits as asked; :attr:`journal` then says what was cleaned up.
        """
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
                j.figures.rto_not_applicable = "no fault was injected: no steady state"
                self.completed = True  # nothing was injected
                return j
            if self.opt.lag is not None:
                self.b.set_lag(self.opt.lag)
            self.t_load = self.b.now()
            self.load.start()
            ph = self._phase("baseline")
            self.load.run_for(self.opt.baseline, "baseline")
            self._end(ph)
            self._inject()
            self._run_load(self.opt.duration, "workload")
            self._heal()
            self._run_load(self.opt.recovery, "recovery")
            self.load.stop()
            self._converge()
            if self.scenario.name == "failback":
                self._failback()
            self._measure()
            self._verdict()
            self.completed = True
        except Exception as exc:
            j.verdict = "error"
            j.reasons.append(f"drill aborted: {type(exc).__name__}")
            log.error("drill aborted", drill_id=self.drill_id, error=type(exc).__name__)
        except BaseException as exc:  # Ctrl-C, SystemExit: heal in finally, then go
            j.verdict = "error"
            j.reasons.append(f"drill interrupted ({type(exc).__name__})")
            self._event("interrupted", detail=type(exc).__name__)
            raise
        finally:
            self._cleanup()
            self._finish()
        return j

    def _cleanup(self) -> None:
        """Stop the load and heal a fault still in place; Ctrl-C cannot cut this short."""
        restore = _ignore_signals()
        try:
            try:
                self.load.stop()
            except BaseException as exc:
                self.journal.cleanup.append(f"stopping the load failed: {type(exc).__name__}")
            if self.fault_active:
                abort = getattr(self.b, "abort", None)
                if callable(abort) and not self.completed:
                    abort()
                try:
                    self.scenario.heal(self.b, self.params)
                    self.fault_active = False
                    self.journal.cleanup.append(f"healed {self.scenario.name} after the abort")
                    self._event("cleanup", detail="fault healed after the abort")
                except BaseException as exc:
                    self.journal.reasons.append(
                        f"heal after abort failed ({type(exc).__name__}): the fault may still "
                        "be in place"
                    )
                    log.error("heal after abort failed", drill_id=self.drill_id)
            if self.opt.lag is not None and not self.completed:  # the lag it rehearsed with
                try:
                    self.b.set_lag(0.0)
                    self.journal.cleanup.append("removed the replication lag after the abort")
                except BaseException as exc:
                    self.journal.reasons.append(
                        f"removing the replication lag failed ({type(exc).__name__})"
                    )
            if not self.completed:  # aborted or interrupted: say what is left, if anything
                self._check_healed()
        finally:
            restore()

    def _check_healed(self) -> bool:
        try:
            left = self.b.faults_left()
        except Exception as exc:
            left = [f"the check itself failed ({type(exc).__name__})"]
        take = getattr(self.b, "take_notes", None)
        for note in take() if callable(take) else []:
            self.journal.cleanup.append(note)
            if note.startswith("REMOVED"):  # a repaired leftover is said loudly
                self.journal.reasons.append(note)
        if left:
            msg = "FAULT STILL IN PLACE after heal: " + "; ".join(left)
            self.journal.reasons.append(msg)
            self.journal.cleanup.append(msg)
            log.error("fault left behind", drill_id=self.drill_id, faults=len(left))
            return False
        ok = "checked after heal: no fault left in place"
        if ok not in self.journal.cleanup:
            self.journal.cleanup.append(ok)
        return True

    def _run_load(self, seconds: float, name: str) -> None:
        ph = self._phase(name)
        before = len(self.outcomes)
        self.load.run_for(seconds, name)
        done = self.outcomes[before:]
        self._end(ph, operations=len(done), failed=sum(not o.ok for o in done))

    def _finish(self) -> DrillJournal:
        end = self.b.now()
        if self.t_load is not None:
            with self._lock:
                outcomes, lags = list(self.outcomes), list(self.lags)
            self.journal.series = build_series(
                outcomes, lags, start=self.t_load, end=end, drill_start=self.t_start
            )
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
        per_round = len(self.global_classes) + len(self.pinned_classes)
        # the faulted region's own writes are what exposure counts
        self.journal.figures.writes_in_flight_expected = round(
            self.opt.rate * per_round * max(elapsed, self.opt.lag or 0.0), 2
        )
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
        table = self.b.router(region).config.table_name(self.policy.data_classes[dc].table)
        return all(
            self.b.get(region, table, {pk: f"{canary}-{r}"}) is not None
            for r in self.policy.regions
        )

    def _inject(self) -> None:
        """Inject the fault under load; RPO exposure is what the regions held unreplicated."""
        ph = self._phase("inject")
        ages: list[float] = []
        if self.observes:
            for region in self.journal.regions:
                ages.extend(self.b.unreplicated_ages(region))
        else:  # no view of the replication queue (AWS): probe the replicas for our writes
            now = self.b.now()
            ages = [now - a.t for a in self._unreplicated(self._recent_acks(now))]
        self.t_fault = self.b.now()
        self.fault_active = True  # before inject: a half-injected fault is healed too
        self.scenario.inject(self.b, self.params)
        self._event("fault-injected", ",".join(self.journal.regions), self.scenario.name)
        self.exposed_ages = ages
        f = self.journal.figures
        f.rpo_exposure_count = len(ages)
        f.rpo_exposure_max_age_seconds = round(max(ages, default=0.0), 4)
        self._end(
            ph,
            fault=self.scenario.name,
            parameters=self.params.model_dump(),
            rpo_exposure_count=len(ages),
            writes_before_fault=sum(1 for o in self.outcomes if o.op != "read"),
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
        self.fault_active = False
        self.t_heal = self.b.now()
        self._event("fault-healed", ",".join(self.journal.regions))
        if self.opt.lag is not None:  # the rehearsed lag is not the fault: check without it
            self.b.set_lag(0.0)
        healed = self._check_healed()
        if self.opt.lag is not None:  # then put the base lag back (healing links clears it)
            self.b.set_lag(self.opt.lag)
        self._end(ph, ok=healed, faults_left=not healed)

    def _recent_acks(self, now: float, window: float | None = None) -> list[Ack]:
        """Acknowledged writes landed in the fault regions in the last ``window`` seconds."""
        w = (
            window
            if window is not None
            else min(30.0, max(5.0, 2 * self.journal.targets.get("rpo_seconds", 5.0)))
        )
        with self._lock:
            acks = [
                a
                for r in self.journal.regions
                for a in self.acks.get(r, ())
                if now - w <= a.t <= now
            ]
        return acks[-500:]

    def _unreplicated(self, acks: list[Ack]) -> list[Ack]:
        """The writes among ``acks`` that some replica of their table does not hold yet."""
        prefix = self.b.router(self.policy.regions[0]).config.table_prefix
        groups = replication_groups(self.policy, prefix)
        out = []
        for a in acks:
            peers = {r for table, rs in groups if table == a.table and a.landed in rs for r in rs}
            for peer in sorted(peers - {a.landed}):
                try:
                    item = self.b.get(peer, a.table, {a.key[0]: a.key[1]})
                except Exception:
                    item = None
                if item is None or not _newer_or_same(item.get("rk_v"), a.version):
                    out.append(a)
                    break
        return out

    def _probe_converge(self, ph: Phase) -> None:
        """Convergence where the replication queue cannot be seen: our writes, everywhere."""
        f = self.journal.figures
        with self._lock:
            acks = [
                a
                for r in self.journal.regions
                for a in self.acks.get(r, ())
                if a.t >= self.t_fault - 30
            ]
        acks = acks[-1000:]
        deadline = self.b.now() + self.opt.converge_timeout
        pending = self._unreplicated(acks)
        while pending and self.b.now() < deadline:
            self.b.sleep(0.2)
            pending = self._unreplicated(pending)
        t_done = self.b.now()
        f.converged = not pending
        f.tables_compared = 0
        f.convergence_seconds = round(t_done - self.t_heal, 3) if f.converged else None
        if f.converged:
            self._event("converged", detail=f"{len(acks)} drill writes on every replica")
        self._classify_exposure()
        self._end(ph, ok=f.converged, probed_writes=len(acks), missing=len(pending))

    def _converge(self) -> None:
        ph = self._phase("convergence")
        if not self.observes:
            self._probe_converge(ph)
            return
        t0 = self.b.now()
        # The rehearsed lag stays on until convergence is measured: a slow link's
        # convergence includes its lag (it was cleared first, which flattered the figure).
        deadline = t0 + self.opt.converge_timeout + (self.opt.lag or 0.0)
        quiet = False
        t_quiet = self.b.now()
        while not quiet and self.b.now() < deadline:  # sampled, so the charts see it drain
            # in slices, but every slice counts polls from t0 (a round of polls may
            # outlast one slice on a loaded machine)
            quiet = self.b.wait_converged(min(1.0, max(0.0, deadline - self.b.now())), since=t0)
            t_quiet = self.b.now()
            self._sample()
        if self.t_drained is None and quiet:
            self.t_drained = t_quiet
            self._event("backlog-drained", detail="after the load stopped")
        digests: dict[str, dict[str, str]] = {}
        equal = True
        prefix = self.b.router(self.policy.regions[0]).config.table_prefix
        groups = replication_groups(self.policy, prefix)
        for table, regions in groups:
            per = {r: table_digest(self.b.scan(r, table)) for r in regions}
            digests[f"{table}@{','.join(regions)}"] = {r: d[0][:16] for r, d in per.items()}
            if len({d for d, _ in per.values()}) > 1:
                equal = False
        if self.opt.lag is not None:
            self.b.set_lag(0.0)
        f = self.journal.figures
        f.converged = quiet and equal
        f.tables_compared = len(groups)
        busy = getattr(self.b, "replication_busy", None)
        why_busy = busy(since=t0) if callable(busy) and not quiet else {}
        drained = self.t_drained if self.t_drained is not None else t_quiet
        f.convergence_seconds = round(drained - self.t_heal, 3) if f.converged else None
        if f.converged:
            self._event("converged", detail=f"{len(groups)} replica sets identical")
        self._classify_exposure()
        self._end(
            ph,
            ok=f.converged,
            quiescent=quiet,
            **({"busy": why_busy} if why_busy else {}),
            identical=equal,
            waited_s=round(t_quiet - t0, 3),
            digests=digests,
        )

    def _classify_exposure(self) -> None:
        """Each exposed write, after heal: on every replica (recovered) or not (lost)."""
        f = self.journal.figures
        if not f.rpo_exposure_count:
            return
        oldest = self.t_fault - f.rpo_exposure_max_age_seconds - 0.05
        prefix = self.b.router(self.policy.regions[0]).config.table_prefix
        groups = replication_groups(self.policy, prefix)
        lost = 0
        with self._lock:
            candidates = [
                a
                for region in self.journal.regions
                for a in self.acks.get(region, ())
                if oldest <= a.t <= self.t_fault
            ]
        for a in candidates:
            peers = {r for table, rs in groups if table == a.table and a.landed in rs for r in rs}
            for peer in sorted(peers - {a.landed}):
                item = self.b.get(peer, a.table, {a.key[0]: a.key[1]})
                if item is None or not _newer_or_same(item.get("rk_v"), a.version):
                    lost += 1
                    break
        f.rpo_lost = lost
        f.rpo_recovered = max(0, f.rpo_exposure_count - lost)

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
        if f.rto_seconds is None:
            lawful = sorted({j for d in f.data_classes for j in d.no_compliant_failover})
            if lawful:
                f.rto_not_applicable = (
                    "only writes with no compliant failover failed; they waited for their "
                    f"region by law ({', '.join(lawful)})"
                )
            elif not any(d.writes_failed or d.failover_writes for d in f.data_classes):
                f.rto_not_applicable = f"{self.scenario.name} does not stop writes"
            else:
                f.rto_not_applicable = "writes did not recover before the drill ended"
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
        """Pinned items of the drill's users found outside their subject's jurisdiction.

        Read by key in every region (never a scan), so it costs the same on a real
        account as on the local cluster.
        """
        count = 0
        policy = self.policy
        prefix = self.b.router(policy.regions[0]).config.table_prefix
        for dc_name in self.pinned_classes:
            dc = policy.data_classes[dc_name]
            for uid in self.users.values():
                subject_j = policy.jurisdiction_of_region(parse_user_id(uid).home_hint)
                for region in policy.regions:
                    if policy.jurisdiction_of_region(region) == subject_j:
                        continue
                    try:
                        item = self.b.get(region, prefix + dc.table, {dc.partition_key: uid})
                    except Exception:  # no such table in that region: nothing placed there
                        continue
                    count += item is not None
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
