"""The conflict detector and the conflict log.

DynamoDB global tables settle concurrent writes silently: last writer wins on a
private timestamp, and nothing is recorded, in CloudWatch or CloudTrail. The
detector reads each replica's stream (NEW_AND_OLD_IMAGES) and decides from what
the streams show, not from what writers claimed.

**A conflict is** a version ``O`` that some replica held and that a version ``N``
replaced there although ``O`` is not in ``N``'s causal past. A version's causal
past is defined by what its *landing* replica actually replaced: the stream
record of the region a write landed in (``rk_at``) has the write's OldImage, and
that version is its parent (ground truth, enforced by DynamoDB's conditional
write, whatever the writer believed: a blind write's parent is what it
overwrote). Ancestors are parents of parents. The detector learns every parent
from the landing records (:class:`Lineage`) and walks the chain; stamps strictly
decrease along it, so the walk stops at the first ancestor older than ``O``.

Each conflict is logged **once per lost write**: the record's ID is derived from
the table, the key and the loser (the HLC-older of the two versions), with a
conditional put, so every region that sees the same version lost computes the same
ID and the log holds it once, naming the version it lost to (the first replacement
any region logged). Two losers that never met in any replica (in a 3-way race,
``A`` replaced by ``B`` and ``B`` by ``C``, while ``C`` never replaced ``A``
anywhere) are not shown as a pair by any stream: ``A`` is logged as lost to ``B``,
``B`` as lost to ``C``; the pair ``A``/``C`` is implied, not logged.

==================  ==========================================================
no conflict         ``O`` is an ancestor of ``N`` (or the same version, a
                    repair or an idempotent retry), or both hold the same
                    content (nothing was lost)
**inversion**       ``N`` is HLC-*older* than ``O``: replication's wall-clock
                    LWW kept the HLC loser (a skewed clock does this).
                    Repaired: the HLC winner is written back with its own stamp
                    (for a merge class, the two are merged instead)
**concurrent**      ``O`` and ``N`` replaced the same parent: two regions edited
                    the same version before either saw the other's edit
**lost_write**      any other replacement of a version that ``N`` never had in
                    its past
==================  ==========================================================

A *replay*, where an ancestor overwrites its own descendant (a repair that
arrived late), is put right like an inversion but logged as nothing.

Where a parent is unknown (a detector that never saw the landing region's stream,
as a per-region Lambda on AWS does not), the detector first takes what the writer
stamped (``rk_base``, ``rk_vv``: :func:`classify`): a successor by its claims is
one. Where the claims show a conflict, a detector given the shared lineage table
(``shared``, :mod:`regions.lineage`) does not believe them: it looks the parents up
there (the landing region's detector published them) and decides as above. An entry
that has not replicated yet raises :class:`~regions.lineage.LineagePending` (the
record is retried); once the record is ``lineage_max_age_s`` old it is counted and
logged as *undetermined*, never as a conflict.

For a data class with a merge function (``conflicts: {merge: module:function}``)
every conflict is resolved by merging the loser into whatever the replica holds
now, as a new version based on it; a bare winner is never written back, so no
update is lost. The merge runs before the record is written, and it is skipped
when the replica already holds the merged content: a retried record is merged
again, never skipped, and merging twice changes nothing.

The same :class:`ConflictDetector` runs inside the local cluster (fed by the
replication emulator's stream reader, one detector for every region) and in AWS
Lambda on DynamoDB Streams (:mod:`regions.detector_lambda`).
"""

from __future__ import annotations

import importlib
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from regions.codec import (
    AT_ATTR,
    BASE_ATTR,
    FIX_ATTR,
    RESERVED,
    TOKEN_ATTR,
    VERSION_ATTR,
    VV_ATTR,
    descends,
    from_ddb,
    to_ddb,
)
from regions.hlc import HLC, ClockDriftError, Stamp
from regions.lineage import LineagePending, SharedLineage
from regions.tombstones import DEL_ATTR, DELETED, FENCE, tombstone_kind
from residency.clients import ClientProvider
from residency.errors import MalformedId
from residency.logs import get_logger
from residency.names import UNDETERMINED_EVENT
from residency.policy import GlobalDataClass, MergeConflicts, Policy
from residency.pseudonym import Pseudonymizer, default_pseudonymizer
from residency.records import ConflictKind, ConflictRecord, conflict_id, invalid_fields
from residency.tables import TTL_ATTRIBUTE

