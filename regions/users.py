"""Users: the directory (a system class), sign-up, and re-homing between jurisdictions.

**The directory decides, never the caller or the ID.** A pinned request needs the
subject's directory entry; only :meth:`Users.assign_home` (which maps a country to
its jurisdiction through the policy) and :meth:`Users.move_user` write it. The
generic ``put``/``update``/``delete`` refuse the directory class.

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

**Re-homing** (``move_user``), in order; what each crash point leaves:

1. The directory entry becomes ``moving`` (compare-and-set on the version read):
   the durable move record. *Crash:* the old state plus the record; ``--resume``
   (or calling ``move_user`` again) continues.
2. Every region of the old jurisdiction is read with consistent reads; the newest
   version of each item (highest HLC stamp) is copied to the new home region,
   *keeping its stamp*, unless the new home already holds a newer one.
   *Crash:* a copy in the new home, the data still in the old one.
3. Every region of the old jurisdiction gets a ``moved`` fence (a tombstone naming
   the new home region), conditional on the item not having changed past the
   version copied. A write that slipped in makes the condition fail, and the round
   starts again from 2. *Crash:* some old regions fenced; routers that meet a
   fence follow it to the new home, where the copy is.
4. The directory entry switches to the new home with status ``verifying``.
5. Every old region is read again; when each holds only fences the entry becomes
   ``active`` and the move is ``done``. An unreachable region leaves it
   ``pending`` (the record stays; the audit and ``users move --resume`` see it).

From step 3 on, no router in any process can write the user's pinned data in the
old jurisdiction, whatever its cache says: the fence is part of every write's
condition there, evaluated by DynamoDB. Pinned classes with a sort key are
fenced item by item (the items that exist), so a stale router could still
create a *new* sort-key item there until its cache expires; the audit reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from regions.codec import VERSION_ATTR
from regions.directory import DirectoryCache, DirectoryEntry
from regions.health import RegionHealth
from regions.ids import parse_user_id
from regions.routing import Op, RouteTable
from regions.tombstones import DELETED, MOVED, tombstone_kind
from regions.versioned import VersionedStore, directed
from regions.writes import Writer
from residency.errors import (
    BackendError,
    ConfigError,
    RegionkitError,
    RegionUnavailable,
    StaleWrite,
    UnassignedUser,
    UnknownCountry,
)
from residency.logs import get_logger
from residency.policy import PinnedDataClass, Policy

__all__ = ["MoveResult", "Users"]

audit_log = get_logger("regionkit.audit")

MAX_ROUNDS = 5


@dataclass(frozen=True)
class MoveResult:
    user_id: str
    from_region: str
    to_region: str
    from_jurisdiction: str
    to_jurisdiction: str
    profile_copied: bool
    steps: list[str] = field(default_factory=list)
    status: Literal["done", "pending"] = "done"
    reason: str = ""


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
        except (RegionUnavailable, BackendError):
            if op == "write":
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
        return DirectoryEntry.from_item(user_id, item) if item else None

    def authority(self, user_id: str) -> str | None:
        """The directory replica where a user's entry is written and read authoritatively.

        One replica per user (the home region minted into the ID) serialises every
        change of the entry: conditions are evaluated per replica, so two moves
        racing through two replicas could otherwise both succeed.
        """
        hint = parse_user_id(user_id).home_hint
        return hint if hint in self._dir_replicas else None

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

    def _target(self, entry: DirectoryEntry, country: str | None, region: str | None) -> str:
        if region is None and country is not None:
            jid = self.jurisdiction_for_country(country)
            homes = self.policy.jurisdictions[jid].home_regions
            region = next((r for r in homes if self.health.available(r)), homes[0])
        if region is None and entry.status == "moving" and entry.moving_to:
            region = entry.moving_to  # resume the recorded move
        if region is None and entry.status in ("moving", "verifying"):
            region = entry.home_region
        if region is None:
            raise ConfigError(message="move_user needs country= or region= (or a move to resume)")
        self.policy.check_region(region)
        return region

    def move_user(
        self, user_id: str, *, country: str | None = None, region: str | None = None
    ) -> MoveResult:
        """Re-home a user, resumably (the protocol is in the module docstring)."""
        parse_user_id(user_id)
        self.cache.invalidate(user_id)  # a move starts from the directory, never a cache
        entry = self.read_authoritative(user_id)
        if entry is None:
            raise UnassignedUser(user=user_id, data_class="pinned data", op="moved")
        target = self._target(entry, country, region)
        to_j = self.policy.jurisdiction_of_region(target)
        steps: list[str] = []
        if entry.status == "moving" and entry.moving_to not in (None, target):
            raise ConfigError(
                message=f"user {user_id} has an unfinished move to {entry.moving_to}; "
                "resume it first (regionkit users move --resume)"
            )
        if entry.status == "erasing":
            raise ConfigError(
                message=f"user {user_id} is being erased; finish it (regionkit subject erase "
                "--resume) before any move"
            )
        if entry.status == "verifying" and entry.home_region != target:
            raise ConfigError(
                message=f"user {user_id} has an unfinished move to {entry.home_region}; "
                "resume it first (regionkit users move --resume)"
            )
        if entry.status == "verifying" and entry.moved_from:
            from_region = entry.moved_from
        elif entry.home_region == target and entry.status == "active":
            return MoveResult(user_id, target, target, to_j, to_j, False, ["already there"])
        else:
            from_region = entry.home_region
        from_j = self.policy.jurisdiction_of_region(from_region)
        version = entry.version
        if from_j == to_j:  # the pinned table already replicates inside the jurisdiction
            self.write_entry(DirectoryEntry(user_id, target, to_j), based_on=version)
            return self._finish(user_id, from_region, target, from_j, to_j, False, ["directory"])
        if entry.status == "active":
            record = DirectoryEntry(
                user_id, from_region, from_j, "moving", moving_to=target, moved_from=None
            )
            version = self.write_entry(record, based_on=version)
            steps.append(f"directory: moving {from_region} -> {target}")
            audit_log.info("residency.move.started", from_jurisdiction=from_j, to_jurisdiction=to_j)
        return self._move_data(user_id, from_region, target, from_j, to_j, version, steps)

    def _move_data(
        self,
        user_id: str,
        from_region: str,
        target: str,
        from_j: str,
        to_j: str,
        version: str | None,
        steps: list[str],
    ) -> MoveResult:
        copied = False
        try:
            for _ in range(MAX_ROUNDS):
                done, any_copied = self._round(user_id, target, from_j, to_j, steps)
                copied = copied or any_copied
                if done:
                    break
            else:
                return self._pending(
                    user_id,
                    from_region,
                    target,
                    from_j,
                    to_j,
                    copied,
                    steps,
                    "writes kept landing in the old jurisdiction",
                )
            verifying = DirectoryEntry(user_id, target, to_j, "verifying", moved_from=from_region)
            current = self.read_authoritative(user_id)
            if current is None or current.status != "verifying":
                self.write_entry(verifying, based_on=current.version if current else version)
                steps.append(f"directory: home is {target} (verifying)")
            self.cache.put(verifying)
            left = self._unfenced(user_id, from_j)
        except Exception as exc:
            if not isinstance(exc, (RegionkitError, *_botocore_errors())):
                raise
            reason = f"{type(exc).__name__} in {getattr(exc, 'regionkit_region', '') or 'a region'}"
            return self._pending(user_id, from_region, target, from_j, to_j, copied, steps, reason)
        if left:
            return self._pending(
                user_id,
                from_region,
                target,
                from_j,
                to_j,
                copied,
                steps,
                f"personal data still readable in {', '.join(left)}",
            )
        current = self.read_authoritative(user_id)
        active = DirectoryEntry(user_id, target, to_j, "active", moved_from=from_region)
        self.write_entry(active, based_on=current.version if current else None)
        steps.append(f"directory: home is {target}")
        return self._finish(user_id, from_region, target, from_j, to_j, copied, steps)

    def _round(
        self, user_id: str, target: str, from_j: str, to_j: str, steps: list[str]
    ) -> tuple[bool, bool]:
        """Copy the newest of every item to ``target`` and fence the old regions.

        Returns (every fence held, anything copied).
        """
        old_regions = self.policy.jurisdictions[from_j].regions
        fenced, copied = True, False
        for dc in self.pinned:
            seen = {r: self.store.read_at(dc, user_id, r, from_j) for r in old_regions}
            newest: dict[tuple[Any, ...], dict[str, Any]] = {}
            keys: dict[tuple[Any, ...], dict[str, Any]] = {}
            for items in seen.values():
                for item in items:
                    k = self._keytuple(dc, item)
                    keys.setdefault(k, item)
                    if tombstone_kind(item) == MOVED:
                        continue  # a fence (ours, or an old move's) is never the data to keep
                    if str(item.get(VERSION_ATTR, "")) > str(
                        newest.get(k, {}).get(VERSION_ATTR, "")
                    ):
                        newest[k] = item
            for k, item in keys.items():  # keys seen only as fences: fence them again
                newest.setdefault(k, {f: v for f, v in item.items() if not f.startswith("rk_")})
            if self.store.sk[dc] is None:
                newest.setdefault((user_id,), {self.store.pk[dc]: user_id})
            # Data, and versioned deletes (a stale write must meet them in the new home too).
            movable = [i for i in newest.values() if tombstone_kind(i) in (None, DELETED)]
            for item in movable:
                if VERSION_ATTR not in item:
                    continue
                route = self.routes.at(dc, target, to_j, "write")
                if self.writer.copy_at(route, item) and not tombstone_kind(item):
                    copied = True
                    steps.append(f"{dc}: copied to {target}")
            for r in old_regions:
                for item in newest.values():
                    key = self.store.key_of(dc, item)
                    ok = self.writer.fence_at(
                        self.routes.at(dc, r, from_j, "write"),
                        key,
                        kind=MOVED,
                        newest=str(item.get(VERSION_ATTR, "")),
                        to_region=target,
                    )
                    fenced = fenced and ok
            steps.append(f"{dc}: fenced in {', '.join(old_regions)}" if fenced else f"{dc}: retry")
        return fenced, copied

    def _keytuple(self, dc: str, item: dict[str, Any]) -> tuple[Any, ...]:
        sk = self.store.sk[dc]
        pk = item[self.store.pk[dc]]
        return (pk,) if sk is None else (pk, item.get(sk))

    def _unfenced(self, user_id: str, from_j: str) -> list[str]:
        """Old regions where a consistent read still finds live pinned data."""
        left = []
        for r in self.policy.jurisdictions[from_j].regions:
            for dc in self.pinned:
                items = self.store.read_at(dc, user_id, r, from_j)
                if any(not tombstone_kind(i) for i in items):
                    left.append(r)
                    break
        return left

    def _pending(
        self,
        user_id: str,
        from_region: str,
        target: str,
        from_j: str,
        to_j: str,
        copied: bool,
        steps: list[str],
        reason: str,
    ) -> MoveResult:
        self.cache.invalidate(user_id)
        audit_log.warning("residency.move.pending", from_jurisdiction=from_j, to_jurisdiction=to_j)
        return MoveResult(
            user_id, from_region, target, from_j, to_j, copied, steps, "pending", reason
        )

    def _finish(
        self,
        user_id: str,
        from_region: str,
        target: str,
        from_j: str,
        to_j: str,
        copied: bool,
        steps: list[str],
    ) -> MoveResult:
        self.cache.put(DirectoryEntry(user_id, target, to_j, "active", moved_from=from_region))
        audit_log.info("residency.move.completed", from_jurisdiction=from_j, to_jurisdiction=to_j)
        return MoveResult(user_id, from_region, target, from_j, to_j, copied, steps)

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
        items = [from_ddb(i) or {} for i in raw]
        return [DirectoryEntry.from_item(str(i[self.dpk]), i) for i in items]


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)
