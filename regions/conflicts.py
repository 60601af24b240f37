"""The conflict detector and the conflict log.

DynamoDB global tables settle concurrent writes silently: last writer wins on a
private timestamp, and nothing is recorded, in CloudWatch or CloudTrail. The
detector reads each replica's stream (NEW_AND_OLD_IMAGES) and compares the
regionkit version stamps of the image that was replaced and the one that
replaced it:

==================  ==========================================================
no conflict         the new version descends from the old one: it was based on
                    it (``rk_base``), or the old one is in its causal past
                    (its version vector ``rk_vv``), or it is the same version
                    (a repair or an idempotent retry), or it is a blind write
                    replacing what its own region held
**inversion**       the new version is HLC-*older* than the one it replaced:
                    replication's wall-clock LWW kept the causally older write
                    (a skewed clock does this). Repaired: the HLC winner is
                    written back with its own stamp, so every replica ends on it
**concurrent**      both versions were based on the same version: two regions
                    edited the same item before either saw the other's edit
**lost_write**      the new version was not based on the old one, which was
                    acknowledged in another region and is now gone
==================  ==========================================================

A *replay*, where an ancestor overwrites its own descendant (a repair that
arrived late), is put right the same way as an inversion but logged as nothing:
no two writers conflicted.

For concurrent and lost writes, a data class with a merge function
(``conflicts: {merge: module:function}``) gets ``merge(winner, loser)`` written
as a new version based on the winner; otherwise the HLC winner stands (LWW).

Each conflict is written once to the conflict-log table under an ID derived from
the table, key and both versions, with a conditional put: every region that
sees the same conflict computes the same ID and the same content, so the log
holds it once. Only the region whose put created the record repairs or merges,
which keeps repairs from racing each other (and a racing repair is harmless:
it writes the same content).

The same :class:`ConflictDetector` runs inside the local cluster (fed by the
replication emulator's stream reader) and in AWS Lambda on DynamoDB Streams
(:mod:`regions.detector_lambda`).
"""

from __future__ import annotations

import importlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

from regions.codec import (
    AT_ATTR,
    BASE_ATTR,
    RESERVED,
    VERSION_ATTR,
    VV_ATTR,
    descends,
    from_ddb,
    to_ddb,
)
from regions.hlc import HLC, Stamp
from regions.pool import ClientProvider
from residency.errors import MalformedId
from residency.logs import get_logger
from residency.policy import GlobalDataClass, MergeConflicts, Policy
from residency.records import ConflictKind, ConflictRecord, conflict_id

__all__ = ["ConflictDetector", "ConflictLog", "classify"]

log = get_logger("regionkit.conflicts")

MergeFn = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _content(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in RESERVED}


def classify(
    old: dict[str, Any] | None, new: dict[str, Any] | None, region: str | None = None
) -> ConflictKind | None:
    """The kind of conflict a record of ``region``'s stream shows, or None.

    Items are plain Python dicts. A blind write (no ``rk_base``) that replaced
    what its own region's replica held is ordinary last-writer-wins: the writer
    chose not to read. The same write replacing, in another region, a version
    its writer never saw is a lost write.
    """
    if not old or not new:
        return None  # an insert or a delete: deletes carry no version to compare
    ov, nv = old.get(VERSION_ATTR), new.get(VERSION_ATTR)
    if not ov or not nv or ov == nv:
        return None
    if descends(new, old):
        return None  # a causal successor (directly, or through versions delivered out of order)
    try:
        o, n = Stamp.parse(str(ov)), Stamp.parse(str(nv))
    except MalformedId:
        return None
    if n < o:
        return "inversion"
    if _content(old) == _content(new):
        return None  # two writes of the same content (e.g. two identical merges): nothing lost
    if new.get(BASE_ATTR) is None and (new.get(AT_ATTR) or n.region) == region:
        return None
    if new.get(BASE_ATTR) == old.get(BASE_ATTR):
        return "concurrent"
    return "lost_write"