__all__ = [
    "LINEAGE_MAX_AGE_S",
    "ConflictDetector",
    "ConflictLog",
    "ConflictLogScan",
    "Lineage",
    "UnreadableRecord",
    "classify",
]

log = get_logger("regionkit.conflicts")

MergeFn = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _record_time(record: dict[str, Any]) -> float | None:
    """A stream record's ``ApproximateCreationDateTime``, in epoch seconds: a number in a
    Lambda event, a datetime from boto3's GetRecords."""
    created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        return created.timestamp()
    if isinstance(created, (int, float, Decimal)):
        return float(created)
    return None


def _landing(region: str, new_raw: dict[str, Any], nv: str) -> bool:
    """Whether a stream record in ``region`` is its version's landing: the write landed
    here (``rk_at``), and it is not a repair that wrote the version back (``rk_fix``)."""
    at = (new_raw.get(AT_ATTR) or {}).get("S") or nv.rsplit(".", 1)[-1]
    return at == region and (new_raw.get(FIX_ATTR) or {}).get("S") != nv


def _content(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in RESERVED}


def classify(
    old: dict[str, Any] | None, new: dict[str, Any] | None, region: str | None = None
) -> ConflictKind | None:
    """From the writers' claims alone: the kind of conflict a record of ``region``'s
    stream shows, or None. The detector uses it only where the lineage is unknown.

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
    if new.get(BASE_ATTR) is not None and new.get(BASE_ATTR) == old.get(BASE_ATTR):
        return "concurrent"  # two missing bases are no evidence of a common parent
    return "lost_write"


def _claims_descend(new_raw: dict[str, Any], old_raw: dict[str, Any], ov: str) -> bool:
    """:func:`~regions.codec.descends` on the stream images as DynamoDB JSON, for the
    common case only: True where ``descends(from_ddb(new), from_ddb(old))`` is True and
    the attributes have their usual types, else False (the caller then decodes the
    images and decides as before). Decoding both images was most of the cost of a record
    the writer's claims already settle."""
    base = new_raw.get(BASE_ATTR)
    if base is not None and base.get("S") == ov:
        return True
    vv = new_raw.get(VV_ATTR)
    if vv is None or "M" not in vv:
        return False
    at = old_raw.get(AT_ATTR)
    if at is None:
        region = ov.rsplit(".", 1)[-1]
    elif at.get("S"):
        region = at["S"]
    else:
        return False  # an unusual rk_at: left to the decoded path
    seen = vv["M"].get(region)
    if seen is None or "S" not in seen:
        return False
    return bool(seen["S"] >= ov)


@dataclass(frozen=True)
class UnreadableRecord:
    """A stored conflict record that does not parse: named by the keyed pseudonym of its
    ``pk`` and the fields at fault, never by what it holds."""

    record: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class ConflictLogScan:
    """One region's conflict log: the records, oldest first, and those that do not parse
    (one bad record never hides the rest)."""

    records: list[ConflictRecord]
    unreadable: list[UnreadableRecord]


