"""Time series of a drill: what the load saw, second by second, per region and data class.

Built once, at the end, from the runner's outcomes and lag samples, into
:class:`~regions.drills.journal.DrillSeries`. The bucket width is 1 s up to
:data:`MAX_BUCKETS` seconds of load and widens beyond that, so a one-hour drill's
journal is no larger than a five-minute one's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from regions.drills.journal import DrillSeries

__all__ = ["MAX_BUCKETS", "LagSample", "build_series", "percentile"]

MAX_BUCKETS = 300


class _Outcome(Protocol):
    @property
    def t(self) -> float: ...
    @property
    def region(self) -> str: ...
    @property
    def data_class(self) -> str: ...
    @property
    def op(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def failover(self) -> bool: ...
    @property
    def latency_ms(self) -> float: ...


LagSample = tuple[float, str, float]  # (time, "src>dst", lag ms)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    data = sorted(values)
    return data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))]


@dataclass(frozen=True)
class _Buckets:
    """``n`` time buckets of ``width`` seconds from ``start``."""

    start: float
    width: float
    n: int

    def index(self, t: float) -> int:
        return min(self.n - 1, max(0, int((t - self.start) // self.width)))

    def before(self, t: float) -> bool:
        return t < self.start - 1e-9


def build_series(
    outcomes: Iterable[_Outcome],
    lags: Iterable[LagSample],
    *,
    start: float,
    end: float,
    drill_start: float,
) -> DrillSeries:
    """Bucket ``outcomes`` and ``lags`` between ``start`` and ``end`` (absolute seconds)."""
    span = max(end - start, 1e-9)
    width = max(1.0, float(math.ceil(span / MAX_BUCKETS)))
    n = max(1, math.ceil(span / width))
    buckets = _Buckets(start, width, n)
    counts, latencies = _count_outcomes(outcomes, buckets)
    lag = _max_lags(lags, buckets)
    series = DrillSeries(bucket_seconds=width, t0=round(start - drill_start, 3), buckets=n)
    for name, by in counts.items():
        setattr(series, name, {k: by[k] for k in sorted(by)})
    for k in sorted(latencies):
        p50 = [percentile(b, 0.50) for b in latencies[k]]
        p99 = [percentile(b, 0.99) for b in latencies[k]]
        series.latency_p50_ms[k] = [None if v is None else round(v, 2) for v in p50]
        series.latency_p99_ms[k] = [None if v is None else round(v, 2) for v in p99]
    series.replication_lag_ms = {k: lag[k] for k in sorted(lag)}
    return series


def _count_outcomes(
    outcomes: Iterable[_Outcome], buckets: _Buckets
) -> tuple[dict[str, dict[str, list[int]]], dict[str, list[list[float]]]]:
    """Per bucket, by region and by region/data class: the counts of each outcome, and
    the latencies of acknowledged writes."""
    n = buckets.n
    counts: dict[str, dict[str, list[int]]] = {
        name: defaultdict(lambda: [0] * n)
        for name in ("writes_ok", "writes_failed", "reads_ok", "reads_failed", "failovers")
    }
    latencies: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(n)])
    for o in outcomes:
        if buckets.before(o.t):
            continue
        i = buckets.index(o.t)
        keys = (o.region, f"{o.region}/{o.data_class}")
        if o.op == "read":
            name = "reads_ok" if o.ok else "reads_failed"
        else:
            name = "writes_ok" if o.ok else "writes_failed"
            if o.ok:
                for k in keys:
                    latencies[k][i].append(o.latency_ms)
        for k in keys:
            counts[name][k][i] += 1
            if o.failover and o.ok:
                counts["failovers"][k][i] += 1
    return counts, latencies


def _max_lags(lags: Iterable[LagSample], buckets: _Buckets) -> dict[str, list[float | None]]:
    """The highest replication lag of each link in each bucket."""
    lag: dict[str, list[float | None]] = defaultdict(lambda: [None] * buckets.n)
    for t, link, ms in lags:
        if buckets.before(t):
            continue
        i = buckets.index(t)
        cur = lag[link][i]
        lag[link][i] = round(ms, 1) if cur is None else max(cur, round(ms, 1))
    return lag
