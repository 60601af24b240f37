"""Where a drill runs: the live local cluster, or the deterministic simulation.

The runner only talks to a :class:`DrillBackend`: time, routers per writer
region, fault injection, replication state (what is not yet replicated, whether
replicas converged), table contents and the conflict log. Two backends:

* :class:`LocalClusterBackend`: real moto server processes and the threaded
  replication emulator, on wall-clock time, one writer thread per region.
* :class:`SimBackend`: :class:`~regions.local.sim.Simulation` on virtual time,
  single-threaded and reproducible from a seed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any, Protocol

from regions.codec import from_ddb
from regions.conflicts import ConflictLog
from regions.router import RegionRouter
from residency.policy import GlobalDataClass, Policy
from residency.records import ConflictRecord

__all__ = [
    "DrillBackend",
    "LinkState",
    "LocalClusterBackend",
    "SimBackend",
    "faults_in_status",
    "replication_groups",
]

# (src, dst, last applied lag in ms or None, changes pending, changes applied so far);
# one per region pair
LinkState = tuple[str, str, float | None, int, int]


def _link_states(rows: Iterable[Any]) -> list[LinkState]:
    """Per (src, dst) over every table: the largest last lag and the pending total."""
    lag: dict[tuple[str, str], float | None] = {}
    pending: dict[tuple[str, str], int] = {}
    applied: dict[tuple[str, str], int] = {}
    for m in rows:
        get = m.get if isinstance(m, dict) else lambda k, m=m: getattr(m, k, None)
        pair = (str(get("src")), str(get("dst")))
        last = get("lag_last_ms")
        cur = lag.get(pair)
        if last is not None:
            lag[pair] = float(last) if cur is None else max(cur, float(last))
        else:
            lag.setdefault(pair, cur)
        pending[pair] = pending.get(pair, 0) + int(get("pending") or 0)
        applied[pair] = applied.get(pair, 0) + int(get("applied") or 0)
    return [(a, b, lag[(a, b)], pending[(a, b)], applied[(a, b)]) for a, b in sorted(lag)]


def faults_in_status(status: dict[str, Any]) -> list[str]:
    """Faults still in place according to a cluster's status (outages, pauses, lag, skew)."""
    left = [f"outage of {r} ({m})" for r, m in sorted(status.get("outages", {}).items())]
    links = status.get("links", [])
    paused = sorted({f"{ln['src']}>{ln['dst']}" for ln in links if ln.get("paused")})
    if paused:
        left.append(f"replication blocked on {len(paused)} links: {', '.join(paused[:6])}")
    lagged = sorted({f"{ln['src']}>{ln['dst']}" for ln in links if ln.get("injected_lag_ms")})
    if lagged:
        left.append(f"replication lag injected on {len(lagged)} links: {', '.join(lagged[:6])}")
    left += [
        f"clock skew of {ms} ms in {r}"
        for r, ms in sorted(status.get("clock_skew_ms", {}).items())
        if ms
    ]
    return left


class DrillBackend(Protocol):
    policy: Policy
    name: str
    threaded: bool

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def router(self, region: str) -> RegionRouter: ...
    def outage(self, region: str, mode: str = "stop") -> None: ...
    def restore(self, region: str) -> None: ...
    def pause(self, src: str | None = None, dst: str | None = None) -> None: ...
    def resume(self, src: str | None = None, dst: str | None = None) -> None: ...
    def partition(self, groups: list[list[str]]) -> None: ...
    def heal_links(self) -> None: ...
    def skew(self, region: str, ms: int) -> None: ...
    def unreplicated_ages(self, region: str, fresh: bool = True) -> list[float]: ...
    def links(self) -> list[LinkState]: ...
    def set_lag(self, seconds: float) -> None: ...
    def faults_left(self) -> list[str]: ...
    def wait_converged(self, timeout: float, since: float | None = None) -> bool:
        """Whether replication went quiet within ``timeout``, every write made before
        ``since`` (this backend's :meth:`now`; default: the call) included."""
        ...

    def scan(self, region: str, table: str) -> Iterable[dict[str, Any]]: ...
    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None: ...
    def conflicts(self) -> list[ConflictRecord]: ...


def replication_groups(policy: Policy, table_prefix: str = "") -> list[tuple[str, list[str]]]:
    """(table, regions) sets whose replicas must end identical."""
    out: list[tuple[str, list[str]]] = []
    for dc in policy.data_classes.values():
        if isinstance(dc, GlobalDataClass):
            out.append((table_prefix + dc.table, list(dc.replicas)))
        else:
            out.extend(
                (table_prefix + dc.table, list(j.regions))
                for j in policy.jurisdictions.values()
                if len(j.regions) > 1
            )
    return out


def table_digest(items: Iterable[dict[str, Any]]) -> tuple[str, int]:
    """An order-independent SHA-256 of a table's items, and the item count."""
    hashes = sorted(
        hashlib.sha256(json.dumps(i, sort_keys=True, default=str).encode()).digest() for i in items
    )
    h = hashlib.sha256()
    for x in hashes:
        h.update(x)
    return h.hexdigest(), len(hashes)


