"""Region health: manual marks, drills, a per-region circuit breaker, optional probes.

The router asks one question on its hot path, "may I send to region R now?",
answered from a frozenset that is swapped whole on every change, so the common
case costs one set lookup and no lock.

A region is unavailable when it is marked ``down`` or ``drained`` (by an
operator, a drill or a probe) or when its circuit breaker is open. The breaker
opens after ``failures`` consecutive failures or timeouts; after
``reset_seconds`` it lets one caller through (half-open): an answer closes it, a
failure opens it again.

The half-open probe cannot leak (issue 15, item 4):

* the probe slot is a **lease**, not a flag: it lapses ``probe_lease_seconds``
  after it was taken (set it above one call's worst case, connect plus read
  timeout), so a caller that decided a route and never called, or a thread that
  died mid-call, blocks the region for at most one lease;
* **any answer** from the region is proof of life: the transport records a
  success for a failed condition or a validation error as well as for a 200;
* a decision made only to *look* (``router.route()``, the ``route`` command)
  runs inside :meth:`RegionHealth.peeking` and never takes the lease: it reports
  a half-open region as the route the next call would probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from residency.logs import get_logger

__all__ = ["BreakerState", "HealthState", "RegionHealth", "RegionStatus"]

log = get_logger("regionkit.health")


class HealthState(StrEnum):
    UP = "up"
    DOWN = "down"
    DRAINED = "drained"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class RegionStatus:
    region: str
    state: HealthState
    reason: str
    breaker: BreakerState
    consecutive_failures: int
    available: bool


@dataclass
class _Breaker:
    failures: int = 0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    lease_until: float | None = None  # the half-open probe's lease, while one is out


Listener = Callable[[RegionStatus], None]


class RegionHealth:
    def __init__(
        self,
        regions: Iterable[str],
        *,
        failures: int = 3,
        reset_seconds: float = 2.0,
        probe_lease_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.regions = list(regions)
        self.failure_threshold = failures
        self.reset_seconds = reset_seconds
        self.probe_lease_seconds = probe_lease_seconds
        self.clock = clock
        self._peek = threading.local()
        self._lock = threading.Lock()
        self._marks: dict[str, tuple[HealthState, str]] = dict.fromkeys(
            self.regions, (HealthState.UP, "")
        )
        self._breakers = {r: _Breaker() for r in self.regions}
        self._listeners: list[Listener] = []
        self.unavailable: frozenset[str] = frozenset()

    # --- the hot path ---

    def available(self, region: str) -> bool:
        """May a request go to ``region`` now? In half-open state, True takes the probe lease
        (unless inside :meth:`peeking`)."""
        if region not in self.unavailable:
            return True
        return self._try_half_open(region, take=not getattr(self._peek, "on", False))

    def would_admit(self, region: str) -> bool:
        """Like :meth:`available`, but never takes the probe lease (a decision only to look)."""
        if region not in self.unavailable:
            return True
        return self._try_half_open(region, take=False)

    @contextmanager
    def peeking(self) -> Iterator[None]:
        """Within this block (this thread only), :meth:`available` takes no probe lease."""
        before = getattr(self._peek, "on", False)
        self._peek.on = True
        try:
            yield
        finally:
            self._peek.on = before

    # --- marks ---

    def mark(self, region: str, state: HealthState | str, reason: str = "manual") -> None:
        st = HealthState(state)
        with self._lock:
            self._marks[region] = (st, reason)
            if st is HealthState.UP:
                self._breakers[region] = _Breaker()
            changed = self._refresh_locked()
        log.info("region marked", region=region, state=st.value, reason=reason)
        self._notify(changed | {region})

    def mark_down(self, region: str, reason: str = "manual") -> None:
        self.mark(region, HealthState.DOWN, reason)

    def mark_up(self, region: str, reason: str = "manual") -> None:
        self.mark(region, HealthState.UP, reason)

    def drain(self, region: str, reason: str = "manual") -> None:
        self.mark(region, HealthState.DRAINED, reason)

    # --- passive observation (the circuit breaker) ---

    def record_success(self, region: str) -> None:
        b = self._breakers.get(region)
        if b is None or (b.state is BreakerState.CLOSED and b.failures == 0):
            return  # the common case: no lock, no change
        with self._lock:
            b.failures, b.state, b.lease_until = 0, BreakerState.CLOSED, None
            changed = self._refresh_locked()
        if changed:
            log.info("circuit closed", region=region)
        self._notify(changed)

    def record_failure(self, region: str, error: str = "") -> None:
        with self._lock:
            b = self._breakers.setdefault(region, _Breaker())
            b.failures += 1
            if b.state is BreakerState.HALF_OPEN or b.failures >= self.failure_threshold:
                b.state, b.opened_at, b.lease_until = BreakerState.OPEN, self.clock(), None
            changed = self._refresh_locked()
        if changed:
            log.warning("circuit opened", region=region, failures=b.failures, error=error)
        self._notify(changed)

    def _try_half_open(self, region: str, *, take: bool) -> bool:
        with self._lock:
            state, _ = self._marks.get(region, (HealthState.UP, ""))
            b = self._breakers.get(region)
            if state is not HealthState.UP or b is None:
                return False
            now = self.clock()
            if b.state is BreakerState.OPEN and now - b.opened_at >= self.reset_seconds:
                b.state = BreakerState.HALF_OPEN
            if b.state is not BreakerState.HALF_OPEN:
                return False
            if b.lease_until is not None and now < b.lease_until:
                return False  # a probe is out, and its lease still runs
            if take:
                if b.lease_until is not None:
                    log.warning("probe lease lapsed", region=region)
                b.lease_until = now + self.probe_lease_seconds  # one caller probes, for a while
            return True

    # --- optional active probes ---

    def release_probe(self, region: str) -> None:
        """Give the probe lease back unused (a caller that decided, then did not call)."""
        with self._lock:
            b = self._breakers.get(region)
            if b is not None:
                b.lease_until = None

    def probe(self, check: Callable[[str], bool], regions: Iterable[str] | None = None) -> None:
        """Run ``check(region)`` for each region and record the outcome in the breaker."""
        for r in regions or self.regions:
            try:
                ok = check(r)
            except Exception as exc:  # a probe that raises is a failed probe
                ok = False
                log.warning("probe raised", region=r, error=type(exc).__name__)
            if ok:
                self.record_success(r)
            else:
                self.record_failure(r, "probe failed")

    # --- observation ---

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def status(self, region: str) -> RegionStatus:
        with self._lock:
            state, reason = self._marks.get(region, (HealthState.UP, ""))
            b = self._breakers.get(region, _Breaker())
            return RegionStatus(
                region, state, reason, b.state, b.failures, region not in self.unavailable
            )

    def snapshot(self) -> list[RegionStatus]:
        return [self.status(r) for r in self.regions]

    def why_unavailable(self, region: str) -> str:
        st = self.status(region)
        if st.state is not HealthState.UP:
            return f"{region} is {st.state.value} ({st.reason})"
        if st.breaker is not BreakerState.CLOSED:
            return (
                f"{region} circuit breaker is {st.breaker.value} after "
                f"{st.consecutive_failures} failures"
            )
        return f"{region} is available"

    def _refresh_locked(self) -> set[str]:
        blocked = {r for r, (st, _) in self._marks.items() if st is not HealthState.UP}
        blocked |= {r for r, b in self._breakers.items() if b.state is not BreakerState.CLOSED}
        new = frozenset(blocked)
        changed = set(new ^ self.unavailable)
        self.unavailable = new
        return changed

    def _notify(self, regions: set[str]) -> None:
        for r in regions:
            st = self.status(r)
            for fn in list(self._listeners):
                fn(st)