class ConflictLog:
    """Reads and writes the conflict-log table in one region."""

    def __init__(
        self,
        policy: Policy,
        clients: ClientProvider,
        *,
        table_prefix: str = "",
        pseudonymize: Pseudonymizer | None = None,
    ) -> None:
        self.policy = policy
        self.clients = clients
        self.table = table_prefix + policy.system.conflict_log_table
        self.pseudonymize = pseudonymize or default_pseudonymizer()

    def record(self, region: str, rec: ConflictRecord) -> bool:
        """Insert ``rec`` unless a record with its ID exists; True if this call created it."""
        from botocore.exceptions import ClientError

        try:
            self.clients.client("dynamodb", region).put_item(
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
        """The records of ``region``'s log, oldest first; unreadable ones are logged (by
        pseudonym) and left out. :meth:`read` returns them too."""
        found = self.read(region)
        if found.unreadable:
            log.warning(
                "unreadable conflict records",
                region=region,
                table=self.table,
                records=[u.record for u in found.unreadable],
            )
        return found.records

    def read(self, region: str) -> ConflictLogScan:
        """Every record of ``region``'s log, and the ones that do not parse."""
        from pydantic import ValidationError

        client = self.clients.client("dynamodb", region)
        out: list[ConflictRecord] = []
        bad: list[UnreadableRecord] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            page = client.scan(**kwargs)
            for raw in page.get("Items", []):
                item = from_ddb(raw) or {}
                try:
                    out.append(ConflictRecord.from_item(item))
                except ValidationError as exc:  # its text quotes the stored values: dropped
                    name = self.pseudonymize.item(self.table, item.get("pk"))
                    bad.append(UnreadableRecord(name, invalid_fields(exc, ConflictRecord)))
            if "LastEvaluatedKey" not in page:
                return ConflictLogScan(sorted(out, key=lambda r: r.occurred_at), bad)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass(frozen=True)
class _ItemRef:
    """A conflicted item: its key as the log stores it, and its keyed pseudonym (logs)."""

    text: str
    sort: str | None
    named: str


DELETED_WINNER = "deleted"
"""The winner of a write lost to a delete (which carries no version)."""

_MISSING: Any = object()
_UNDETERMINED: Any = object()
# A replicated write whose lineage entry is still missing this long after its stream
# record was written is logged as undetermined, not judged (regions.lineage).
LINEAGE_MAX_AGE_S = 240.0


class Lineage:
    """Each version's parent: what it replaced in the replica it landed in.

    Learned from the landing region's stream records (first record wins), bounded
    (the oldest entries go first). Stamps strictly decrease from a version to its
    parent (every write condition requires it), and the stamps' text order is
    their order, so a walk compares strings and stops early.
    """

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self._parent: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._parent)

    def learn(self, version: str, parent: str | None) -> bool:
        """Record ``version``'s parent; False if it was known already (kept as it was)."""
        with self._lock:
            if version in self._parent:
                return False
            self._parent[version] = parent
            if len(self._parent) > self.limit:
                self._parent.popitem(last=False)
            return True

    def learn_many(self, entries: Iterable[tuple[str, str | None]]) -> None:
        """:meth:`learn` for each ``(version, parent)``, under one lock."""
        with self._lock:
            for version, parent in entries:
                if version not in self._parent:
                    self._parent[version] = parent
            while len(self._parent) > self.limit:
                self._parent.popitem(last=False)

    @property
    def known(self) -> Container[str]:
        """The versions whose parent is known (read-only; ``in`` is one dict lookup)."""
        return self._parent.keys()

    def parent(self, version: str) -> Any:
        """The parent (None for a write that replaced nothing), or ``_MISSING``."""
        return self._parent.get(version, _MISSING)

    def is_ancestor(self, a: str, b: str) -> bool | None:
        """Whether ``a`` is ``b`` or in its causal past; None where a link is unknown."""
        if a == b:
            return True
        v = b
        for _ in range(100_000):
            p = self._parent.get(v, _MISSING)
            if p is _MISSING:
                return None
            if p is None or p < a:
                return False
            if p == a:
                return True
            v = p
        return None

    def unknown_link(self, a: str, b: str) -> str | None:
        """The version on ``b``'s chain towards ``a`` whose parent is unknown (where
        :meth:`is_ancestor` stopped with None), or None if the walk decides."""
        v = b
        for _ in range(100_000):
            if v == a:
                return None
            p = self._parent.get(v, _MISSING)
            if p is _MISSING:
                return v
            if p is None or p < a:
                return None
            v = p
        return None