def _scan(client: Any, table: str) -> Iterable[dict[str, Any]]:
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        for raw in page.get("Items", []):
            yield from_ddb(raw) or {}
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _get(client: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    from regions.codec import to_ddb

    return from_ddb(client.get_item(TableName=table, Key=to_ddb(key)).get("Item"))


class SimBackend:
    """The deterministic simulation as a drill backend (virtual time, no threads)."""

    name = "sim"
    threaded = False

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.policy: Policy = sim.policy

    def now(self) -> float:
        return float(self.sim.now)

    def sleep(self, seconds: float) -> None:
        self.sim.step(seconds)

    def router(self, region: str) -> RegionRouter:
        return self.sim.routers[region]  # type: ignore[no-any-return]

    def outage(self, region: str, mode: str = "stop") -> None:
        self.sim.outage(region)

    def restore(self, region: str) -> None:
        self.sim.restore(region)

    def pause(self, src: str | None = None, dst: str | None = None) -> None:
        self.sim.faults.pause(src, dst)

    def resume(self, src: str | None = None, dst: str | None = None) -> None:
        self.sim.faults.resume(src, dst)

    def partition(self, groups: list[list[str]]) -> None:
        self.sim.faults.partition(groups)

    def heal_links(self) -> None:
        self.sim.faults.heal()

    def skew(self, region: str, ms: int) -> None:
        self.sim.skew(region, ms)

    def unreplicated_ages(self, region: str, fresh: bool = True) -> list[float]:
        self.sim.poll(region)
        return self.sim.engine.unreplicated_ages(region, self.sim.now)  # type: ignore[no-any-return]

    def links(self) -> list[LinkState]:
        return _link_states(self.sim.engine.metrics())

    def set_lag(self, seconds: float) -> None:
        self.sim.faults.set_lag(None, None, seconds)

    def faults_left(self) -> list[str]:
        return faults_in_status(
            {
                "outages": dict.fromkeys(sorted(self.sim.clients.down), "stop"),
                "links": [
                    {
                        "src": m.src,
                        "dst": m.dst,
                        "paused": m.paused,
                        "injected_lag_ms": m.injected_lag_ms,
                    }
                    for m in self.sim.engine.metrics()
                ],
                "clock_skew_ms": dict(self.sim.skew_ms),
            }
        )

    def wait_converged(self, timeout: float, since: float | None = None) -> bool:
        start = self.sim.now  # settle() applies everything written so far
        try:
            self.sim.settle()
        except RuntimeError:
            return False
        return bool(self.sim.now - start <= timeout)

    def scan(self, region: str, table: str) -> Iterable[dict[str, Any]]:
        return _scan(self.sim.clients.raw(region), table)

    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return _get(self.sim.clients.raw(region), table, key)

    def conflicts(self) -> list[ConflictRecord]:
        return ConflictLog(self.policy, self.sim.clients).scan(self.policy.regions[0])


class _WallClockBackend:
    """Routers per writer region on a shared client pool, on real time.

    The routers run with **the service's settings** (timeouts, attempts, breaker), so
    the RTO a drill measures is the one a service with those settings sees; the
    journal records them. ``fast=True`` rehearses with :data:`DRILL_SETTINGS`
    instead (0.2 s to connect, 0.3 s to read, one attempt, a breaker that opens
    after two failures and probes again after a second).
    """

    name = "local"
    threaded = True
    policy: Policy

    def _build_routers(self, settings: Any, clock: Any, *, fast: bool = False) -> None:
        from regions.health import RegionHealth
        from regions.pool import ClientPool

        self.settings = settings.model_copy(update=DRILL_SETTINGS) if fast else settings
        s = self.settings
        self._pool = ClientPool(self.settings, max_pool_connections=64)
        # scans and checks are not the workload: they get ordinary timeouts
        self._admin = ClientPool(settings.model_copy(update={"read_timeout": 10.0}))
        self._routers = {
            r: RegionRouter(
                self.policy,
                region=r,
                clients=self._pool,
                config=self.settings,
                health=RegionHealth(
                    self.policy.regions,
                    failures=s.breaker_failures,
                    reset_seconds=s.breaker_reset_seconds,
                    probe_lease_seconds=s.probe_lease_seconds,
                ),
                physical_clock=clock(r),
            )
            for r in self.policy.regions
        }

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        """Close the routers (their metrics flushed, hedging stopped) and both pools."""
        for router in self._routers.values():
            router.close()
        self._pool.close()
        self._admin.close()

    def router(self, region: str) -> RegionRouter:
        return self._routers[region]

    def scan(self, region: str, table: str) -> Iterable[dict[str, Any]]:
        return _scan(self._admin.client("dynamodb", region), table)

    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return _get(self._admin.client("dynamodb", region), table, key)

    def conflicts(self) -> list[ConflictRecord]:
        log = ConflictLog(self.policy, self._admin, table_prefix=self.settings.table_prefix)
        return log.scan(self.policy.regions[0])


DRILL_SETTINGS: dict[str, Any] = {
    "connect_timeout": 0.2,
    "read_timeout": 0.3,
    "max_attempts": 1,
    "breaker_failures": 2,
    "breaker_reset_seconds": 1.0,
    "failover_attempts": 3,
}


class LocalClusterBackend(_WallClockBackend):
    """A running :class:`~regions.local.cluster.LocalCluster` as a drill backend."""

    name = "local"
    threaded = True

    def __init__(self, cluster: Any, *, settings: Any = None, fast: bool = False) -> None:
        self.cluster = cluster
        self.policy = cluster.policy
        base = settings if settings is not None else cluster.config()
        self._build_routers(base, cluster.physical_clock, fast=fast)

    def outage(self, region: str, mode: str = "stop") -> None:
        self.cluster.outage(region, mode)

    def restore(self, region: str) -> None:
        self.cluster.restore(region)

    def _faults(self) -> Any:
        return self.cluster.replicator.faults

    def pause(self, src: str | None = None, dst: str | None = None) -> None:
        self._faults().pause(src, dst)

    def resume(self, src: str | None = None, dst: str | None = None) -> None:
        self._faults().resume(src, dst)

    def partition(self, groups: list[list[str]]) -> None:
        self._faults().partition(groups)

    def heal_links(self) -> None:
        self._faults().heal()

    def skew(self, region: str, ms: int) -> None:
        self.cluster.set_clock_skew(region, ms)

    def unreplicated_ages(self, region: str, fresh: bool = True) -> list[float]:
        """``fresh``: read the region's streams first (exact, costs a poll per table)."""
        return [float(a) for a in self.cluster.unreplicated_ages(region, fresh=fresh)]

    def links(self) -> list[LinkState]:
        return _link_states(self.cluster.link_metrics())

    def set_lag(self, seconds: float) -> None:
        self._faults().set_lag(None, None, seconds)

    def faults_left(self) -> list[str]:
        return faults_in_status(self.cluster.status())

    @staticmethod
    def _monotonic(since: float | None) -> float | None:
        # the replicator keeps time.monotonic(); this backend's clock is time.time()
        return None if since is None else time.monotonic() - (time.time() - since)

    def wait_converged(self, timeout: float, since: float | None = None) -> bool:
        return bool(self.cluster.replicator.wait_converged(timeout, since=self._monotonic(since)))

    def replication_busy(self, since: float | None = None) -> dict[str, Any]:
        """Why the emulator is not quiet (counts and regions), for the journal; regions
        "not read since" count from ``since``, as :meth:`wait_converged` does."""
        return dict(self.cluster.replicator.busy(self._monotonic(since)))


class RemoteClusterBackend(_WallClockBackend):
    """The cluster a ``regionkit local up`` process runs, driven over its control endpoint.

    Faults go through the control endpoint; reads, writes and scans go straight to
    the regions' endpoints. The RPO exposure (the ages of the writes some replica has
    not received) comes from the cluster's replication engine through the endpoint.
    """

    name = "local"
    threaded = True

    def __init__(self, policy: Policy, settings: Any, control: Any, *, fast: bool = False) -> None:
        self.policy = policy
        self.control = control
        self._skew: dict[str, int] = {}
        self._build_routers(settings, self._clock, fast=fast)

    def _clock(self, region: str) -> Any:
        return lambda: time.time_ns() // 1_000_000 + self._skew.get(region, 0)

    def outage(self, region: str, mode: str = "stop") -> None:
        self.control.outage(region, mode)

    def restore(self, region: str) -> None:
        self.control.restore(region)

    def pause(self, src: str | None = None, dst: str | None = None) -> None:
        self.control.pause(src=src, dst=dst)

    def resume(self, src: str | None = None, dst: str | None = None) -> None:
        self.control.resume(src=src, dst=dst)

    def partition(self, groups: list[list[str]]) -> None:
        self.control.partition(groups)

    def heal_links(self) -> None:
        self.control.heal()

    def skew(self, region: str, ms: int) -> None:
        self._skew[region] = ms
        self.control.skew(region, ms)

    def _links(self) -> list[dict[str, Any]]:
        return list(self.control.status().get("links", []))

    def links(self) -> list[LinkState]:
        return _link_states(self._links())

    def set_lag(self, seconds: float) -> None:
        self.control.lag(ms=seconds * 1000)

    def faults_left(self) -> list[str]:
        return faults_in_status(self.control.status())

    def unreplicated_ages(self, region: str, fresh: bool = True) -> list[float]:
        """Measured by the cluster's own replication engine, one age per write (the
        control endpoint's ``unreplicated``), as in-process backends measure it."""
        return [float(a) for a in self.control.unreplicated_ages(region)]

    def wait_converged(self, timeout: float, since: float | None = None) -> bool:
        deadline = time.monotonic() + timeout  # the control process reports pending counts
        quiet = 0
        while time.monotonic() < deadline:
            if all(not ln.get("pending") for ln in self._links()):
                quiet += 1
                if quiet >= 3:
                    return True
            else:
                quiet = 0
            time.sleep(0.1)
        return False