class ConflictLog:
    """Reads and writes the conflict-log table in one region."""

    def __init__(self, policy: Policy, clients: ClientProvider, *, table_prefix: str = "") -> None:
        self.policy = policy
        self.clients = clients
        self.table = table_prefix + policy.system.conflict_log_table

    def record(self, region: str, rec: ConflictRecord) -> bool:
        """Insert ``rec`` unless a record with its ID exists; True if this call created it."""
        from botocore.exceptions import ClientError

        try:
            self.clients.dynamodb(region).put_item(
                TableName=self.table,
                Item=to_ddb(rec.to_item()),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def scan(self, region: str) -> list[ConflictRecord]:
        client = self.clients.dynamodb(region)
        out: list[ConflictRecord] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            page = client.scan(**kwargs)
            out.extend(ConflictRecord.from_item(from_ddb(i) or {}) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(out, key=lambda r: r.occurred_at)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class ConflictDetector:
    """Classifies stream records, logs conflicts once, repairs inversions, runs merges."""

    def __init__(
        self,
        policy: Policy,
        clients: ClientProvider,
        *,
        table_prefix: str = "",
        repair: bool = True,
        clock: Callable[[str], HLC] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self.clients = clients
        self.log = ConflictLog(policy, clients, table_prefix=table_prefix)
        self.repair = repair
        self.now = now
        self._clocks: dict[str, HLC] = {}
        self._clock_factory: Callable[[str], HLC] = clock or HLC
        self._by_table: dict[str, tuple[str, Any]] = {
            table_prefix + dc.table: (name, dc) for name, dc in policy.data_classes.items()
        }
        self._merges: dict[str, MergeFn] = {}
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []

    def _clock(self, region: str) -> HLC:
        with self._lock:
            if region not in self._clocks:
                self._clocks[region] = self._clock_factory(region)
            return self._clocks[region]

    def _merge_fn(self, data_class: str, ref: str) -> MergeFn:
        if data_class not in self._merges:
            module, _, name = ref.partition(":")
            self._merges[data_class] = getattr(importlib.import_module(module), name)
        return self._merges[data_class]

    # the RecordListener interface of the replication emulator
    def __call__(self, region: str, table: str, record: dict[str, Any]) -> None:
        self.process(region, table, record)

    def process_many(
        self, region: str, table: str, records: Iterable[dict[str, Any]]
    ) -> list[ConflictRecord]:
        out: list[ConflictRecord] = []
        for r in records:
            found = self.process(region, table, r)
            if found:
                out.append(found)
        return out

    def process(self, region: str, table: str, record: dict[str, Any]) -> ConflictRecord | None:
        """Look at one stream record of ``table`` in ``region``; log and resolve a conflict."""
        entry = self._by_table.get(table)
        if entry is None:
            return None  # the conflict log itself, or a table regionkit does not manage
        data_class, dc = entry
        body = record.get("dynamodb", {})
        old, new = from_ddb(body.get("OldImage")), from_ddb(body.get("NewImage"))
        kind = classify(old, new, region)
        if kind is None or old is None or new is None:
            return None
        if kind == "inversion" and descends(old, new):
            # A replay of an ancestor (typically another region's repair that arrived
            # after its descendant): not a conflict between writers. Put the
            # descendant back; nothing is logged.
            if self.repair:
                self._rewrite(region, table, old, f"{VERSION_ATTR} < :v")
            self.counts["replay"] += 1
            return None
        ov, nv = Stamp.parse(str(old[VERSION_ATTR])), Stamp.parse(str(new[VERSION_ATTR]))
        winner, loser = (old, new) if kind == "inversion" else (new, old)
        wv, lv = (ov, nv) if kind == "inversion" else (nv, ov)
        key = str(new.get(dc.partition_key, "?"))
        if dc.sort_key:
            key = f"{key}#{new.get(dc.sort_key, '?')}"
        cid = conflict_id(table, key, str(ov), str(nv))
        with self._lock:
            already = cid in self._seen
            self._seen.add(cid)
        merge_ref = (
            dc.conflicts.merge
            if isinstance(dc, GlobalDataClass) and isinstance(dc.conflicts, MergeConflicts)
            else None
        )
        moved_on: dict[str, Any] | None = None
        if kind == "inversion" and self.repair:
            # Put the HLC winner back, even when this pair was logged before: the
            # same two versions can meet again, the older one replayed over the newer.
            moved_on = self._rewrite(region, table, winner, f"{VERSION_ATTR} < :v")
        if already:
            return None
        repaired = kind == "inversion" and self.repair and moved_on is None
        resolution: Any = (
            ("repaired" if repaired else "superseded" if moved_on is not None else "lww")
            if kind == "inversion"
            else ("merged" if merge_ref else "lww")
        )
        rec, created = self._record(
            cid, region, table, data_class, key, kind, wv, lv, resolution, repaired
        )
        if (
            moved_on is not None
            and VERSION_ATTR in moved_on
            and moved_on.get(BASE_ATTR) != winner.get(VERSION_ATTR)
        ):
            # The HLC winner could not be put back: a write that (as far as one base
            # pointer tells) never saw it replaced it first. The winner is lost.
            cur = Stamp.parse(str(moved_on[VERSION_ATTR]))
            self._record(
                conflict_id(table, key, str(cur), str(wv)),
                region,
                table,
                data_class,
                key,
                "lost_write",
                cur,
                wv,
                "lww",
                False,
            )
        if rec.resolution == "merged" and self.repair and created:
            merged = _content(
                self._merge_fn(data_class, merge_ref or "")(_content(winner), _content(loser))
            )
            stamp = self._clock(region).observe(wv)
            merged[VERSION_ATTR] = str(stamp)
            merged[BASE_ATTR] = str(wv)
            vv = dict(winner.get(VV_ATTR) or {})
            for r, v in (loser.get(VV_ATTR) or {}).items():
                vv[r] = max(str(v), str(vv.get(r, "")))
            lat = str(loser.get(AT_ATTR) or lv.region)
            vv[lat] = max(str(lv), str(vv.get(lat, "")))
            wat = str(winner.get(AT_ATTR) or wv.region)
            vv[wat] = max(str(wv), str(vv.get(wat, "")))
            merged[VV_ATTR] = vv
            merged[AT_ATTR] = region
            self._rewrite(region, table, merged, f"{VERSION_ATTR} = :base", base=str(wv))
        return rec

    def _record(
        self,
        cid: str,
        region: str,
        table: str,
        data_class: str,
        key: str,
        kind: ConflictKind,
        wv: Stamp,
        lv: Stamp,
        resolution: Any,
        repaired: bool,
    ) -> tuple[ConflictRecord, bool]:
        """Write one conflict to the log, once across regions; True if this call created it."""
        rec = ConflictRecord(
            conflict_id=cid,
            table=table,
            data_class=data_class,
            key=key,
            kind=kind,
            winner_version=str(wv),
            loser_version=str(lv),
            winner_region=wv.region,
            loser_region=lv.region,
            resolution=resolution,
            repaired=repaired,
            occurred_at=datetime.fromtimestamp(max(wv.l, lv.l) / 1000, UTC),
            detected_at=self.now(),
            detected_in=region,
        )
        with self._lock:
            self._seen.add(cid)
        try:
            created = self.log.record(region, rec)
        except Exception as exc:  # never swallow: keep it visible, and let a retry happen
            with self._lock:
                self._seen.discard(cid)
                self.errors.append(f"{region}: conflict log write failed: {exc!r}")
            log.error(
                "conflict log write failed", region=region, table=table, error=type(exc).__name__
            )
            raise
        self.counts[kind] += 1
        log.info(
            "conflict",
            kind=kind,
            data_class=data_class,
            table=table,
            key=key,
            winner=str(wv),
            loser=str(lv),
            region=region,
            new=created,
        )
        return rec, created

    def _rewrite(
        self, region: str, table: str, item: dict[str, Any], condition: str, base: str | None = None
    ) -> dict[str, Any] | None:
        """Conditionally write ``item``. Returns None on success, else the item now there."""
        from botocore.exceptions import ClientError

        values: dict[str, Any] = {":v": {"S": str(item[VERSION_ATTR])}}
        if base is not None:
            values[":base"] = {"S": base}
        cond = condition.replace(VERSION_ATTR, "#v")
        try:
            self.clients.dynamodb(region).put_item(
                TableName=table,
                Item=to_ddb(item),
                ConditionExpression=cond,
                ExpressionAttributeNames={"#v": VERSION_ATTR},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            log.info("repair skipped: the item moved on", region=region, table=table)
            return from_ddb(cast(dict[str, Any] | None, exc.response.get("Item"))) or {}
        return None