class ConflictDetector:
    """Classifies stream records, logs each lost write once, repairs inversions, merges."""

    def __init__(
        self,
        policy: Policy,
        clients: ClientProvider,
        *,
        table_prefix: str = "",
        repair: bool = True,
        clock: Callable[[str], HLC] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        lineage: Lineage | None = None,
        shared: SharedLineage | None = None,
        lineage_max_age_s: float = LINEAGE_MAX_AGE_S,
        pseudonymize: Pseudonymizer | None = None,
    ) -> None:
        self.policy = policy
        self.clients = clients
        self.pseudonymize = pseudonymize or default_pseudonymizer()
        self.log = ConflictLog(
            policy, clients, table_prefix=table_prefix, pseudonymize=self.pseudonymize
        )
        self.repair = repair
        self.now = now
        self.lineage = lineage if lineage is not None else Lineage()
        # The lineage table shared by every region's detector (per-region detectors on
        # AWS); None where one detector reads every region's stream (the local cluster).
        self.shared = shared
        self.lineage_max_age_s = lineage_max_age_s
        # How long regions.detector_lambda waits, within one invocation, for a missing
        # lineage entry before it reports the record for Lambda to retry.
        self.lineage_wait_s = 0.0
        self._outbox: dict[str, dict[tuple[str, str], str | None]] = {}
        self._absent: set[tuple[str, str]] = set()  # looked up since the last prefetch
        self._clocks: dict[str, HLC] = {}
        self._clock_factory: Callable[[str], HLC] = clock or HLC
        self._by_table: dict[str, tuple[str, Any]] = {
            table_prefix + dc.table: (name, dc) for name, dc in policy.data_classes.items()
        }
        self._merges: dict[str, MergeFn] = {}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        # Tokens of merge writes: random; a deterministic simulation seeds them.
        self.new_token: Callable[[], str] = lambda: secrets.token_hex(8)

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
        body = record.get("dynamodb", {})
        if body.get("NewImage") is None:  # a delete
            return self._removed(region, table, entry, record, body.get("OldImage") or {})
        return self._changed(region, table, entry, body)

    def _changed(
        self, region: str, table: str, entry: tuple[str, Any], body: dict[str, Any]
    ) -> ConflictRecord | None:
        """A record with a new image: a landing, a causal successor, or a conflict."""
        new_raw, old_raw = body["NewImage"], body.get("OldImage") or {}
        nv = (new_raw.get(VERSION_ATTR) or {}).get("S")
        if not nv:
            return None  # unversioned
        ov = (old_raw.get(VERSION_ATTR) or {}).get("S") if old_raw else None
        if _landing(region, new_raw, nv) and self._landed(region, table, nv, ov):
            return None  # the landing record: what it replaced is its parent, by definition
        if not ov or ov == nv:
            return None
        related = self.lineage.is_ancestor(ov, nv)
        if related:
            return None  # a causal successor
        if related is None and _claims_descend(new_raw, old_raw, ov):
            return None  # a causal successor by its writer's claims (the images not decoded)
        data_class, dc = entry
        old, new = from_ddb(old_raw) or {}, from_ddb(new_raw) or {}
        if related is None and self.shared is not None and classify(old, new, region):
            # The claims show a conflict, but only the landing region saw what the write
            # replaced: ask the lineage table rather than believe them.
            related = self._related_by_lineage(region, table, body, old, new, ov, nv)
            if related is _UNDETERMINED or related:
                return None  # undetermined (counted and logged), or a causal successor
        judged = self._judge(region, old, new, ov, nv, known=related is not None)
        if judged is None:
            return None
        kind, replay = judged
        if replay:
            # An ancestor replayed over its descendant (typically a repair that arrived
            # late): not a conflict between writers. Put the descendant back.
            if self.repair:
                self._put_back(region, table, old, nv)
            self.counts["replay"] += 1
            return None
        return self._resolve(region, table, data_class, dc, kind, old, new)

    # --- the shared lineage (per-region detectors) ---

    def _landed(self, region: str, table: str, nv: str, ov: str | None) -> bool:
        """Learn a landing record's parent; True if it was not known before. A write
        that originated here goes to the lineage table too (not a repair that put an
        older version back: its parent is where it first landed)."""
        learned = self.lineage.learn(nv, ov)
        if learned and self.shared is not None and (ov is None or ov < nv):
            self._queue(region, table, nv)
        return learned

    def _queue(self, region: str, table: str, version: str) -> None:
        parent = self.lineage.parent(version)
        self._outbox.setdefault(region, {})[(table, version)] = (
            None if parent is _MISSING else parent
        )

    def learn_landings(self, items: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Learn (and queue for the lineage table) the parents of a batch's landing
        records before any record is judged, so two regions' detectors each waiting on
        the other's entries never wait on entries held back in an unfinished batch.
        Nothing without a shared lineage (the local cluster's one detector)."""
        if self.shared is None:
            return
        for region, table, record in items:
            if table not in self._by_table:
                continue
            body = record.get("dynamodb", {})
            new_raw, old_raw = body.get("NewImage"), body.get("OldImage")
            nv = ((new_raw or {}).get(VERSION_ATTR) or {}).get("S")
            if not nv:
                continue
            ov = (old_raw.get(VERSION_ATTR) or {}).get("S") if old_raw else None
            if (
                _landing(region, new_raw, nv)
                and (ov is None or ov < nv)
                and self.lineage.learn(nv, ov)
            ):
                self._queue(region, table, nv)

    def publish_lineage(self) -> int:
        """Write the queued entries to the lineage table; raises (nothing is dropped:
        the queue is kept for the retry) if they cannot be written."""
        if self.shared is None:
            return 0
        written = 0
        for region in list(self._outbox):
            entries = self._outbox[region]
            if entries:
                written += self.shared.publish(region, [(t, v, p) for (t, v), p in entries.items()])
            del self._outbox[region]
        self.counts["lineage_published"] += written
        return written

    def prefetch_lineage(self, items: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Look up, in one ``BatchGetItem`` per 100 keys, the parents a batch's
        replicated blind writes will be judged by (deeper links, and the parent of a
        version a conflict replaced, are looked up as they are met)."""
        if self.shared is None:
            return
        self._absent.clear()
        wanted: dict[str, set[tuple[str, str]]] = {}
        known = self.lineage.known
        managed = self._by_table
        for region, table, record in items:
            body = record.get("dynamodb")
            if not body or table not in managed:
                continue
            new_raw, old_raw = body.get("NewImage"), body.get("OldImage")
            if not new_raw or not old_raw or BASE_ATTR in new_raw:
                continue  # an insert or a delete, or a write that names its parent
            nv = (new_raw.get(VERSION_ATTR) or {}).get("S")
            if not nv or nv in known:
                continue
            ov = (old_raw.get(VERSION_ATTR) or {}).get("S")
            if not ov or nv == ov:
                continue
            at = (new_raw.get(AT_ATTR) or {}).get("S") or nv.rsplit(".", 1)[-1]
            if at == region or _claims_descend(new_raw, old_raw, ov):
                continue
            keys = wanted.get(region)
            if keys is None:
                keys = wanted[region] = set()
            keys.add((table, nv))
        for region, keys in wanted.items():
            self._fetch(region, keys)

    def _fetch(self, region: str, keys: Iterable[tuple[str, str]]) -> None:
        assert self.shared is not None
        known = self.lineage.known
        todo = {k for k in keys if k[1] not in known and k not in self._absent}
        if not todo:
            return
        found = self.shared.fetch(region, todo)
        self.lineage.learn_many((version, parent) for (_table, version), parent in found.items())
        self._absent |= todo - found.keys()
        self.counts["lineage_lookups"] += len(todo)

    def _related_by_lineage(
        self,
        region: str,
        table: str,
        body: dict[str, Any],
        old: dict[str, Any],
        new: dict[str, Any],
        ov: str,
        nv: str,
    ) -> Any:
        """Whether ``ov`` is an ancestor of ``nv``, from the lineage table where the
        claims give no parent. Raises :class:`LineagePending` while a needed entry is
        missing; ``_UNDETERMINED`` once the record is too old to wait for it."""
        # A write based on a version it read is conditional on it: its rk_base is what
        # it replaced where it landed (ground truth, like its landing record).
        for item, v in ((new, nv), (old, ov)):
            base = item.get(BASE_ATTR)
            if isinstance(base, str) and base and self.lineage.parent(v) is _MISSING:
                self.lineage.learn(v, base)
        for _ in range(64):
            related = self.lineage.is_ancestor(ov, nv)
            if related is False and self.lineage.parent(ov) is _MISSING:
                # a conflict: what ``ov`` replaced tells its kind (never waited for)
                self._fetch(region, [(table, ov)])
            if related is not None:
                return related
            link = self.lineage.unknown_link(ov, nv)
            if link is None:
                break
            self._fetch(region, [(table, link)])
            if self.lineage.parent(link) is _MISSING:
                age = self._age(body)
                if age is not None and age >= self.lineage_max_age_s:
                    self.counts["undetermined"] += 1
                    log.warning(
                        UNDETERMINED_EVENT,
                        region=region,
                        table=table,
                        version=link,
                        age_s=round(age, 1),
                    )
                    return _UNDETERMINED
                self.counts["lineage_pending"] += 1
                raise LineagePending(table, link)
        return self.lineage.is_ancestor(ov, nv)

    def _age(self, body: dict[str, Any]) -> float | None:
        """Seconds since the stream record was written (None if it does not say)."""
        created = body.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            return (self.now() - created).total_seconds()
        if isinstance(created, (int, float)) and not isinstance(created, bool):
            return self.now().timestamp() - float(created)
        return None

    def _judge(
        self,
        region: str,
        old: dict[str, Any],
        new: dict[str, Any],
        ov: str,
        nv: str,
        *,
        known: bool,
    ) -> tuple[ConflictKind, bool] | None:
        """What a new version replacing an old one that is not its ancestor is: the
        conflict's kind, and whether it is an ancestor replayed over its descendant.
        None: no conflict. ``known``: whether the lineage knows how the two relate."""
        if not known:
            kind = classify(old, new, region)  # the lineage is unknown: the writers' claims
            if kind is None:
                return None
            return kind, kind == "inversion" and descends(old, new)
        if _content(old) == _content(new):
            return None  # two writes of the same content (e.g. two merges): nothing lost
        replay = self.lineage.is_ancestor(nv, ov) is True
        if nv < ov:
            return "inversion", replay
        po, pn = self.lineage.parent(ov), self.lineage.parent(nv)
        return ("concurrent" if po is not _MISSING and po == pn else "lost_write"), replay

    def _resolve(
        self,
        region: str,
        table: str,
        data_class: str,
        dc: Any,
        kind: ConflictKind,
        old: dict[str, Any],
        new: dict[str, Any],
    ) -> ConflictRecord | None:
        """Resolve one conflict and log it; the record if this call created it."""
        ov, nv = Stamp.parse(str(old[VERSION_ATTR])), Stamp.parse(str(new[VERSION_ATTR]))
        winner = old if kind == "inversion" else new
        loser = new if kind == "inversion" else old
        wv, lv = (ov, nv) if kind == "inversion" else (nv, ov)
        ref = self._item_ref(table, dc, new)
        merge_ref = (
            dc.conflicts.merge
            if isinstance(dc, GlobalDataClass) and isinstance(dc.conflicts, MergeConflicts)
            else None
        )
        if merge_ref:
            # Merge both into whatever the replica holds now; never a bare winner.
            if self.repair:
                self._merge_into(region, table, dc, data_class, merge_ref, [old, new])
            rec, created = self._record(
                conflict_id(table, ref.text, str(lv), str(lv), _token(loser)),
                region,
                table,
                data_class,
                ref,
                kind,
                wv,
                lv,
                "merged",
                kind == "inversion",
            )
            return rec if created else None
        moved_on: dict[str, Any] | None = None
        if kind == "inversion" and self.repair:
            moved_on = self._put_back(region, table, winner, str(nv))
        repaired = kind == "inversion" and self.repair and moved_on is None
        resolution: Any = (
            ("repaired" if repaired else "superseded" if moved_on is not None else "lww")
            if kind == "inversion"
            else "lww"
        )
        rec, created = self._record(
            conflict_id(table, ref.text, str(lv), str(lv), _token(loser)),
            region,
            table,
            data_class,
            ref,
            kind,
            wv,
            lv,
            resolution,
            repaired,
        )
        if moved_on is not None and VERSION_ATTR in moved_on:
            cur = str(moved_on[VERSION_ATTR])
            if cur != str(wv) and not self._descends(moved_on, winner):
                # The HLC winner could not be put back: a write that never had it in its
                # past replaced it first. The winner is lost.
                self._record(
                    conflict_id(table, ref.text, str(wv), str(wv), _token(winner)),
                    region,
                    table,
                    data_class,
                    ref,
                    "lost_write",
                    Stamp.parse(cur),
                    wv,
                    "lww",
                    False,
                )
        return rec if created else None

    def _removed(
        self,
        region: str,
        table: str,
        entry: tuple[str, Any],
        record: dict[str, Any],
        old_raw: dict[str, Any],
    ) -> ConflictRecord | None:
        """A ``REMOVE`` record. regionkit never deletes a live item (its deletes, moves and
        erasures write tombstones), so a delete that removed one, when it is not that
        item's own TTL expiry, lost a write: typically a tombstone expired by TTL in one
        replica after the key was written again in another, whose delete replication then
        carried over the newer write. Logged (once, whichever region sees it first), not
        repaired: a raw ``DeleteItem`` by an operator looks the same."""
        old = from_ddb(old_raw) or {}
        ov = str(old.get(VERSION_ATTR) or "")
        if not ov or tombstone_kind(old):
            return None  # an unversioned item, or a tombstone's expiry
        identity = record.get("userIdentity") or {}
        if identity.get("principalId") == "dynamodb.amazonaws.com":
            return None  # this item's own TTL expiry, in the region where it expired
        expires = old.get(TTL_ATTRIBUTE)
        at = _record_time(record) or time.time()
        if isinstance(expires, (int, float, Decimal)) and float(expires) <= at:
            return None  # the service's own expiry of this item, replicated
        data_class, dc = entry
        try:
            lv = Stamp.parse(ov)
        except ValueError:
            return None
        ref = self._item_ref(table, dc, old)
        cid = conflict_id(table, ref.text, ov, DELETED_WINNER, _token(old))
        rec, created = self._record(
            cid, region, table, data_class, ref, "lost_write", None, lv, "lww", False
        )
        return rec if created else None

    def _descends(self, new: dict[str, Any], old: dict[str, Any]) -> bool:
        related = self.lineage.is_ancestor(str(old[VERSION_ATTR]), str(new[VERSION_ATTR]))
        return descends(new, old) if related is None else related

    def _item_ref(self, table: str, dc: Any, item: dict[str, Any]) -> _ItemRef:
        pk = item.get(dc.partition_key, "?")
        sk = item.get(dc.sort_key, "?") if dc.sort_key else None
        text = str(pk) if sk is None else f"{pk}#{sk}"
        return _ItemRef(
            text, None if sk is None else str(sk), self.pseudonymize.item(table, pk, sk)
        )

    def _record(
        self,
        cid: str,
        region: str,
        table: str,
        data_class: str,
        item: _ItemRef,
        kind: ConflictKind,
        wv: Stamp | None,
        lv: Stamp,
        resolution: Any,
        repaired: bool,
    ) -> tuple[ConflictRecord, bool]:
        """Write one conflict to the log, once across regions; True if this call created it.

        The conditional put on the ID is the de-duplication: durable, and shared by
        every region and every retry. A failure is raised, so the record is retried.
        """
        # No winner version: a delete replicated over the write (see _removed).
        winner = str(wv) if wv is not None else DELETED_WINNER
        rec = ConflictRecord(
            conflict_id=cid,
            table=table,
            data_class=data_class,
            key=item.text,
            sort_key=item.sort,
            kind=kind,
            winner_version=winner,
            loser_version=str(lv),
            winner_region=wv.region if wv is not None else "unknown",
            loser_region=lv.region,
            resolution=resolution,
            repaired=repaired,
            occurred_at=datetime.fromtimestamp(max(wv.l if wv else 0, lv.l) / 1000, UTC),
            detected_at=self.now(),
            detected_in=region,
        )
        try:
            created = self.log.record(region, rec)
        except Exception as exc:  # never swallow: keep it visible, and let a retry happen
            with self._lock:
                self.errors.append(f"{region}: conflict log write failed: {type(exc).__name__}")
            log.error(
                "conflict log write failed", region=region, table=table, error=type(exc).__name__
            )
            raise
        if created:
            self.counts[kind] += 1
        else:
            self.counts["already_logged"] += 1
        log.info(
            "conflict",
            kind=kind,
            data_class=data_class,
            table=table,
            item=item.named,
            winner=winner,
            loser=str(lv),
            region=region,
            new=created,
        )
        return rec, created

    def _key_of(self, dc: Any, item: dict[str, Any]) -> dict[str, Any]:
        key = {dc.partition_key: item[dc.partition_key]}
        if dc.sort_key:
            key[dc.sort_key] = item[dc.sort_key]
        return key

    def _merge_into(
        self,
        region: str,
        table: str,
        dc: Any,
        data_class: str,
        ref: str,
        sides: list[dict[str, Any]],
    ) -> bool:
        """Merge both sides of a conflict into the item ``region`` holds now (a
        compare-and-set loop; the replica holds one of them, or a later version).

        Returns True if a merged version was written, False if there was nothing to
        merge (the replica already holds both merged in, or a delete).
        Raises if the item keeps changing, so the record is retried.
        """
        from botocore.exceptions import ClientError

        client = self.clients.client("dynamodb", region)
        ddb_key = to_ddb(self._key_of(dc, sides[0]))
        merge = self._merge_fn(data_class, ref)
        for _ in range(16):
            raw = client.get_item(TableName=table, Key=ddb_key, ConsistentRead=True).get("Item")
            cur = from_ddb(raw)
            if not cur or VERSION_ATTR not in cur or tombstone_kind(cur):
                return False  # deleted (or fenced) since: a delete is not undone by a merge
            merged = _content(cur)
            for side in sides:
                merged = _content(merge(merged, _content(side)))
            if merged == _content(cur):
                return False
            cv = str(cur[VERSION_ATTR])
            stamp = self._next_stamp(region, cv)
            vv = dict(cur.get(VV_ATTR) or {})
            for item in (cur, *sides):
                v = str(item[VERSION_ATTR])
                at = str(item.get(AT_ATTR) or v.rsplit(".", 1)[-1])
                vv[at] = max(v, str(vv.get(at, "")))
                for r, rv in (item.get(VV_ATTR) or {}).items():
                    vv[r] = max(str(rv), str(vv.get(r, "")))
            merged.update(
                {
                    VERSION_ATTR: str(stamp),
                    BASE_ATTR: cv,
                    VV_ATTR: vv,
                    AT_ATTR: region,
                    TOKEN_ATTR: self.new_token(),
                }
            )
            try:
                client.put_item(
                    TableName=table,
                    Item=to_ddb(merged),
                    ConditionExpression=f"#v = :cur AND {FENCE}",
                    ExpressionAttributeNames={"#v": VERSION_ATTR, "#d": DEL_ATTR},
                    ExpressionAttributeValues={":cur": {"S": cv}, ":deleted": {"S": DELETED}},
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                continue  # the item moved on: merge into the newer one
            self.counts["merge_write"] += 1
            return True
        raise RuntimeError(f"{region}/{table}: the item kept changing; the merge is retried")

    def _next_stamp(self, region: str, after: str) -> Stamp:
        clock = self._clock(region)
        try:
            return clock.observe(Stamp.parse(after))
        except ClockDriftError:
            # The item's stamp is ahead of our clock: the merge must still order after it.
            a = Stamp.parse(after)
            return Stamp(a.l, a.c + 1, region, clock.node)

    def _put_back(
        self, region: str, table: str, item: dict[str, Any], replaced_by: str
    ) -> dict[str, Any] | None:
        """Write ``item`` back over ``replaced_by``. None on success, else what is there now."""
        from botocore.exceptions import ClientError

        # Marked as a repair: a detector that reads this record without having seen the
        # version land (a cold start) must not take it for the landing and publish the
        # version it replaced as its parent.
        back = {**item, FIX_ATTR: item[VERSION_ATTR]}
        try:
            self.clients.client("dynamodb", region).put_item(
                TableName=table,
                Item=to_ddb(back),
                ConditionExpression="#v = :cur",
                ExpressionAttributeNames={"#v": VERSION_ATTR},
                ExpressionAttributeValues={":cur": {"S": replaced_by}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            log.info("repair skipped: the item moved on", region=region, table=table)
            return from_ddb(cast(dict[str, Any] | None, exc.response.get("Item"))) or {}
        return None


def _token(item: dict[str, Any]) -> str:
    """A write's random token: part of its conflict's ID, so the ID reveals nothing."""
    return str(item.get(TOKEN_ATTR) or "")
