"""Users: the directory (a system class), sign-up, and re-homing between jurisdictions.

**The directory decides, never the caller or the ID.** A pinned request needs the
subject's directory entry; only :meth:`Users.assign_home` (which maps a country to
its jurisdiction through the policy) and ``move_user`` (:mod:`regions.moves`) write
it. The generic ``put``/``update``/``delete`` refuse the directory class.

**Sign-up from any region.** ``assign_home`` writes the entry to the directory
replica *in the user's home region* (the region minted into the ID), with a
create-only condition. A router in another process that has no entry cached
reads its nearest directory replica; when that has nothing yet (replication is
asynchronous) it reads the home region's replica with a consistent read, which
holds the entry from the moment ``assign_home`` returned. With no entry anywhere
the request is refused (:class:`~residency.errors.UnassignedUser`). Only when the
directory cannot be reached at all may a *read* go by the hint in the ID (it can
only reach the hint's jurisdiction, where a move fence redirects it); a write
never does. Every change of an entry is made at that one replica (the user's
*authority*), so conditions serialise two racing changes; while it is unreachable,
changes wait (``RegionUnavailable``) rather than fork the directory.

**Re-homing** (``move_user``) is :mod:`regions.moves`: it writes the entry here
(through :meth:`Users.write_entry`, at the authority replica) and fences the old home.
"""

from __future__ import annotations

from typing import Any

from regions.directory import DirectoryCache, DirectoryEntry
from regions.health import RegionHealth
from regions.ids import mint_user_id, parse_user_id
from regions.routing import Op, RouteTable
from regions.tombstones import tombstone_kind
from regions.versioned import VersionedStore, directed
from regions.writes import Writer
from residency.errors import (
    BackendError,
    ConfigError,
    CorruptRecord,
    RegionUnavailable,
    StaleWrite,
    Throttled,
    UnassignedUser,
    UnknownCountry,
)
from residency.logs import get_logger
from residency.policy import PinnedDataClass, Policy

__all__ = ["Users"]

log = get_logger("regionkit.audit")

_STATUSES = frozenset({"active", "moving", "verifying", "erasing"})


