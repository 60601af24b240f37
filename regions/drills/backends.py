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

__all__ = ["DrillBackend", "LocalClusterBackend", "SimBackend", "replication_groups"]


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
    def unreplicated_ages(self, region: str) -> list[float]: ...
    def wait_converged(self, timeout: float) -> bool: ...
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

    def unreplicated_ages(self, region: str) -> list[float]:
        self.sim.poll(region)
        return self.sim.engine.unreplicated_ages(region, self.sim.now)  # type: ignore[no-any-return]

    def wait_converged(self, timeout: float) -> bool:
        start = self.sim.now
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


class LocalClusterBackend:
    """A running :class:`~regions.local.cluster.LocalCluster` as a drill backend."""

    name = "local"
    threaded = True

    def __init__(
        self, cluster: Any, *, connect_timeout: float = 0.2, read_timeout: float = 0.3
    ) -> None:
        from regions.health import RegionHealth
        from regions.pool import ClientPool

        self.cluster = cluster
        self.policy = cluster.policy
        self.settings = cluster.settings(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=1,
            breaker_failures=2,
            breaker_reset_seconds=1.0,
            failover_attempts=3,
        )
        self._routers: dict[str, RegionRouter] = {}
        self._pool = ClientPool(self.settings, max_pool_connections=64)
        for region in self.policy.regions:
            health = RegionHealth(self.policy.regions, failures=2, reset_seconds=1.0)
            self._routers[region] = RegionRouter(
                self.policy,
                region=region,
                clients=self._pool,
                settings=self.settings,
                health=health,
                physical_clock=cluster.physical_clock(region),
            )

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def router(self, region: str) -> RegionRouter:
        return self._routers[region]

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

    def unreplicated_ages(self, region: str) -> list[float]:
        engine = self.cluster.replicator.engine
        try:
            engine.poll(region)
        except Exception:  # the region may already be unreachable: count what we know
            pass
        return engine.unreplicated_ages(region, time.time())  # type: ignore[no-any-return]

    def wait_converged(self, timeout: float) -> bool:
        return bool(self.cluster.replicator.wait_converged(timeout))

    def scan(self, region: str, table: str) -> Iterable[dict[str, Any]]:
        return _scan(self.cluster.client(region), table)

    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return _get(self.cluster.client(region), table, key)

    def conflicts(self) -> list[ConflictRecord]:
        return ConflictLog(
            self.policy, self.cluster.clients, table_prefix=self.cluster.table_prefix
        ).scan(self.policy.regions[0])


class RemoteClusterBackend:
    """The cluster a ``regionkit local up`` process runs, driven over its control endpoint.

    Faults go through the control endpoint; reads, writes and scans go straight to
    the regions' endpoints. The control endpoint reports how many changes each
    link still holds, not their ages, so the RPO exposure ages are approximated by
    the link's last measured lag.
    """

    name = "local"
    threaded = True

    def __init__(self, policy: Policy, settings: Any, control: Any) -> None:
        from regions.health import RegionHealth
        from regions.pool import ClientPool

        self.policy = policy
        self.control = control
        self.settings = settings.model_copy(
            update={
                "connect_timeout": 0.2,
                "read_timeout": 0.3,
                "max_attempts": 1,
                "breaker_failures": 2,
                "breaker_reset_seconds": 1.0,
                "failover_attempts": 3,
            }
        )
        self._pool = ClientPool(self.settings, max_pool_connections=64)
        self._skew: dict[str, int] = {}
        self._routers = {
            r: RegionRouter(
                policy,
                region=r,
                clients=self._pool,
                settings=self.settings,
                health=RegionHealth(policy.regions, failures=2, reset_seconds=1.0),
                physical_clock=self._clock(r),
            )
            for r in policy.regions
        }

    def _clock(self, region: str) -> Any:
        return lambda: time.time_ns() // 1_000_000 + self._skew.get(region, 0)

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def router(self, region: str) -> RegionRouter:
        return self._routers[region]

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

    def unreplicated_ages(self, region: str) -> list[float]:
        ages: list[float] = []
        for ln in self._links():
            if ln.get("src") == region and ln.get("pending"):
                ages += [float(ln.get("lag_last_ms") or 0) / 1000] * int(ln["pending"])
        return ages

    def wait_converged(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
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

    def scan(self, region: str, table: str) -> Iterable[dict[str, Any]]:
        return _scan(self._pool.dynamodb(region), table)

    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return _get(self._pool.dynamodb(region), table, key)

    def conflicts(self) -> list[ConflictRecord]:
        return ConflictLog(self.policy, self._pool, table_prefix=self.settings.table_prefix).scan(
            self.policy.regions[0]
        )
