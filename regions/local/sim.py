"""A deterministic, thread-free simulation of the local cluster on in-process moto.

Everything runs in the calling thread under ``moto.mock_aws``: every region is
a moto backend in this process, the replication engine is driven step by step
on a virtual clock, and each region's router stamps writes with an HLC whose
physical clock is the virtual clock plus that region's skew. Given a seed, the
same calls produce the same history, which is what property-based conflict
tests and the drill simulations need.

Faults: per-link lag and pauses (the engine's :class:`LinkFaults`), partitions,
clock skew per writer region, and region outages: an unavailable region's
clients raise ``EndpointConnectionError``, as a refused connection would.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from regions.conflicts import ConflictDetector
from regions.health import RegionHealth
from regions.hlc import HLC
from regions.local.replication import ReplicationEngine
from regions.router import RegionRouter
from residency.policy import Policy
from residency.settings import RouterConfig
from residency.tables import TTL_ATTRIBUTE, plan_tables

__all__ = ["InProcessClients", "Simulation", "simulation"]

_SESSION: Any = None
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: virtual time starts here


class _DownClient:
    """Stands in for a client of a region that is down: every call is refused."""

    def __init__(self, region: str) -> None:
        self.region = region

    def __getattr__(self, name: str) -> Any:
        from botocore.exceptions import EndpointConnectionError

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise EndpointConnectionError(endpoint_url=f"https://dynamodb.{self.region}.sim")

        return refuse


class InProcessClients:
    """A :class:`~residency.clients.ClientProvider` over in-process moto, with switchable
    region outages."""

    def __init__(self) -> None:
        import boto3
        from botocore.config import Config

        global _SESSION
        if _SESSION is None:  # loading service models is the slow part: do it once
            _SESSION = boto3.session.Session(aws_access_key_id="sim", aws_secret_access_key="sim")
        self._session: Any = _SESSION
        self._config = Config(retries={"max_attempts": 1, "mode": "standard"})
        self._clients: dict[tuple[str, str], Any] = {}
        self.down: set[str] = set()
        self._dirty: set[tuple[str, str]] = set()

    def _mark(self, region: str, params: dict[str, Any], **kwargs: Any) -> None:
        if "TableName" in params:
            self._dirty.add((region, params["TableName"]))
        for table in params.get("RequestItems", {}):
            self._dirty.add((region, table))
        for op in params.get("TransactItems", []):
            for body in op.values():
                if "TableName" in body:
                    self._dirty.add((region, body["TableName"]))

    def mark_dirty(self, region: str, table: str) -> None:
        """``table`` in ``region`` changed other than through a client (a TTL deletion)."""
        self._dirty.add((region, table))

    def take_dirty(self, region: str, table: str) -> bool:
        """Whether ``table`` in ``region`` was written since the last call (then clears it)."""
        if (region, table) in self._dirty:
            self._dirty.discard((region, table))
            return True
        return False

    def client(self, service: str, region: str) -> Any:
        if region in self.down:
            return _DownClient(region)
        key = (service, region)
        if key not in self._clients:
            client = self._session.client(service, region_name=region, config=self._config)
            if service == "dynamodb":
                for op in (
                    "PutItem",
                    "UpdateItem",
                    "DeleteItem",
                    "BatchWriteItem",
                    "TransactWriteItems",
                ):
                    client.meta.events.register(
                        f"provide-client-params.dynamodb.{op}",
                        lambda params, region=region, **kw: self._mark(region, params),
                    )
            self._clients[key] = client
        return self._clients[key]

    def raw(self, region: str) -> Any:
        """The real client even while the region is 'down' (for inspection)."""
        self.down, saved = set(), self.down
        try:
            return self.client("dynamodb", region)
        finally:
            self.down = saved


def create_tables(policy: Policy, clients: Any, *, table_prefix: str = "") -> None:
    """Tables as the policy places them (``residency.tables``), with streams and TTL."""
    for plan in plan_tables(policy, table_prefix):
        extra = plan.create_args()
        for region in plan.regions:
            client = clients.client("dynamodb", region)
            with suppress(client.exceptions.ResourceInUseException):
                client.create_table(
                    TableName=plan.table,
                    BillingMode="PAY_PER_REQUEST",
                    StreamSpecification={
                        "StreamEnabled": True,
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                    },
                    **extra,
                )
                client.update_time_to_live(
                    TableName=plan.table,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
                )


class Simulation:
    """The whole cluster in one thread, on virtual time. Use :func:`simulation`."""

    def __init__(
        self, policy: Policy, *, seed: int = 0, detect: bool = True, adopt_drift_ms: int = 0
    ) -> None:
        self.policy = policy
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = EPOCH
        self.skew_ms: dict[str, int] = {}
        self.clients = InProcessClients()
        create_tables(policy, self.clients)
        # Node IDs come from the seed, so stamps (and their ties) replay identically.
        nodes = random.Random(seed + 2)
        self.detector = ConflictDetector(
            policy,
            self.clients,
            clock=lambda r: HLC(r, physical=self._physical(r), node=f"{nodes.getrandbits(32):08x}"),
        )
        merge_tokens = random.Random(seed + 4)  # the detector's merge writes replay too
        self.detector.new_token = lambda: f"{merge_tokens.getrandbits(64):016x}"
        self.engine = ReplicationEngine(
            policy,
            self.clients,
            time_source="poll",
            rng=random.Random(seed + 1),
            listeners=[self.detector] if detect else [],
        )
        self.engine.should_poll = self.clients.take_dirty
        self.faults = self.engine.faults
        config = RouterConfig(
            mode="aws",
            failover_attempts=3,
            breaker_failures=2,
            breaker_reset_seconds=1e9,
            # The cache runs on wall time (its default clock): a day never passes in a test,
            # so a router's cache stays as stale as a test makes it, however far virtual time
            # goes. (A router refuses a TTL as long as the tombstone retention.)
            directory_cache_ttl_seconds=86_400.0,
        )
        self.routers: dict[str, RegionRouter] = {}
        for region in policy.regions:
            health = RegionHealth(
                policy.regions, failures=2, reset_seconds=1e9, clock=lambda: self.now
            )
            self.routers[region] = RegionRouter(
                policy,
                region=region,
                clients=self.clients,
                config=config,
                health=health,
                wall_clock=lambda: self.now,
                clock=HLC(
                    region,
                    physical=self._physical(region),
                    max_offset_ms=config.hlc_max_offset_ms,
                    node=f"{nodes.getrandbits(32):08x}",
                    adopt_drift_ms=adopt_drift_ms,
                ),
            )

        tokens = random.Random(seed + 3)  # write tokens replay identically too
        for router in self.routers.values():
            router.store.new_token = lambda: f"{tokens.getrandbits(64):016x}"

    def _physical(self, region: str) -> Any:
        return lambda: int(self.now * 1000) + self.skew_ms.get(region, 0)

    # --- time and replication ---

    def advance(self, seconds: float) -> None:
        """Move virtual time on. Streams are read first, so every write made at the
        current instant gets it as its write time (DynamoDB's per-item timestamp)."""
        self.poll()
        self.now += seconds

    def poll(self, region: str | None = None) -> int:
        regions = [region] if region else self.policy.regions
        return sum(self.engine.poll(r, now=self.now) for r in regions if r not in self.clients.down)

    def deliver(self) -> int:
        return self.engine.deliver_due(self.now)

    def step(self, seconds: float = 0.01) -> None:
        """Advance time, then apply what is due."""
        self.advance(seconds)
        self.deliver()

    def settle(self, max_steps: int = 10_000) -> int:
        """Run until nothing is pending or in flight (faults permitting); return steps taken.

        Each step applies everything due (several versions of one item go one per
        pass, in order), reads every stream, then moves time on.
        """
        for i in range(max_steps):
            applied = 0
            for _ in range(1000):
                n = self.deliver()
                applied += n
                if not n:
                    break
                self.poll()
            polled = self.poll()
            nxt = self.engine.next_due()
            if (
                not polled
                and not applied
                and nxt is None
                and not self.engine.echoes_pending()
                and not self.engine.rereads_pending()
            ):
                return i
            if nxt is not None and nxt > self.now + 0.01 and not polled and not applied:
                self.advance(nxt - self.now)
            else:
                self.advance(0.01)
        raise RuntimeError("the simulation did not settle")

    def expire(self, now: float | None = None) -> dict[str, dict[str, int]]:
        """DynamoDB's TTL process in every region that is up, as of ``now`` (virtual
        time by default): as :meth:`regions.local.cluster.LocalCluster.expire`."""
        from regions.local.expiry import expire_backends

        at = self.now if now is None else now
        out: dict[str, dict[str, int]] = {}
        for region in self.policy.regions:
            if region in self.clients.down:
                continue
            out[region] = {}
            for e in expire_backends(at, region=region):
                out[region][e.table] = e.count
                self.clients.mark_dirty(region, e.table)
        return out

    # --- faults ---

    def outage(self, region: str) -> None:
        self.poll(region)  # what was written before the fault keeps its write time
        self.clients.down.add(region)
        self.engine.region_down(region)

    def restore(self, region: str) -> None:
        self.clients.down.discard(region)
        self.engine.region_up(region)
        for router in self.routers.values():
            router.health.mark_up(region, "restored")

    def skew(self, region: str, ms: int) -> None:
        self.skew_ms[region] = ms

    # --- inspection ---

    def items(self, region: str, table: str) -> dict[str, dict[str, Any]]:
        """Every item of a table in a region (real state, outages ignored), by its key:
        the partition key, then `` / `` and the sort key where the table has one."""
        client = self.clients.raw(region)
        schema = client.describe_table(TableName=table)["Table"]["KeySchema"]
        names = [k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"])]
        return {" / ".join(str(i.get(n)) for n in names): i for i in self.raw_items(region, table)}

    def raw_items(self, region: str, table: str) -> list[dict[str, Any]]:
        """Every item of a table in a region, by a raw scan (real state, outages ignored)."""
        from regions.codec import from_ddb

        client = self.clients.raw(region)
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = client.scan(**kwargs)
            out += [from_ddb(raw) or {} for raw in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def converged(self, table: str, regions: list[str]) -> bool:
        states = [self.items(r, table) for r in regions]
        return all(s == states[0] for s in states[1:])


@contextmanager
def simulation(
    policy: Policy, *, seed: int = 0, detect: bool = True, adopt_drift_ms: int = 0
) -> Iterator[Simulation]:
    """A :class:`Simulation` inside its own ``mock_aws`` context.

    moto runs with the local servers' speed-ups (:mod:`regions.local.fastjson`, and
    its method listing memoised): a scan of 200 items costs 20 ms instead of 80.
    """
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    from moto import mock_aws

    from regions.local import atomic, fastjson, fastvalues

    fastjson.install()
    atomic.install()
    fastvalues.install()

    with mock_aws():
        yield Simulation(policy, seed=seed, detect=detect, adopt_drift_ms=adopt_drift_ms)