class Users:
    """Directory lookups (cached), sign-up and moves for one router."""

    def __init__(
        self,
        policy: Policy,
        store: VersionedStore,
        writer: Writer,
        routes: RouteTable,
        health: RegionHealth,
        cache: DirectoryCache,
    ) -> None:
        self.policy = policy
        self.store = store
        self.writer = writer
        self.routes = routes
        self.health = health
        self.cache = cache
        self.dir_class = policy.system.directory
        self.dpk = policy.data_classes[self.dir_class].partition_key
        self.pinned = [
            n for n, dc in policy.data_classes.items() if isinstance(dc, PinnedDataClass)
        ]
        self._dir_replicas = frozenset(self.routes.guard.allowed(self.dir_class, None))

    # --- lookups (the Homes protocol of the store) ---

    def home_for(self, user_id: str, op: Op) -> DirectoryEntry:
        entry = self.cache.get(user_id)
        if entry is None or (op == "write" and entry.source == "id-hint"):
            return self.lookup(user_id, op)  # a hint may serve reads, never a write
        return entry

    def lookup(self, user_id: str, op: Op) -> DirectoryEntry:
        """The directory entry after a cache miss (see the module docstring)."""
        uid = parse_user_id(user_id)
        try:
            entry = self.read_entry(user_id)
            if entry is None and uid.home_hint in self._dir_replicas:
                entry = self.read_entry(user_id, region=uid.home_hint, consistent=True)
        except (RegionUnavailable, BackendError) as exc:
            if op == "write" or isinstance(exc, Throttled):  # a throttle is an answer
                raise
            jid = self.policy.jurisdiction_of_region(uid.home_hint)
            hint = DirectoryEntry(user_id, uid.home_hint, jid, source="id-hint")
            self.cache.put(hint, ttl=min(5.0, self.cache.ttl))
            return hint
        if entry is None:
            raise UnassignedUser(
                user=user_id, data_class="pinned data", op="read" if op == "read" else "written"
            )
        self.cache.put(entry)
        return entry

    def learn_moved(self, user_id: str, to_region: str) -> DirectoryEntry:
        """A ``moved`` fence names the new home: trust it (only move_user writes one)."""
        self.policy.check_region(to_region)
        jid = self.policy.jurisdiction_of_region(to_region)
        entry = DirectoryEntry(user_id, to_region, jid, source="fence")
        self.cache.put(entry)
        return entry

    def read_entry(
        self, user_id: str, *, region: str | None = None, consistent: bool = False
    ) -> DirectoryEntry | None:
        key = {self.dpk: user_id}
        decide = None
        if region is not None:
            decide = directed(self.routes.at(self.dir_class, region, None, "read"))
        item = self.store.get(self.dir_class, key, None, consistent, decide=decide)
        return self.entry(user_id, item) if item else None

    def entry(self, user_id: str, item: dict[str, Any]) -> DirectoryEntry:
        """A stored directory item as an entry, refused (:class:`CorruptRecord`, naming the
        field, never the value) unless it holds what regionkit writes: regions and a
        jurisdiction of the policy that agree, and a known status."""
        p = self.policy

        def bad(field: str) -> CorruptRecord:
            return CorruptRecord(
                kind="directory entry",
                record=user_id,
                field=field,
                fix="restore it from a backup, or delete it and assign the user's home again",
            )

        for field in ("home_region", "moving_to", "moved_from"):
            value = item.get(field)
            if (value is not None or field == "home_region") and value not in p.regions:
                raise bad(field)
        jid = item.get("jurisdiction")
        if not isinstance(jid, str) or jid != p.jurisdiction_of_region(item["home_region"]):
            raise bad("jurisdiction")
        status = item.get("status", "active")
        if not isinstance(status, str) or status not in _STATUSES:
            raise bad("status")
        return DirectoryEntry.from_item(user_id, item)

    def authority(self, user_id: str) -> str | None:
        """The directory replica where a user's entry is written and read authoritatively.

        One replica per user (the home region minted into the ID) serialises every
        change of the entry: conditions are evaluated per replica, so two moves
        racing through two replicas could otherwise both succeed.
        """
        hint = parse_user_id(user_id).home_hint
        return hint if hint in self._dir_replicas else None

    def refuse_writes(self, data_class: str) -> None:
        """The directory is written only through sign-up and moves, never as data."""
        if data_class == self.dir_class:
            raise ConfigError(
                message=f"{data_class!r} is the user directory, a system class: change it only "
                "with router.assign_home(user_id, country=...) or router.move_user(...)"
            )

    def fence_of(self, user_id: str) -> str | None:
        """The tombstone kind (``erased``, ``moved``...) of the user's directory item at its
        authority replica, consistently; None when the item is live or absent."""
        region = self.authority(user_id) or min(self._dir_replicas)
        decide = directed(self.routes.at(self.dir_class, region, None, "read"))
        item = self.store.get(
            self.dir_class, {self.dpk: user_id}, None, True, decide=decide, tombstones=True
        )
        return tombstone_kind(item) if item else None

    def read_authoritative(self, user_id: str) -> DirectoryEntry | None:
        """A consistent read at the user's authority replica (RegionUnavailable if down)."""
        return self.read_entry(user_id, region=self.authority(user_id), consistent=True)

    def write_entry(
        self,
        entry: DirectoryEntry,
        *,
        based_on: str | None = None,
        create_only: bool = False,
    ) -> str:
        """Write an entry at its authority replica, conditionally.

        There is no fallback to another replica: an entry changed elsewhere would leave
        the authority stale, and the next change there would not see it. While the
        authority is unreachable, sign-up and moves of its users wait (RegionUnavailable).
        """
        item = {self.dpk: entry.user_id, **entry.to_item()}
        region = self.authority(entry.user_id)
        decide = directed(self.routes.at(self.dir_class, region, None, "write")) if region else None
        return self.writer.put(
            self.dir_class, item, None, based_on, create_only, decide=decide
        ).version

    # --- sign-up ---

    def jurisdiction_for_country(self, country: str) -> str:
        from iso3166 import countries_by_alpha2

        code = country.strip().upper() if isinstance(country, str) else ""
        if code not in countries_by_alpha2:
            raise UnknownCountry(country=code[:2] if len(code) <= 3 else "(not a country code)")
        return self.policy.jurisdiction_of_country(code)

    def new_user_id(self, *, country: str, idempotency_key: str | None = None) -> str:
        """A user ID minted in the first home region of the country's jurisdiction whose
        breaker would admit a request (a look: no half-open probe lease is taken)."""
        jid = self.jurisdiction_for_country(country)
        homes = self.policy.jurisdictions[jid].home_regions
        home = next((r for r in homes if self.health.would_admit(r)), homes[0])
        return mint_user_id(home, idempotency_key=idempotency_key)

    def assign_home(self, user_id: str, *, country: str) -> DirectoryEntry:
        """Record the user's home (create-only, in the home region's directory replica)."""
        uid = parse_user_id(user_id)
        jid = self.jurisdiction_for_country(country)
        hint_j = self.policy.jurisdiction_of_region(uid.home_hint)
        if hint_j != jid:
            raise ConfigError(
                message=f"user ID {user_id} was minted for {uid.home_hint} ({hint_j}) but the "
                f"country maps to {jid}; mint the ID with new_user_id(country=...) for the "
                "same country"
            )
        entry = DirectoryEntry(user_id, uid.home_hint, jid)
        try:
            version = self.write_entry(entry, create_only=True)
            entry = DirectoryEntry(user_id, uid.home_hint, jid, version=version)
        except StaleWrite:  # an entry exists already: keep it (idempotent sign-up)
            existing = self.read_authoritative(user_id)
            if existing is None:
                raise
            if existing.jurisdiction != jid and existing.moving_to is None:
                raise ConfigError(
                    message=f"user {user_id} is already homed in {existing.jurisdiction}; "
                    "use move_user to change it"
                ) from None
            entry = existing
        self.cache.put(entry)
        return entry

    # --- moves ---

    def pending_moves(self) -> list[DirectoryEntry]:
        """Directory entries of unfinished moves (``moving`` or ``verifying``), by a scan."""
        return self.records("moving", "verifying")

    def records(self, *statuses: str) -> list[DirectoryEntry]:
        """Directory entries in any of ``statuses`` (durable move/erasure records), by a scan."""
        route = self.routes.pick(
            self.dir_class, self.store.region or self.policy.regions[0], None, "read"
        )

        values = {f":s{i}": {"S": st} for i, st in enumerate(statuses)}

        def call(r: Any, client: Any) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {
                "TableName": r.table_name,
                "FilterExpression": "#s IN (" + ", ".join(values) + ")",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": values,
            }
            while True:
                page = client.scan(**kwargs)
                out.extend(page.get("Items", []))
                if not page.get("LastEvaluatedKey"):
                    return out
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

        from regions.codec import from_ddb

        raw = self.store.transport.call_at(route, call)
        out: list[DirectoryEntry] = []
        for item in (from_ddb(i) or {} for i in raw):
            user = str(item[self.dpk])
            try:
                out.append(self.entry(user, item))
            except CorruptRecord as exc:  # one bad entry never hides the others' moves
                log.warning(
                    "corrupt directory entry skipped",
                    user=self.store.pseudonymize(user, scope="subject"),
                    field=exc.facts["field"],
                )
        return out
