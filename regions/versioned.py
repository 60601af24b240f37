"""The versioned, conditional read/write protocol of every data class.

Every write is stamped with an HLC version and is conditional, evaluated by
DynamoDB in the region it lands in:

* a blind write succeeds unless the item holds a newer version;
* a write ``based_on`` a version read earlier is a compare-and-set;
* ``create_only`` succeeds only on a missing item (or over an older delete);
* every form also accepts its own earlier attempt, by request token (``rk_tok``),
  so a write retried in another region after a timeout is idempotent;
* every form is refused by a ``moved`` or ``erased`` fence (:mod:`regions.tombstones`).

A delete writes a tombstone, never a bare ``DeleteItem``. Reads hide tombstones;
a pinned read or write that meets a ``moved`` fence asks the directory
(:class:`Homes`) to learn the new home from it and retries there.

Nothing a failed request returns is kept in an exception: a condition failure's
old item is reduced to regionkit's own attributes before the ``except`` block
ends, and the error is raised outside it, so ``__context__`` is empty too.
Items are named in errors by keyed pseudonym.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from regions.causal import CausalHistory
from regions.codec import (
    from_ddb,
)
from regions.codec import to_ddb_value as _to_value
from regions.conditions import condition
from regions.directory import DirectoryEntry
from regions.hlc import HLC
from regions.ids import parse_user_id
from regions.routing import Op, Route, RouteTable
from regions.serialize import serialize_item
from regions.tombstones import (
    MOVED,
    TO_ATTR,
    is_live,
    tombstone_kind,
)
from regions.transport import Decide, Transport
from residency.errors import (
    BackendError,
    ConfigError,
    MalformedId,
    RegionUnavailable,
    describe_value,
)
from residency.guard import ResidencyGuard
from residency.logs import get_logger
from residency.policy import GlobalDataClass, MergeConflicts, Policy
from residency.pseudonym import Pseudonymizer
from residency.tables import plan_tables

__all__ = [
    "Homes",
    "VersionedStore",
    "Written",
    "condition",  # from regions.conditions, where it lives
    "directed",
]

log = get_logger("regionkit.router")

MAX_HOPS = 3  # a moved fence is followed at most this often per request
Merge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Written:
    version: str
    route: Route
    merged: bool = False


class Homes(Protocol):
    """Where a pinned subject lives (implemented by :class:`regions.users.Users`)."""

    def home_for(self, user_id: str, op: Op) -> DirectoryEntry: ...

    def learn_moved(self, user_id: str, to_region: str) -> DirectoryEntry: ...


class VersionedStore(CausalHistory):
    """get/put/update/delete/query with HLC stamps, conditions and tombstones; what it
    reads feeds its clock and causal history (:class:`regions.causal.CausalHistory`)."""

    def __init__(
        self,
        policy: Policy,
        routes: RouteTable,
        transport: Transport,
        clock: HLC,
        guard: ResidencyGuard,
        homes: Homes,
        pseudonymize: Pseudonymizer,
        *,
        region: str | None,
        merge_resolver: Callable[[str, str], Merge],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.routes = routes
        self.transport = transport
        CausalHistory.__init__(self, clock)
        self.guard = guard
        self.homes = homes
        self.pseudonymize = pseudonymize
        self.region = region
        self.merge_resolver = merge_resolver
        self.wall = wall
        self.retention_s = policy.system.tombstone_retention_days * 86_400
        dcs = policy.data_classes
        self.pk = {n: dc.partition_key for n, dc in dcs.items()}
        self.sk = {n: dc.sort_key for n, dc in dcs.items()}
        self.pinned = frozenset(n for n, dc in dcs.items() if dc.kind == "pinned")
        self.key_attributes = {
            t.data_class: t.key_attributes() for t in plan_tables(policy) if t.data_class in dcs
        }
        self.merges = {
            n: dc.conflicts.merge
            for n, dc in dcs.items()
            if isinstance(dc, GlobalDataClass) and isinstance(dc.conflicts, MergeConflicts)
        }
        # Write request tokens (rk_tok); the simulation replaces this with a seeded source.
        self.new_token: Callable[[], str] = _random_token

    # --- deciding where a request goes ---

    def decider(self, data_class: str, subject: str | None, op: Op) -> Decide:
        kind = self.routes.kinds.get(data_class)
        if kind is None:
            self.policy.data_class(data_class)  # raises UnknownDataClass naming the known ones
        routes = self.routes
        if kind == "pinned":
            if subject is None:
                raise MalformedId(
                    kind="subject", value="none", reason=f"{data_class} is pinned: pass its key"
                )
            entry = self.homes.home_for(subject, op)
            home, jid = entry.home_region, entry.jurisdiction
            return lambda ex: routes.pick(data_class, home, jid, op, ex)
        origin = self.region
        if origin is None:
            origin = (
                self.homes.home_for(subject, "read").home_region
                if subject
                else self.policy.regions[0]
            )
        return lambda ex: routes.pick(data_class, origin, None, op, ex)

    def subject_of(self, data_class: str, key: dict[str, Any], subject: str | None) -> str | None:
        """For a pinned class the item's own key is the subject; a disagreeing claim is refused."""
        if data_class not in self.pinned:
            self.policy.data_class(data_class)  # an unknown class fails here, by name
            return subject
        pk = self.pk[data_class]
        value = key.get(pk)
        if not isinstance(value, str):
            raise MalformedId(
                kind="key",
                value=describe_value(value),
                reason=f"{data_class}.{pk} must be the subject's user ID",
            )
        parse_user_id(value)
        if subject is not None and subject != value:
            raise ConfigError(
                message=f"subject= names another user than the {data_class} item's key "
                f"{pk!r}; a pinned item belongs to the user its key names, so drop subject="
            )
        return value

    def key_of(self, data_class: str, item: dict[str, Any]) -> dict[str, Any]:
        if data_class not in self.pk:
            self.policy.data_class(data_class)  # raises UnknownDataClass, naming the known ones
        pk, sk = self.pk[data_class], self.sk[data_class]
        if pk not in item:
            raise ConfigError(message=f"{data_class} items need the partition key {pk!r}")
        key = {pk: item[pk]}
        if sk is not None:
            if sk not in item:
                raise ConfigError(message=f"{data_class} items need the sort key {sk!r}")
            key[sk] = item[sk]
        return key

    def named(self, data_class: str, key: dict[str, Any]) -> str:
        """The item's keyed pseudonym, for messages (:meth:`Pseudonymizer.item`)."""
        values = list(key.values())
        return self.pseudonymize.item(
            self.routes.tables[data_class], values[0], values[1] if len(values) > 1 else None
        )

    def serialize(self, data_class: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """DynamoDB JSON of ``item``; an unsupported value is named by attribute and type only.

        A key attribute (the table's or an index's) must be a non-empty string, as every
        regionkit table declares them: DynamoDB refuses anything else, and moto does not.
        """
        for name in self.key_attributes.get(data_class, frozenset()).intersection(item):
            value = item[name]
            if not isinstance(value, str) or not value:
                raise ConfigError(
                    message=f"{data_class}: {name!r} is a key attribute (of the table or an "
                    f"index), so it must be a non-empty string, not "
                    f"{'an empty string' if value == '' else type(value).__name__}"
                )
        return serialize_item(data_class, item)

    def serialize_value(self, data_class: str, what: str, value: Any) -> Any:
        """One value (a partition or sort-key value) as DynamoDB JSON, named by type only."""
        return self.serialize(data_class, {what: value})[what]

    # --- reads ---

    def get(
        self,
        data_class: str,
        key: dict[str, Any],
        subject: str | None,
        consistent: bool,
        *,
        decide: Decide | None = None,
        tombstones: bool = False,
    ) -> dict[str, Any] | None:
        """The live item (None when absent or a tombstone); with ``tombstones`` and a
        ``decide``, whatever the replica holds, tombstones included."""
        ddb_key = self.serialize(data_class, key)
        # Eventually consistent is DynamoDB's default: the flag is sent only when set
        # (a smaller request to build, sign and parse on every read).
        extra = {"ConsistentRead": True} if consistent else {}

        def call(route: Route, client: Any) -> Any:
            return client.get_item(TableName=route.table_name, Key=ddb_key, **extra).get("Item")

        for _ in range(MAX_HOPS):
            raw, _route = self.transport.call(
                decide or self.decider(data_class, subject, "read"),
                "read",
                call,
                # hedging hook (issue 15 item 3; the transport's): an eventually consistent
                # read may be answered by another replica; a strongly consistent one may not
                hedge=not consistent,
            )
            item = from_ddb(raw)
            self.observe(item)
            if decide is not None or not self._follow(data_class, subject, item):
                return item if tombstones or is_live(item, self.wall()) else None
        raise self._too_many_hops(data_class, "read")

    def query(
        self,
        data_class: str,
        partition_value: Any,
        subject: str | None,
        *,
        limit: int | None,
        consistent: bool,
    ) -> list[dict[str, Any]]:
        pk = self.pk[data_class]
        value = _to_value(partition_value)

        def call(route: Route, client: Any) -> list[dict[str, Any]]:
            return self._query_pages(client, route.table_name, pk, value, limit, consistent)

        for _ in range(MAX_HOPS):
            decide = self.decider(data_class, subject, "read")
            raw, _route = self.transport.call(decide, "read", call)
            items = [from_ddb(i) or {} for i in raw]
            for item in items:
                self.observe(item)
            moved = next((i for i in items if tombstone_kind(i) == MOVED), None)
            if not self._follow(data_class, subject, moved):
                now = self.wall()
                live = [i for i in items if is_live(i, now)]
                return live[:limit] if limit is not None else live
        raise self._too_many_hops(data_class, "read")

    def _query_pages(
        self,
        client: Any,
        table: str,
        pk: str,
        value: Any,
        limit: int | None,
        consistent: bool,
    ) -> list[dict[str, Any]]:
        """Pages until ``limit`` live items (tombstones do not count) or the end."""
        out: list[dict[str, Any]] = []
        live = 0
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": pk},
            "ExpressionAttributeValues": {":pk": value},
            "ConsistentRead": consistent,
        }
        while True:
            if limit is not None:
                kwargs["Limit"] = max(1, limit - live)
            page = client.query(**kwargs)
            got = page.get("Items", [])
            out.extend(got)
            now = self.wall()
            live += sum(1 for i in got if is_live(from_ddb(i), now))
            start = page.get("LastEvaluatedKey")
            if not start or (limit is not None and live >= limit):
                return out
            kwargs["ExclusiveStartKey"] = start

    def read_at(
        self, data_class: str, subject: str, region: str, jurisdiction: str
    ) -> list[dict[str, Any]]:
        """Every item (tombstones included) of a pinned subject in one region, consistently."""
        route = self.routes.at(data_class, region, jurisdiction, "read")
        pk, value = self.pk[data_class], _to_value(subject)

        def call(r: Route, client: Any) -> list[dict[str, Any]]:
            return self._query_pages(client, r.table_name, pk, value, None, True)

        items = [from_ddb(i) or {} for i in self.transport.call_at(route, call)]
        for item in items:
            self.observe(item)  # a fence written next is stamped after all of them
        return items

    def _follow(self, data_class: str, subject: str | None, item: dict[str, Any] | None) -> bool:
        """A pinned request met a ``moved`` fence: learn the new home; True to retry there."""
        if subject is None or data_class not in self.pinned or tombstone_kind(item) != MOVED:
            return False
        assert item is not None
        self.homes.learn_moved(subject, str(item[TO_ATTR]))
        log.info("followed a move fence", data_class=data_class)
        return True

    def _too_many_hops(self, data_class: str, op: str) -> BackendError:
        return BackendError(
            operation=op,
            region="several",
            code="MoveLoop",
            reason=f"{data_class}: {MAX_HOPS} move fences in a row; run `regionkit users "
            "move --resume` for this user",
        )

    def expires_at(self) -> int:
        """The TTL (epoch seconds) of a tombstone written now."""
        return int(self.wall()) + self.retention_s


def _random_token() -> str:
    """A write request's idempotency token: 64 random bits, kept across its retries.

    Unique, not secret (it only tells a retry that its first attempt landed), so it
    comes from the random module's generator (seeded from the OS, and again in a
    forked child) rather than a system call on every write.
    """
    return f"{random.getrandbits(64):016x}"


def directed(route: Route) -> Decide:
    """A decision that is always ``route``, with no failover (the caller named the region)."""

    def decide(exclude: tuple[str, ...]) -> Route:
        if exclude:
            raise RegionUnavailable(
                data_class=route.data_class, scope=route.region, reason="the named region failed"
            )
        return route

    return decide
