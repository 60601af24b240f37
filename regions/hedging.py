"""Hedged reads (tail at scale): a second read to another replica when the first is slow.

Optional (``RouterConfig.hedge_reads``): a read of a global class that has not answered
within the region's observed p95 latency is sent to the next replica as well, and the
first answer wins. The slower call still finishes in the background and still feeds
the breaker. Only the winner's latency is recorded: a slow region's losing answers
must not raise the p95 that decides when to hedge away from it.

:class:`HedgedReads` is the part of :class:`regions.transport.Transport` that does it;
the transport sends each request and fails over.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from regions.routing import Op, Route
from residency.errors import RegionUnavailable

if TYPE_CHECKING:
    from residency.policy import Policy
    from residency.settings import RouterConfig

__all__ = ["HedgePolicy", "HedgedReads", "LatencyTracker"]

T = TypeVar("T")
Decide = Callable[[tuple[str, ...]], Route]


@dataclass(frozen=True)
class HedgePolicy:
    """When to send a second read (tail at scale)."""

    classes: frozenset[str]
    """Data classes whose reads may be hedged (global data, never the directory)."""
    cold_delay_s: float = 0.02
    """The delay before a region has ``min_samples`` observed latencies."""
    min_delay_s: float = 0.001
    max_delay_s: float = 0.25
    min_samples: int = 20
    workers: int = 32

    @classmethod
    def from_config(cls, policy: Policy, config: RouterConfig) -> HedgePolicy | None:
        """The policy's global classes (not the directory), when ``hedge_reads`` is on."""
        if not config.hedge_reads:
            return None
        return cls(
            classes=frozenset(
                n
                for n, dc in policy.data_classes.items()
                if dc.kind == "global" and n != policy.system.directory
            ),
            max_delay_s=config.hedge_max_delay_ms / 1000,
        )


class _Series:
    """One region's window of latencies, and how many were ever recorded (a hint)."""

    __slots__ = ("samples", "seen")

    def __init__(self, window: int) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.seen = 0


class LatencyTracker:
    """The last ``window`` answer latencies per region, and their p95.

    Recording is on every request's path, so it only appends (``deque.append`` is
    atomic); the p95 is recomputed when asked, at most once per ``every`` new samples.
    """

    ALL = "*"
    """The pseudo-region holding every region's samples (the class-wide p95)."""

    def __init__(self, window: int = 256, every: int = 16) -> None:
        self.window = window
        self.every = every
        self._series: dict[str, _Series] = {}
        self._all = _Series(window)
        self._series[self.ALL] = self._all
        self._p95: dict[str, tuple[int, float]] = {}  # (samples seen then, p95)
        self._lock = threading.Lock()

    def record(self, region: str, seconds: float) -> None:
        s = self._series.get(region)
        if s is None:
            with self._lock:  # two threads starting a region at once share one series
                s = self._series.setdefault(region, _Series(self.window))
        s.samples.append(seconds)
        s.seen += 1  # a lost increment under contention only delays a p95
        a = self._all
        a.samples.append(seconds)
        a.seen += 1

    def count(self, region: str) -> int:
        s = self._series.get(region)
        return len(s.samples) if s is not None else 0

    def p95(self, region: str) -> float | None:
        s = self._series.get(region)
        if s is None or not s.samples:
            return None
        seen = s.seen
        cached = self._p95.get(region)
        if cached is not None and seen - cached[0] < self.every:
            return cached[1]
        ordered = sorted(s.samples)  # copied in C, under the GIL: appends by others wait
        value = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        self._p95[region] = (seen, value)
        return value


class HedgedReads:
    """The hedging half of :class:`regions.transport.Transport` (which sets these
    attributes and implements the three methods below that raise here)."""

    hedging: HedgePolicy | None
    latency: LatencyTracker
    hedges_sent: int
    hedges_won: int
    _lock: threading.Lock
    _pool: ThreadPoolExecutor | None

    def _send(
        self, route: Route, fn: Callable[[Route, Any], T], timing: list[float] | None = None
    ) -> T:
        raise NotImplementedError

    def _failover(
        self,
        decide: Decide,
        op: Op,
        fn: Callable[[Route, Any], T],
        tried: list[str],
        first: BaseException,
    ) -> tuple[T, Route]:
        raise NotImplementedError

    def _retryable(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def hedge_delay(self, region: str) -> float:
        """How long a read waits for ``region`` before a second one goes out."""
        h = self.hedging
        if h is None:
            return float("inf")
        lat = self.latency
        for key in (region, lat.ALL):  # the region's own p95, else every region's
            p95 = lat.p95(key)
            if p95 is not None and lat.count(key) >= h.min_samples:
                return min(h.max_delay_s, max(h.min_delay_s, p95))
        return h.cold_delay_s

    def _executor(self, h: HedgePolicy) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = ThreadPoolExecutor(
                        max_workers=h.workers, thread_name_prefix="regionkit-hedge"
                    )
        return pool

    def _hedged(
        self, decide: Decide, op: Op, route: Route, fn: Callable[[Route, Any], T], h: HedgePolicy
    ) -> tuple[T, Route]:
        pool = self._executor(h)
        timings: dict[Future[T], list[float]] = {}
        futures: dict[Future[T], Route] = {}

        def launch(r: Route) -> None:
            t: list[float] = []
            fut = pool.submit(self._send, r, fn, t)
            futures[fut], timings[fut] = r, t

        launch(route)
        done, _ = wait(list(futures), timeout=self.hedge_delay(route.region))
        if not done:
            alt = self._alternative(decide, (route.region,))
            if alt is not None:
                launch(alt)
                with self._lock:
                    self.hedges_sent += 1
        pending: set[Future[T]] = set(futures)
        tried: list[str] = []
        first_error: BaseException | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                exc = fut.exception()
                if exc is None:
                    won = futures[fut]
                    for dt in timings[fut]:
                        self.latency.record(won.region, dt)
                    if won is not route:
                        with self._lock:
                            self.hedges_won += 1
                    return fut.result(), won
                if not self._retryable(exc):
                    raise exc  # an answer (or a bug): the first answer wins, errors too
                tried.append(futures[fut].region)
                first_error = first_error or exc
        assert first_error is not None
        return self._failover(decide, op, fn, tried, first_error)

    @staticmethod
    def _alternative(decide: Decide, exclude: Collection[str]) -> Route | None:
        try:
            return decide(tuple(exclude))
        except RegionUnavailable:
            return None  # no other replica: just wait for the first
