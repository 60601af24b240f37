"""Erasing a data subject everywhere, resumably, with a receipt an auditor can keep.

The protocol (each step idempotent; what a crash leaves is resumable):

1. The directory entry becomes ``erasing``: the durable erasure record, which
   ``regionkit subject erase --resume`` and the audit see.
2. :meth:`Subjects.locate` finds every item of the subject in every region.
3. Pinned items, and global items whose class says ``delete``, become ``erased``
   fences in *every* region that holds them (and, for pinned classes, every region
   of the subject's jurisdiction even if empty), conditional on nothing newer having
   landed since the locate; a newer write starts the round again. An ``erased`` fence
   refuses every later write whatever its stamp, so a stale process or a replicated
   write that arrives later cannot bring the data back.
   ``anonymize``: the listed attributes and the subject attribute are removed (a
   compare-and-set on the version read). ``keep``: left, with the policy's reason.
4. Every replica is read again (consistent reads); ``done`` only when none holds a
   live item of the subject, else ``pending`` naming each replica that still does.
5. The directory entry becomes an ``erased`` fence: the user ID is refused from then
   on (``UnassignedUser``).

The receipt lists, per region and table, what was erased or anonymized (count, key
pseudonyms, the fences' HLC stamps) and when each replica was verified clean, and
what cannot be erased at once (PITR backups until their window rolls off, stream
records for 24 h, earlier exports, the conflict log). It holds no personal data; the
CLI signs it with the audit's evidence key.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from regions.codec import to_ddb
from regions.directory import DirectoryEntry
from regions.routing import Route
from regions.subject_fence import fence_key, is_fence
from regions.subjects import Found, Subjects
from regions.tombstones import ERASED
from regions.users import Users
from regions.versioned import VersionedStore
from regions.writes import Writer
from residency.errors import StaleWrite, UnassignedUser, UnknownSubject
from residency.logs import get_logger
from residency.policy import GlobalDataClass, PinnedDataClass, Policy
from residency.receipts import RECEIPT_KIND, not_erased_at_once

__all__ = ["Eraser", "ErasureResult"]

audit_log = get_logger("regionkit.audit")

MAX_ROUNDS = 5


@dataclass
class ErasureResult:
    user: str  # keyed pseudonym
    status: Literal["done", "pending"]
    pseudonym_key: str = ""  # the ID of the key that made ``user`` (never the key)
    reason: str = ""
    started_at: str = ""
    finished_at: str = ""
    erased: dict[str, dict[str, Any]] = field(default_factory=dict)  # "region/table" → entry
    anonymized: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept: list[dict[str, str]] = field(default_factory=list)
    verified: dict[str, str] = field(default_factory=dict)  # "region/table" → time clean
    still_held: list[str] = field(default_factory=list)
    not_erased_at_once: list[dict[str, str]] = field(default_factory=list)

    def receipt(self) -> dict[str, Any]:
        """The receipt body (JSON-able, no PII): what the CLI signs and renders."""
        return {
            "kind": RECEIPT_KIND,
            "subject": self.user,
            "pseudonym_key": self.pseudonym_key,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "erased": self.erased,
            "anonymized": self.anonymized,
            "kept": self.kept,
            "verified_clean": self.verified,
            "still_held": self.still_held,
            "not_erased_at_once": self.not_erased_at_once,
        }


class Eraser:
    def __init__(
        self,
        policy: Policy,
        store: VersionedStore,
        writer: Writer,
        users: Users,
        subjects: Subjects,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.store = store
        self.writer = writer
        self.users = users
        self.subjects = subjects
        self.now = now

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.now(), UTC).isoformat(timespec="seconds")

    def erase(self, user_id: str) -> ErasureResult:
        result = ErasureResult(
            user=self.store.pseudonymize(user_id, scope="subject"),
            status="pending",
            pseudonym_key=self.store.pseudonymize.key_id,
            started_at=self._stamp(),
        )
        entry = self._record(user_id)
        jurisdictions = self._jurisdictions(entry, user_id)
        known = entry is not None or self._was_known(user_id)
        try:
            for _ in range(MAX_ROUNDS):
                location = self.subjects.locate(user_id)
                if not known and not location.items and not location.unreadable:
                    # No entry, no fence, no data: a mistyped ID. "done" would certify
                    # the erasure of somebody who does not exist, and not of the user meant.
                    raise UnknownSubject(user=user_id, action="erase")
                known = True
                # Wherever a pinned item was found is fenced too (an entry lost or never
                # replicated says nothing about where the data went).
                for f in location.items:
                    if isinstance(self.policy.data_classes[f.data_class], PinnedDataClass):
                        j = self.policy.jurisdiction_of_region(f.region)
                        jurisdictions += [] if j in jurisdictions else [j]
                if location.unreadable:
                    result.reason = "unreadable: " + ", ".join(location.unreadable)
                    return self._pending(result)
                if self._round(user_id, jurisdictions, location.items, result):
                    break
            else:
                result.reason = "writes kept landing while erasing"
                return self._pending(result)
            if not self._verify(user_id, result):
                return self._pending(result)
            # Inside the try: a replica unreachable while the entry is fenced leaves the
            # erasure pending (run it again), never an exception with no receipt.
            self._erase_entry(user_id, entry)
        except Exception as exc:
            if not _transient(exc):
                raise
            where = getattr(exc, "regionkit_region", None) or getattr(exc, "region", None) or "?"
            result.reason = f"{type(exc).__name__} in {where}"
            return self._pending(result)
        result.status = "done"
        result.finished_at = self._stamp()
        result.not_erased_at_once = not_erased_at_once(datetime.fromtimestamp(self.now(), UTC))
        audit_log.info("subject.erased", subject=result.user)
        return result

    # --- steps ---

    def _record(self, user_id: str) -> DirectoryEntry | None:
        """Mark the directory entry ``erasing`` (the durable record); None if already gone."""
        try:
            entry = self.users.read_authoritative(user_id)
        except UnassignedUser:
            entry = None
        if entry is None or entry.status == "erasing":
            return entry
        record = DirectoryEntry(
            user_id,
            entry.home_region,
            entry.jurisdiction,
            "erasing",
            moving_to=entry.moving_to,  # a move under way: its target is fenced too
            moved_from=entry.moved_from,
        )
        self.users.write_entry(record, based_on=entry.version)  # StaleWrite: changed meanwhile
        self.users.cache.invalidate(user_id)
        return record

    def _was_known(self, user_id: str) -> bool:
        """Whether the directory holds a fence for the user (erased before, or moved)."""
        return self.users.fence_of(user_id) is not None

    def _jurisdictions(self, entry: DirectoryEntry | None, user_id: str) -> list[str]:
        """Where the user's pinned data may be: the home jurisdiction, and both ends of a
        move under way (a ``move_user`` in another process may still copy into its
        target; the erasure's fences there make that copy fail). With no entry (lost, or
        erased before), every jurisdiction."""
        if entry is None:
            # No record of where the user lives (lost, or erased before): their data may
            # be in any jurisdiction (a move the entry no longer shows), so all are fenced.
            return list(self.policy.jurisdictions)
        regions = [entry.home_region, entry.moving_to, entry.moved_from]
        found = [self.policy.jurisdiction_of_region(r) for r in regions if r]
        return list(dict.fromkeys([entry.jurisdiction, *found]))

    def _round(
        self, user_id: str, jurisdictions: list[str], items: list[Found], result: ErasureResult
    ) -> bool:
        """Fence, anonymize or keep every item found; False if a newer write got in."""
        newest: dict[tuple[str, tuple[Any, ...]], str] = {}
        where: dict[tuple[str, tuple[Any, ...]], set[str]] = defaultdict(set)
        raw: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        for f in items:
            k = (f.data_class, tuple(sorted(f.raw_key.items())))
            newest[k] = max(newest.get(k, ""), f.version)
            where[k].add(f.region)
            raw[k] = f.raw_key
        for name, dc in self.policy.data_classes.items():
            # The bare key is fenced in every region of the jurisdictions even where nothing
            # was found (a stale write must meet it); a class with a sort key has no bare
            # key: its subject fence refuses every later write (regions.subject_fence).
            if isinstance(dc, PinnedDataClass) and jurisdictions:
                bare = {dc.partition_key: user_id} if dc.sort_key is None else None
                fence = bare or fence_key(dc, user_id)
                k = (name, tuple(sorted(fence.items())))
                raw.setdefault(k, fence)
                newest.setdefault(k, "")
                for jurisdiction in jurisdictions:
                    where[k] |= set(self.policy.jurisdictions[jurisdiction].regions)
        clean = True
        fences: list[tuple[Route, dict[str, Any], str]] = []
        for k, regions in where.items():
            name = k[0]
            dc = self.policy.data_classes[name]
            if name == self.users.dir_class:
                continue  # the directory entry goes last
            action = "delete"
            if isinstance(dc, GlobalDataClass) and dc.erasure is not None:
                action = dc.erasure.action
            if action == "keep":
                reason = dc.erasure.reason if isinstance(dc, GlobalDataClass) and dc.erasure else ""
                result.kept.append(
                    {"data_class": name, "key": self.store.named(name, raw[k]), "reason": reason}
                )
                continue
            if action == "anonymize":
                clean = self._anonymize(name, raw[k], result) and clean
                continue
            for region in sorted(regions):
                route = Route(region, self.store.routes.tables[name], "erasure", False, name)
                fences.append((route, raw[k], newest[k]))
        return self._fence_all(fences, result) and clean

    def _fence_all(
        self, fences: list[tuple[Route, dict[str, Any], str]], result: ErasureResult
    ) -> bool:
        """Send the fences, one worker per region (each region's requests in order)."""
        from concurrent.futures import ThreadPoolExecutor

        by_region: dict[str, list[tuple[Route, dict[str, Any], str]]] = defaultdict(list)
        for f in fences:
            by_region[f[0].region].append(f)

        def run(batch: list[tuple[Route, dict[str, Any], str]]) -> list[bool]:
            return [
                self.writer.fence_at(route, key, kind=ERASED, newest=newest)
                for route, key, newest in batch
            ]

        with ThreadPoolExecutor(max_workers=max(1, len(by_region))) as pool:
            outcomes = dict(zip(by_region, pool.map(run, by_region.values()), strict=True))
        clean = True
        for region, batch in by_region.items():
            for (route, key, _), ok in zip(batch, outcomes[region], strict=True):
                dc = self.policy.data_classes[route.data_class]
                if ok and not is_fence(dc, key):  # the subject fence is no item of theirs
                    self._note(result.erased, region, route.table_name, route.data_class, key)
                clean = clean and ok
        return clean

    def _anonymize(self, name: str, key: dict[str, Any], result: ErasureResult) -> bool:
        dc = self.policy.data_classes[name]
        assert isinstance(dc, GlobalDataClass) and dc.erasure and dc.subject_attribute
        drop = {dc.subject_attribute, *dc.erasure.attributes}
        item = self.store.get(name, key, None, True)
        if item is None:
            return True
        body = {k: v for k, v in item.items() if k not in drop and not k.startswith("rk_")}
        try:
            self.writer.put(name, body, None, item, False)
        except StaleWrite:
            return False
        self._note(result.anonymized, self.store.region or "nearest", name, name, key)
        return True

    def _note(
        self,
        into: dict[str, dict[str, Any]],
        region: str,
        table: str,
        name: str,
        key: dict[str, Any],
    ) -> None:
        slot = into.setdefault(f"{region}/{table}", {"data_class": name, "count": 0, "keys": []})
        pseudonym = self.store.named(name, key)
        if pseudonym not in slot["keys"]:
            slot["keys"].append(pseudonym)
            slot["count"] = len(slot["keys"])

    def _verify(self, user_id: str, result: ErasureResult) -> bool:
        """Consistent reads of every replica: no live item of the subject anywhere."""
        location = self.subjects.locate(user_id)
        if location.unreadable:
            result.reason = "unreadable: " + ", ".join(location.unreadable)
            return False
        live = [f for f in location.live() if f.data_class != self.users.dir_class]
        kept = {k["data_class"] for k in result.kept}
        anonymized = {v["data_class"] for v in result.anonymized.values()}
        held = [f for f in live if f.data_class not in kept]
        # An anonymized item no longer names the subject; the index may lag behind.
        held = [f for f in held if not (f.data_class in anonymized and self._anonymous(f))]
        result.still_held = sorted({f"{f.region}/{f.table}" for f in held})
        stamp = self._stamp()
        for f in location.items:
            if f.state != "live":
                result.verified.setdefault(f"{f.region}/{f.table}", stamp)
        if held:
            result.reason = "still held in " + ", ".join(result.still_held)
            return False
        return True

    def _anonymous(self, f: Found) -> bool:
        dc = self.policy.data_classes[f.data_class]
        if not isinstance(dc, GlobalDataClass) or not dc.subject_attribute:
            return False
        route = Route(f.region, f.table, "verify", False, f.data_class)
        item = self.store.transport.call_at(
            route,
            lambda r, c: c.get_item(
                TableName=r.table_name,
                Key=to_ddb(f.raw_key),
                ConsistentRead=True,
                ProjectionExpression="#s",
                ExpressionAttributeNames={"#s": dc.subject_attribute},
            ).get("Item"),
        )
        return not item

    def _erase_entry(self, user_id: str, entry: DirectoryEntry | None) -> None:
        """The directory entry becomes an ``erased`` fence in every replica, the authority's
        first (so no sign-up or move can start again), then the others directly."""
        dpk = self.users.dpk
        dc = self.policy.data_classes[self.users.dir_class]
        assert isinstance(dc, GlobalDataClass)
        authority = self.users.authority(user_id) or dc.replicas[0]
        version = entry.version if entry and entry.version else ""
        current = self.users.read_entry(user_id, region=authority, consistent=True)
        if current is not None and current.version:
            version = max(version, current.version)
        table = self.store.routes.tables[self.users.dir_class]
        for region in [authority, *(r for r in dc.replicas if r != authority)]:
            route = Route(region, table, "erasure", False, self.users.dir_class)
            self.writer.fence_at(route, {dpk: user_id}, kind=ERASED, newest=version or "0")
        self.users.cache.invalidate(user_id)

    def _pending(self, result: ErasureResult) -> ErasureResult:
        result.finished_at = self._stamp()
        audit_log.warning("subject.erase.pending", subject=result.user)
        return result


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` leaves the erasure pending (retry later) rather than failing it:
    AWS and transport failures and a write lost to a newer one. A configuration error (a
    policy that names a key attribute to anonymize, an unknown ID) is raised: retrying
    would fail the same way for ever."""
    from botocore.exceptions import BotoCoreError, ClientError

    from residency.errors import BackendError, RegionUnavailable, StaleWrite

    return isinstance(
        exc, (BotoCoreError, ClientError, BackendError, RegionUnavailable, StaleWrite)
    )
