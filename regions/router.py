"""The region router: every read and write goes straight to the right region.

``RegionRouter`` is a thin facade over four rooms, each in its own modules:

=====================  ===================================================================
:mod:`regions.routing`  pure decisions: precomputed candidate chains, the residency guard
:mod:`regions.transport`  one request to its route, failover on connection trouble;
                        hedged reads (:mod:`regions.hedging`)
:mod:`regions.versioned` / :mod:`regions.writes`  the stamped, conditional protocol,
                        tombstones, merges (:mod:`regions.conditions`, :mod:`regions.causal`)
:mod:`regions.users`    the directory (a system class), sign-up; moves (:mod:`regions.moves`)
=====================  ===================================================================

What it guarantees, and what enforces each promise, is in the README ("What regionkit
guarantees") and in each room's docstring: pinned data by its own key, the directory
and the move fences (:mod:`regions.users`, :mod:`regions.moves`); no PII in global
classes by the guard; versions and tombstones by each write's condition
(:mod:`regions.versioned`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from regions.directory import DirectoryCache, DirectoryEntry, check_cache_ttl
from regions.erasure import Eraser, ErasureResult
from regions.health import RegionHealth
from regions.hedging import HedgePolicy
from regions.hlc import HLC, wall_clock_ms
from regions.merging import MergeFunctions
from regions.metrics import RequestMetrics, router_metrics
from regions.moves import MoveResult, Moves
from regions.pool import ClientPool
from regions.queries import BatchGetResult, BatchWriteResult, Page, Queries, Sort
from regions.routing import Op, Route, RouteTable
from regions.serialize import with_expiry
from regions.subjects import Location, Subjects
from regions.transactions import Op as TxOp
from regions.transactions import Transactions
from regions.transport import RetryPolicy, Transport
from regions.users import Users
from regions.versioned import VersionedStore, Written
from regions.writes import Writer
from residency.clients import ClientProvider
from residency.guard import ResidencyGuard
from residency.policy import Policy
from residency.pseudonym import Pseudonymizer
from residency.settings import RouterConfig

__all__ = ["MoveResult", "RegionRouter", "Route", "Written"]


class RegionRouter:
    """Routes and performs reads and writes for every data class of a policy."""

    def __init__(
        self,
        policy: Policy,
        *,
        region: str | None = None,
        clients: ClientProvider | None = None,
        health: RegionHealth | None = None,
        config: RouterConfig | None = None,
        clock: HLC | None = None,
        physical_clock: Callable[[], int] | None = None,
        directory: DirectoryCache | None = None,
        pseudonymizer: Pseudonymizer | None = None,
        wall_clock: Callable[[], float] | None = None,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.policy = policy
        self.config = s = config if config is not None else RouterConfig()
        self.region = region if region is not None else s.region
        if self.region is None and s.mode == "aws" and clients is None:
            s.require_region()  # exit 2 naming the sources; never a silent first region
        if self.region is not None:
            policy.check_region(self.region)
        self._owns_clients = clients is None
        self.clients: ClientProvider = clients or ClientPool(s)
        self.health = health or RegionHealth(
            policy.regions,
            failures=s.breaker_failures,
            reset_seconds=s.breaker_reset_seconds,
            probe_lease_seconds=s.probe_lease_seconds,
        )
        self.guard = ResidencyGuard(policy)
        self.clock = clock or HLC(
            self.region or policy.regions[0],
            physical=physical_clock or wall_clock_ms,
            max_offset_ms=s.hlc_max_offset_ms,
            adopt_drift_ms=s.hlc_adopt_drift_ms,
        )
        cache = directory or DirectoryCache(s.directory_cache_size, s.directory_cache_ttl_seconds)
        check_cache_ttl(policy.system.tombstone_retention_days, cache.ttl)
        self.pseudonymize = pseudonymizer or s.pseudonymizer()
        tables = {n: s.table_name(dc.table) for n, dc in policy.data_classes.items()}
        self.routes = RouteTable(policy, tables, self.guard, self.health)
        self.metrics = metrics or router_metrics(policy.name, self.region, s.metrics)
        self.transport = Transport(
            self.clients,
            self.health,
            policy=RetryPolicy.from_config(s),
            hedge=HedgePolicy.from_config(policy, s),
            metrics=metrics,
        )
        self.merge_function = MergeFunctions(s.merge_modules)
        self.store = VersionedStore(
            policy,
            self.routes,
            self.transport,
            self.clock,
            self.guard,
            self,
            self.pseudonymize,
            region=self.region,
            merge_resolver=self.merge_function,
            wall=wall_clock or time.time,  # tombstone expiries; the simulation's virtual time
        )
        self.writer = Writer(self.store)
        self.users = Users(policy, self.store, self.writer, self.routes, self.health, cache)
        self.moves = Moves(self.users)
        for name, ref in self.store.merges.items():  # refuse a bad reference at start-up
            self.merge_function(name, ref)
        self.queries = Queries(self.store, self.writer)
        self.transactions = Transactions(self.store)
        self.subjects = Subjects(policy, self.store, self.users)
        self.eraser = Eraser(
            policy, self.store, self.writer, self.users, self.subjects, now=self.store.wall
        )

    @classmethod
    def from_env(cls, policy: Policy | None = None, **kwargs: Any) -> RegionRouter:
        """A router configured the way the CLI is: ``REGIONKIT_*`` variables, ``.env`` in
        the working directory, the ``regionkit local up`` state file and (aws mode) the
        AWS region (:mod:`residency.settings`). The policy is loaded from
        ``REGIONKIT_POLICY`` unless given. The only constructor that reads the
        environment: ``RegionRouter(policy, config=RouterConfig(...))`` reads nothing."""
        from residency.policy import load_policy
        from residency.settings import load_settings

        s = load_settings()
        if policy is None:
            policy = load_policy(
                s.policy, max_bytes=s.policy_max_bytes, merge_modules=s.merge_modules
            )
        return cls(policy, config=s, **kwargs)

    # --- lifecycle ---

    def close(self) -> None:
        """Close the client pool if this router created it, and the hedging threads; emit
        the request metrics counted since the last line."""
        if self.metrics is not None:
            self.metrics.flush()
        self.transport.close()
        if self._owns_clients:
            closer = getattr(self.clients, "close", None)
            if callable(closer):
                closer()

    def __enter__(self) -> RegionRouter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the directory cache (replaceable, e.g. with an injected clock) ---

    @property
    def directory(self) -> DirectoryCache:
        return self.users.cache

    @directory.setter
    def directory(self, cache: DirectoryCache) -> None:
        self.users.cache = cache

    # --- counters ---

    @property
    def failovers(self) -> int:
        return self.transport.failovers

    @property
    def drift_flags(self) -> int:
        return self.store.drift_flags

    # --- the Homes protocol (the store asks where a pinned subject lives) ---

    def home_for(self, user_id: str, op: Op) -> DirectoryEntry:
        return self.users.home_for(user_id, op)

    def learn_moved(self, user_id: str, to_region: str) -> DirectoryEntry:
        return self.users.learn_moved(user_id, to_region)

    # --- users and the directory ---

    def jurisdiction_for_country(self, country: str) -> str:
        return self.users.jurisdiction_for_country(country)

    def new_user_id(self, *, country: str, idempotency_key: str | None = None) -> str:
        """Mint a user ID for a resident of ``country``, homed in the first healthy home region.

        With an ``idempotency_key`` (a sign-up request ID) the same ID comes back on retry.
        The ID alone homes nobody: ``assign_home`` must follow.
        """
        return self.users.new_user_id(country=country, idempotency_key=idempotency_key)

    def assign_home(self, user_id: str, *, country: str) -> DirectoryEntry:
        """Record the user's home in the directory. Idempotent: an existing entry is kept."""
        return self.users.assign_home(user_id, country=country)

    def home_of(self, user_id: str) -> DirectoryEntry:
        """The subject's home: the cache, else the directory."""
        return self.users.home_for(user_id, "read")

    def move_user(
        self, user_id: str, *, country: str | None = None, region: str | None = None
    ) -> MoveResult:
        """Re-home a user (resumable; see :mod:`regions.moves` for the protocol)."""
        return self.moves.move_user(user_id, country=country, region=region)

    def pending_moves(self) -> list[DirectoryEntry]:
        return self.users.pending_moves()

    # --- data-subject requests ---

    def locate_subject(self, user_id: str, *, scan: bool = False) -> Location:
        """Every item of the subject in every region and class (keys only, pseudonymized)."""
        return self.subjects.locate(user_id, scan=scan)

    def export_subject(self, user_id: str, *, transfer_basis: str | None = None) -> dict[str, Any]:
        """The subject's own data, read from inside their jurisdiction; refused to a router
        outside it unless ``transfer_basis`` names the transfer's legal basis."""
        return self.subjects.export(user_id, transfer_basis=transfer_basis)

    def erase_subject(self, user_id: str) -> ErasureResult:
        """Erase the subject everywhere (resumable; see :mod:`regions.erasure`)."""
        return self.eraser.erase(user_id)

    def pending_erasures(self) -> list[DirectoryEntry]:
        return self.users.records("erasing")

    # --- routing ---

    def route(self, data_class: str, subject: str | None = None, op: Op = "read") -> Route:
        """Where a request for ``data_class`` (of ``subject``) goes now, and why.

        Only a look: it takes no half-open probe lease (a region whose breaker is half-open
        is reported as the route the next call would probe), so deciding without calling
        can never lock a region out.
        """
        kind = self.routes.kinds.get(data_class)
        if kind == "pinned" and subject is not None:  # the hot paths, inlined
            # A look only: a cached hint may explain a decision; an actual write goes
            # through Users.home_for, which never lets a hint serve it.
            entry = self.users.cache.get(subject) or self.users.lookup(subject, op)
            return self.routes.look(data_class, entry.home_region, entry.jurisdiction, op)
        if kind == "global" and self.region is not None:
            return self.routes.look(data_class, self.region, None, op)
        decide = self.store.decider(data_class, subject, op)
        with self.health.peeking():
            return decide(())

    def chain(self, data_class: str, origin: str) -> tuple[Route, ...]:
        return self.routes.chain(data_class, origin)

    def iter_routes(self) -> Iterator[tuple[tuple[str, str], tuple[Route, ...]]]:
        yield from self.routes.items()

    # --- data access ---

    def get(
        self,
        data_class: str,
        key: dict[str, Any],
        *,
        subject: str | None = None,
        consistent: bool = False,
    ) -> dict[str, Any] | None:
        """Read one item (as Python values), or None (also for a deleted one)."""
        subject = self.store.subject_of(data_class, key, subject)
        return self.store.get(data_class, key, subject, consistent)

    def put(
        self,
        data_class: str,
        item: dict[str, Any],
        *,
        subject: str | None = None,
        based_on: str | dict[str, Any] | None = None,
        create_only: bool = False,
        expires_at: int | datetime | None = None,
    ) -> Written:
        """Write a whole item, stamped and conditional.

        ``based_on``: the item you read, or its version (``item["rk_v"]``), for a
        compare-and-set; without it the write succeeds unless the item already
        holds a newer version. ``create_only``: fail if the item exists. Raises
        StaleWrite, or merges where the data class names a merge function.
        ``expires_at`` (epoch seconds or a datetime) sets the item's TTL.
        """
        self.users.refuse_writes(data_class)
        if expires_at is not None:
            item = with_expiry(item, expires_at)
        return self.writer.put(data_class, item, subject, based_on, create_only)

    def update(
        self,
        data_class: str,
        key: dict[str, Any],
        changes: dict[str, Any],
        *,
        subject: str | None = None,
        based_on: str | dict[str, Any] | None = None,
    ) -> Written:
        """Set attributes of one item (stamped, conditional like ``put``)."""
        self.users.refuse_writes(data_class)
        return self.writer.update(data_class, key, changes, subject, based_on)

    def delete(
        self,
        data_class: str,
        key: dict[str, Any],
        *,
        subject: str | None = None,
        based_on: str | dict[str, Any] | None = None,
    ) -> Written:
        """Delete one item: a versioned tombstone, unless it holds a newer version."""
        self.users.refuse_writes(data_class)
        return self.writer.delete(data_class, key, subject, based_on)

    def query(
        self,
        data_class: str,
        partition_value: Any,
        *,
        subject: str | None = None,
        sort: Sort | None = None,
        descending: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
        index: str | None = None,
        projection: Sequence[str] | None = None,
        consistent: bool = False,
    ) -> Page:
        """One page of a partition (of the table, or of a policy-declared ``index``).

        One request per call: ``page.cursor`` (opaque, bound to this query) fetches the
        next page; None means there is no more. Tombstones are hidden.
        """
        return self.queries.query(
            data_class,
            partition_value,
            subject,
            sort=sort,
            descending=descending,
            limit=limit,
            cursor=cursor,
            index=index,
            projection=projection,
            consistent=consistent,
        )

    def batch_get(
        self, data_class: str, keys: Sequence[dict[str, Any]], *, consistent: bool = False
    ) -> BatchGetResult:
        """Many items, each routed by its own key; ``unread`` lists keys not read in time."""
        return self.queries.batch_get(data_class, keys, consistent=consistent)

    def batch_write(
        self,
        data_class: str,
        *,
        puts: Sequence[dict[str, Any]] = (),
        deletes: Sequence[dict[str, Any]] = (),
    ) -> BatchWriteResult:
        """Stamped, conditional writes, concurrently per region; ``failed`` lists refusals."""
        self.users.refuse_writes(data_class)
        return self.queries.batch_write(data_class, puts=puts, deletes=deletes)

    def transact(self, ops: Sequence[TxOp], *, based_on: dict[int, str] | None = None) -> Written:
        """All or nothing, inside one region (see :mod:`regions.transactions`)."""
        for _, data_class, _ in ops:
            self.users.refuse_writes(data_class)
        return self.transactions.transact(ops, based_on=based_on)

    def observe(self, item: dict[str, Any] | None) -> None:
        """Merge a read item's stamp into our clock, flagging (not adopting) a drifted one."""
        self.store.observe(item)
