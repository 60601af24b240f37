"""The data collector: parallel, streaming reads of every table the data checks look at.

Work is cut into *units*: (region, table, segment) for ``source="scan"`` (DynamoDB
parallel scan, ``Segment``/``TotalSegments``), (region, table) for
``source="export"``. A thread pool runs them across regions and tables at once.
Each unit reads page by page (or export line by line), hands each raw item to
the visitors of its roles and drops it: no table is ever held in memory. Per
unit it keeps counters and the (few) suspicious keys it met, merged under a
lock when the unit ends.

What is read:

==============  =====================================  ===============================
role            tables                                 attributes read
==============  =====================================  ===============================
``directory``   the directory, in one region           the key, ``home_region``,
                                                       ``jurisdiction``, ``status``,
                                                       ``moving_to``, ``moved_from``,
                                                       ``rk_del``
``pii``         every global table and every           whole items: names are matched
                conflict log, in every region where    on every item, at any depth;
                it exists; unlisted copies of global   values on a sample (1 item in
                classes                                ``value_every``; every item
                                                       with ``--deep``); key values
                                                       (table and index keys) on
                                                       every item
``placement``   every pinned table, and every copy     the key and ``rk_del``
                of one, in every region where it
                exists (extra regions included)
==============  =====================================  ===============================

A profile's personal data is never read in ``scan`` mode (an export holds whole
items; only the key is looked at). Whatever is read is classified and dropped:
findings name items by keyed pseudonym and values by kind
(:mod:`residency.audit.safety`). Tombstones (``rk_del``: deleted, moved, erased)
hold only a key and regionkit's ``rk_*`` attributes: they are counted, never
judged as personal data.

Order: the directory is read first (phase A, with the global tables), and only
its *interesting* entries are kept: those whose home differs from the home hint
in the user ID (a finished or corrupted move) or that are ``moving``. Memory is
therefore O(moved users), not O(users). The pinned tables are read next
(phase B): an item is *suspect* when its region's jurisdiction is not its
subject's (the directory's, else the ID hint's). After the scan the suspects are
resolved: misplaced items, subjects present in two jurisdictions (a key-only
``Query`` in the subject's own jurisdiction confirms the second copy: O(violations)
point reads), and directory entries that disagree with where the profile is.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from residency.audit.clients import error_reason
from residency.audit.context import AuditContext, ProgressEvent
from residency.audit.inventory import TableState, inventory_of
from residency.audit.safety import USER_ID
from residency.audit.severity import Harm, severity_of
from residency.logs import get_logger
from residency.pii_detect import KIND_TEXT
from residency.policy import PinnedDataClass
from residency.tables import TablePlan

__all__ = [
    "DataScan",
    "DirectoryProblem",
    "Duplicate",
    "Misplaced",
    "PiiHit",
    "TableScan",
    "run_data_scan",
]

log = get_logger("regionkit.audit")

PLACEMENT_CHECKS = (
    "data.pinned_placement",
    "data.profile_duplicates",
    "data.directory_consistency",
)
PII_CHECK = "data.global_pii"
DIRECTORY_FIELDS = ("home_region", "jurisdiction", "status", "moving_to", "moved_from")
TOMBSTONE = "rk_del"
DIRECTORY_STATUSES = frozenset({"active", "moving"})
_EXAMPLES = 10
_WHOLE_ITEM_PAGE = 500  # items per Scan page when whole items are read (the PII role)
_MAX_SUSPECTS = 100_000
_MAX_PROBLEMS = 10_000


# --- results ----------------------------------------------------------------------------


@dataclass
class TableScan:
    """One table in one region: what was read, how, and what went wrong."""

    region: str
    plan: TablePlan
    arn: str
    roles: frozenset[str]
    source: str
    segments: int
    estimate: int | None = None
    items: int = 0
    started: float | None = None
    ended: float | None = None
    errors: list[str] = field(default_factory=list)
    sampled: bool = False
    pending: int = 0
    slot: tuple[str, str] = ("", "")
    tombstones: int = 0
    value_checked: int = 0
    copy_of: str | None = None
    # subjects' jurisdiction (None: unattributable) -> items, for pinned tables
    by_jurisdiction: Counter[str | None] = field(default_factory=Counter)

    @property
    def complete(self) -> bool:
        return not self.errors and not self.sampled

    @property
    def ms(self) -> int:
        if self.started is None or self.ended is None:
            return 0
        return int((self.ended - self.started) * 1000)


@dataclass(frozen=True)
class Misplaced:
    region: str
    table: str
    data_class: str
    key: str  # the item's keyed pseudonym
    subject: str | None  # the subject's keyed pseudonym, when the key is a user ID
    found: str  # the jurisdiction of the region it is stored in
    expected: str | None  # the subject's jurisdiction, None when unknown
    basis: str  # "directory" | "id-hint" | "unattributable" | "moved"
    note: str = ""


@dataclass(frozen=True)
class Duplicate:
    data_class: str
    subject: str  # keyed pseudonym
    jurisdictions: tuple[str, ...]
    regions: tuple[str, ...]
    moving: bool
    note: str = ""
    unknown: tuple[str, ...] = ()  # regions that could not be read in full


@dataclass(frozen=True)
class DirectoryProblem:
    region: str  # where the entry (or the profile) was read
    table: str
    key: str  # the entry's keyed pseudonym
    reason: str  # written by regionkit; never a value read from the entry
    severity: str = ""  # "" : the check's own


@dataclass
class PiiHit:
    """Personal data found in one place (``attribute`` path) of one table's items.

    ``match``: ``name`` (the attribute is named as PII), ``value`` (a sampled value is
    PII-shaped) or ``key`` (a table or index key value is PII-shaped, on every item);
    ``kind``: ``name`` or the value's kind (:data:`residency.pii_detect.PiiKind`).
    """

    region: str
    table: str
    attribute: str
    match: str = "name"
    kind: str = "name"
    count: int = 0
    examples: list[str] = field(default_factory=list)  # keyed pseudonyms of items


@dataclass
class DataScan:
    tables: dict[tuple[str, str], TableScan] = field(default_factory=dict)
    directory_region: str | None = None
    directory_table: str | None = None
    directory_error: str | None = None
    directory_entries: int = 0
    interesting: int = 0
    misplaced: list[Misplaced] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    directory_problems: list[DirectoryProblem] = field(default_factory=list)
    directory_problem_count: int = 0
    pii: dict[tuple[str, str, str, str, str], PiiHit] = field(default_factory=dict)
    lookups: int = 0
    lookup_errors: list[str] = field(default_factory=list)
    unverified_duplicates: int = 0
    suspects_dropped: int = 0
    export_errors: list[tuple[str, str]] = field(default_factory=list)  # (export ARN, reason)
    placement_scanned: bool = False
    pii_scanned: bool = False

    def pinned_scans(self) -> list[TableScan]:
        return [t for t in self.tables.values() if "placement" in t.roles]

    def global_scans(self) -> list[TableScan]:
        return [t for t in self.tables.values() if "pii" in t.roles]

    @property
    def placement_complete(self) -> bool:
        return all(t.complete for t in self.pinned_scans())


# --- the directory map -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Dir:
    home_region: str
    home_j: str | None
    status: str
    moving_to: str | None
    moving_j: str | None
    moved_from: str | None
    moved_from_j: str | None

    @property
    def allowed(self) -> frozenset[str]:
        out = {j for j in (self.home_j,) if j}
        if self.status == "moving" and self.moving_j:
            out.add(self.moving_j)
        return frozenset(out)


@dataclass(frozen=True)
class _Suspect:
    data_class: str
    subject: str | None  # the raw user ID: kept in memory, never shown
    key: str  # the item's keyed pseudonym
    region: str
    table: str
    found: str
    expected: str | None
    basis: str
    note: str = ""


@dataclass(frozen=True)
class _Case:
    """One subject's data of one pinned class, to resolve against the directory."""

    data_class: str
    subject: str  # the raw user ID: kept in memory, never shown
    who: str  # as reports show it
    suspects: list[_Suspect]
    unread: tuple[str, ...]


# --- units ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    region: str
    plan: TablePlan
    roles: frozenset[str]
    segment: int
    total: int
    limit: int | None
    slot: tuple[str, str]
    export_arn: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.slot


@dataclass
class _Acc:
    """What one unit found; merged into the shared result when it ends."""

    items: int = 0
    sampled: bool = False
    tombstones: int = 0
    value_checked: int = 0
    by_j: Counter[str | None] = field(default_factory=Counter)
    pii: dict[tuple[str, str, str], PiiHit] = field(default_factory=dict)
    suspects: list[_Suspect] = field(default_factory=list)
    sightings: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    entries: dict[str, _Dir] = field(default_factory=dict)
    entry_count: int = 0
    problems: list[DirectoryProblem] = field(default_factory=list)
    problem_count: int = 0


def _s(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if isinstance(value, dict):
        s = value.get("S")
        return s if isinstance(s, str) else None
    return None


def _key_attrs(desc: dict[str, Any] | None, plan: TablePlan) -> tuple[str, ...]:
    """The table's key attributes and every index's (GSI and LSI) key attributes; for the
    conflict log, also ``key``: the key of the item each record is about."""
    names = [plan.partition_key] + ([plan.sort_key] if plan.sort_key else [])
    if plan.kind == "system":
        names.append("key")
    for k in (desc or {}).get("KeySchema") or []:
        names.append(str(k.get("AttributeName")))
    for index in [
        *((desc or {}).get("GlobalSecondaryIndexes") or []),
        *((desc or {}).get("LocalSecondaryIndexes") or []),
    ]:
        names.extend(str(k.get("AttributeName")) for k in index.get("KeySchema") or [])
    return tuple(dict.fromkeys(n for n in names if n))


class _Scanner:
    def __init__(self, ctx: AuditContext) -> None:
        self.ctx = ctx
        self.policy = ctx.policy
        self.opts = ctx.options
        self.result = DataScan()
        self.lock = threading.Lock()
        self.interesting: dict[str, _Dir] = {}
        self.sightings: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.suspects: list[_Suspect] = []
        self.detector = ctx.detector
        self.value_every = max(1, self.opts.value_every)
        self.regions = list(self.opts.regions)
        # where data is read: the policy regions, and extra regions where tables exist
        self.scan_regions = list(ctx.all_regions)
        self.rj = ctx.region_jurisdiction
        self.need_placement = ctx.wants(*PLACEMENT_CHECKS)
        self.need_pii = ctx.wants(PII_CHECK)
        self.exports: dict[tuple[str, str], str] = {}
        self.key_attrs: dict[tuple[str, str], tuple[str, ...]] = {}

    # --- planning ---

    def _segments(self, desc: dict[str, Any] | None) -> int:
        if self.opts.source == "export":
            return 1
        if self.opts.segments:
            return max(1, min(self.opts.segments, 1_000_000))
        count = int((desc or {}).get("ItemCount") or 0)
        size = int((desc or {}).get("TableSizeBytes") or 0)
        n = max(math.ceil(size / (256 * 2**20)), math.ceil(count / 20_000), 1)
        return min(n, self.opts.max_segments)

    def _table_scan(
        self,
        region: str,
        plan: TablePlan,
        roles: frozenset[str],
        slot: tuple[str, str] | None = None,
    ) -> TableScan:
        key = slot or (region, plan.table)
        existing = self.result.tables.get(key)
        if existing is not None:
            existing.roles = existing.roles | roles
            return existing
        inv = inventory_of(self.ctx)
        state = inv.table(region, plan.table)
        desc = state.description if state else None
        ts = TableScan(
            region=region,
            plan=plan,
            arn=state.arn if state else self.ctx.arn(region, plan.table),
            roles=roles,
            source=self.opts.source,
            segments=self._segments(desc),
            estimate=int(desc["ItemCount"]) if desc and "ItemCount" in desc else None,
            slot=key,
            copy_of=state.copy_of if state else None,
        )
        self.key_attrs[(region, plan.table)] = _key_attrs(desc, plan)
        self.result.tables[key] = ts
        problem = self.ctx.down(region)
        if problem is None and state is not None:
            if state.exists is False:
                problem = "the table does not exist in this region"
            elif state.exists is None:
                problem = inv.regions[region].error or "the region could not be listed"
            elif state.error:
                problem = state.error
        if state is None:
            problem = problem or "the table was not inventoried"
        if problem:
            ts.errors.append(problem)
        return ts

    def _units(self, ts: TableScan) -> list[_Unit]:
        if ts.errors:
            return []
        limit = None
        if self.opts.sample is not None:
            limit = max(1, math.ceil(self.opts.sample / ts.segments))
        arn = self.exports.get((ts.region, ts.plan.table))
        ts.pending = ts.segments
        return [
            _Unit(ts.region, ts.plan, ts.roles, s, ts.segments, limit, ts.slot, arn)
            for s in range(ts.segments)
        ]

    def _announce(self, ts: TableScan) -> None:
        self.ctx.progress(
            ProgressEvent("scan", f"{ts.region}/{ts.plan.table}", total=ts.estimate or 0)
        )

    # --- reading ---

    def _projection(self, unit: _Unit) -> tuple[str, dict[str, str]] | None:
        """The attributes to read; None: whole items (the PII role looks at every name)."""
        if "pii" in unit.roles:
            return None
        names: list[str] = [unit.plan.partition_key]
        if unit.plan.sort_key:
            names.append(unit.plan.sort_key)
        names.append(TOMBSTONE)
        if "placement" in unit.roles:  # index keys too: every key is checked for PII
            names.extend(self.key_attrs.get((unit.region, unit.plan.table), ()))
        if "directory" in unit.roles:
            names.extend(DIRECTORY_FIELDS)
        seen: dict[str, str] = {}
        for n in names:
            seen.setdefault(n, f"#a{len(seen)}")
        return ", ".join(seen.values()), {v: k for k, v in seen.items()}

    def _scan_pages(self, unit: _Unit) -> Iterable[list[dict[str, Any]]]:
        client = self.ctx.clients.client("dynamodb", unit.region)
        kwargs: dict[str, Any] = {"TableName": unit.plan.table}
        projected = self._projection(unit)
        if projected is not None:
            kwargs["ProjectionExpression"], kwargs["ExpressionAttributeNames"] = projected
        if unit.total > 1:
            kwargs["Segment"] = unit.segment
            kwargs["TotalSegments"] = unit.total
        remaining = unit.limit
        # Whole items come in smaller pages: the memory in flight is workers x page size,
        # and a 1 MB page of whole items is several MB once parsed.
        cap = _WHOLE_ITEM_PAGE if projected is None else 1000
        if projected is None:
            kwargs["Limit"] = cap
        while True:
            if remaining is not None:
                kwargs["Limit"] = min(remaining, cap)
            page = client.scan(**kwargs)
            items: list[dict[str, Any]] = page.get("Items", [])
            yield items
            if remaining is not None:
                remaining -= len(items)
                if remaining <= 0:
                    return
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _export_pages(self, unit: _Unit) -> Iterable[list[dict[str, Any]]]:
        from residency.audit.export import iter_export_items, start_export, wait_for_export

        ddb = self.ctx.clients.client("dynamodb", unit.region)
        s3 = self.ctx.clients.client("s3", unit.region)
        arn = unit.export_arn
        if arn is None:
            if not self.opts.export_bucket:
                raise ValueError(
                    "no --export-bucket, and no --export-arn names an export of this table"
                )
            j = self.rj.get(unit.region)
            bucket = self.opts.export_bucket.format(region=unit.region, jurisdiction=j or "")
            allowed = None
            if unit.plan.kind == "pinned" and j is not None:
                allowed = frozenset(self.policy.jurisdictions[j].regions)
            prefix = "/".join(
                (self.opts.export_prefix.strip("/"), self.opts.run_id, unit.region, unit.plan.table)
            )
            state = inventory_of(self.ctx).table(unit.region, unit.plan.table)
            table_arn = state.arn if state else self.ctx.arn(unit.region, unit.plan.table)
            arn = start_export(
                ddb,
                s3,
                table_arn=table_arn,
                bucket=bucket,
                prefix=prefix,
                allowed_bucket_regions=allowed,
            )
            self.ctx.progress(
                ProgressEvent(
                    "export", f"{unit.region}/{unit.plan.table}", message=f"export started: {arn}"
                )
            )
        desc = wait_for_export(
            ddb, arn, timeout_s=self.opts.export_timeout_s, poll_s=self.opts.export_poll_s
        )
        page: list[dict[str, Any]] = []
        for item in iter_export_items(s3, desc, limit=unit.limit):
            page.append(item)
            if len(page) >= 1000:
                yield page
                page = []
        yield page

    def _run_unit(self, unit: _Unit) -> tuple[_Acc, str | None]:
        acc = _Acc()
        down = self.ctx.down(unit.region)
        if down:
            return acc, down
        visit = self._visitor(unit, acc)
        key = f"{unit.region}/{unit.plan.table}"
        pages = self._export_pages(unit) if self.opts.source == "export" else self._scan_pages(unit)
        try:
            for items in pages:
                for raw in items:
                    visit(raw)
                acc.items += len(items)
                self.ctx.progress(ProgressEvent("scan", key, advance=len(items)))
            if unit.limit is not None and acc.items >= unit.limit:
                acc.sampled = True
        except Exception as exc:
            self.ctx.note_failure(unit.region, exc)
            log.warning(
                "audit.scan.failed",
                region=unit.region,
                table=unit.plan.table,
                segment=unit.segment,
                error=type(exc).__name__,
            )
            return acc, error_reason(exc)
        return acc, None

    # --- visitors (called once per item: keep them lean) ---

    def _visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        fns: list[Callable[[dict[str, Any]], None]] = []
        if "directory" in unit.roles:
            fns.append(self._directory_visitor(unit, acc))
        if "pii" in unit.roles:
            fns.append(self._pii_visitor(unit, acc))
        if "placement" in unit.roles:
            fns.append(self._placement_visitor(unit, acc))
        if len(fns) == 1:
            return fns[0]

        def all_of(raw: dict[str, Any]) -> None:
            for fn in fns:
                fn(raw)

        return all_of

    def _key_text(self, plan: TablePlan, raw: dict[str, Any]) -> str:
        """The item's keyed pseudonym."""
        return self.ctx.item(
            plan.table,
            raw.get(plan.partition_key),
            raw.get(plan.sort_key) if plan.sort_key else None,
        )

    def _pii_visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        plan, region = unit.plan, unit.region
        detector = self.detector
        every = self.value_every
        keys = self.key_attrs.get((region, plan.table), (plan.partition_key,))
        seen = [0]

        def note(path: str, match: str, kind: str, raw: dict[str, Any]) -> None:
            hit = acc.pii.get((path, match, kind))
            if hit is None:
                hit = acc.pii[(path, match, kind)] = PiiHit(
                    region, plan.table, path, match=match, kind=kind
                )
            hit.count += 1
            if len(hit.examples) < _EXAMPLES:
                hit.examples.append(self._key_text(plan, raw))

        def visit(raw: dict[str, Any]) -> None:
            if TOMBSTONE in raw:
                acc.tombstones += 1
            seen[0] += 1
            values = seen[0] % every == 1 or every == 1
            if values:
                acc.value_checked += 1
            for hit in detector.scan(raw, values=values):
                if hit.match == "value" and hit.path in keys:
                    continue  # key values are checked below, on every item
                note(hit.path, hit.match, hit.kind, raw)
            for name in keys:
                kind = detector.key_kind(raw.get(name))
                if kind is not None:
                    note(name, "key", kind, raw)

        return visit

    def _placement_visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        plan, region = unit.plan, unit.region
        found_j = self.rj.get(region, "?")
        interesting = self.interesting
        rj = self.rj
        pk_name = plan.partition_key
        dc = plan.data_class
        by_j = acc.by_j
        detector = self.detector
        # the partition key is judged as a user ID below; the other keys by kind
        other_keys = tuple(k for k in self.key_attrs.get((region, plan.table), ()) if k != pk_name)
        key_pii = self._key_pii_counter(unit, acc, other_keys)
        suspect = self._suspect_recorder(unit, acc)

        def unattributable(raw: dict[str, Any]) -> None:
            by_j[None] += 1
            kind = detector.key_kind(raw.get(pk_name))
            suspect(None, raw, None, "unattributable", KIND_TEXT[kind] if kind else "")

        def visit(raw: dict[str, Any]) -> None:
            if TOMBSTONE in raw:  # a key and rk_* attributes only: no personal data
                acc.tombstones += 1
                return
            if other_keys:
                key_pii(raw)
            pk = raw.get(pk_name)
            subject = pk.get("S") if isinstance(pk, dict) else None
            if not isinstance(subject, str):
                unattributable(raw)
                return
            entry = interesting.get(subject)
            if entry is not None:
                by_j[entry.home_j] += 1
                acc.sightings.setdefault((dc, subject), set()).add(region)
                if found_j not in entry.allowed:
                    suspect(subject, raw, entry.home_j, "directory")
                return
            m = USER_ID.match(subject)
            if m is None:
                unattributable(raw)
                return
            expected = rj.get(m.group(1))
            by_j[expected] += 1
            if expected != found_j:
                suspect(subject, raw, expected, "id-hint")

        return visit

    def _key_pii_counter(
        self, unit: _Unit, acc: _Acc, keys: tuple[str, ...]
    ) -> Callable[[dict[str, Any]], None]:
        """Counts personal data in an item's ``keys`` (index and sort keys), by kind."""
        plan, region, detector = unit.plan, unit.region, self.detector

        def key_pii(raw: dict[str, Any]) -> None:
            for name in keys:
                kind = detector.key_kind(raw.get(name))
                if kind is not None:
                    hit = acc.pii.get((name, "key", kind))
                    if hit is None:
                        hit = acc.pii[(name, "key", kind)] = PiiHit(
                            region, plan.table, name, match="key", kind=kind
                        )
                    hit.count += 1
                    if len(hit.examples) < _EXAMPLES:
                        hit.examples.append(self._key_text(plan, raw))

        return key_pii

    def _suspect_recorder(self, unit: _Unit, acc: _Acc) -> Callable[..., None]:
        """Records an item that may sit outside its subject's jurisdiction."""
        plan, region = unit.plan, unit.region
        found_j = self.rj.get(region, "?")
        dc = plan.data_class

        def suspect(
            subject: str | None,
            raw: dict[str, Any],
            expected: str | None,
            basis: str,
            note: str = "",
        ) -> None:
            acc.suspects.append(
                _Suspect(
                    dc,
                    subject,
                    self._key_text(plan, raw),
                    region,
                    plan.table,
                    found_j,
                    expected,
                    basis,
                    note,
                )
            )

        return suspect

    def _directory_visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        plan, rj = unit.plan, self.rj
        pk_name = plan.partition_key
        jurisdictions = frozenset(self.policy.jurisdictions)
        describe = self.detector.describe
        count_tombstones = 0 if "pii" in unit.roles else 1  # else the PII visitor counts
        shown = self._shown_field
        problem = self._problem_recorder(unit, acc)

        def visit(raw: dict[str, Any]) -> None:
            if TOMBSTONE in raw:  # a deleted or erased entry
                acc.tombstones += count_tombstones
                return
            acc.entry_count += 1
            uid = _s(raw, pk_name)
            if uid is None:
                problem(raw, "the key is not a string user ID")
                return
            m = USER_ID.match(uid)
            if m is None:
                kind = self.detector.value_kind(uid)
                problem(
                    raw,
                    "the key is not a regionkit user ID"
                    + (f" (it is {KIND_TEXT[kind]})" if kind else ""),
                )
                return
            home = _s(raw, "home_region")
            jur = _s(raw, "jurisdiction")
            status = _s(raw, "status") or "active"
            moving_to = _s(raw, "moving_to")
            moved_from = _s(raw, "moved_from")
            home_j = rj.get(home) if home else None
            if home is None or home_j is None:
                problem(raw, f"home_region holds {describe(home)}, not a region of the policy")
                return
            if jur != home_j:
                problem(
                    raw,
                    f"jurisdiction {shown(jur, jurisdictions)} does not match home_region "
                    f"{home} ({home_j})",
                )
            if status not in DIRECTORY_STATUSES:
                problem(raw, f"status holds {describe(status)}, neither 'active' nor 'moving'")
            moving_j = rj.get(moving_to) if moving_to else None
            if status == "moving" and moving_j is None:
                problem(
                    raw,
                    f"status is 'moving' but moving_to holds {shown(moving_to, rj)}, "
                    "not a policy region",
                )
            hint_j = rj.get(m.group(1))
            if home_j != hint_j or status == "moving":
                acc.entries[uid] = _Dir(
                    home,
                    home_j,
                    status,
                    moving_to,
                    moving_j,
                    moved_from if moved_from in rj else None,
                    rj.get(moved_from) if moved_from else None,
                )

        return visit

    def _shown_field(self, value: str | None, known: frozenset[str] | dict[str, str]) -> str:
        """A field's value only when it is one of regionkit's own names; else its kind."""
        if value is not None and value in known:
            return repr(value)
        return f"(holding {self.detector.describe(value)})"

    def _problem_recorder(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any], str], None]:
        """Counts a problem of a directory entry, and keeps the first few."""
        plan, region = unit.plan, unit.region

        def problem(raw: dict[str, Any], reason: str) -> None:
            acc.problem_count += 1
            if len(acc.problems) < _MAX_PROBLEMS:
                key = self._key_text(plan, raw)
                acc.problems.append(DirectoryProblem(region, plan.table, key, reason))

        return problem

    # --- merging ---

    def _merge(self, unit: _Unit, acc: _Acc, error: str | None) -> None:
        with self.lock:
            ts = self.result.tables[unit.key]
            ts.items += acc.items
            ts.sampled = ts.sampled or acc.sampled
            if error:
                ts.errors.append(
                    f"segment {unit.segment}/{unit.total}: {error}" if unit.total > 1 else error
                )
            ts.tombstones += acc.tombstones
            ts.value_checked += acc.value_checked
            ts.by_jurisdiction.update(acc.by_j)
            for (path, match, kind), hit in acc.pii.items():
                mine = self.result.pii.setdefault(
                    (unit.region, unit.plan.table, path, match, kind),
                    PiiHit(unit.region, unit.plan.table, path, match=match, kind=kind),
                )
                mine.count += hit.count
                mine.examples.extend(hit.examples[: max(0, _EXAMPLES - len(mine.examples))])
            room = _MAX_SUSPECTS - len(self.suspects)
            self.suspects.extend(acc.suspects[: max(0, room)])
            self.result.suspects_dropped += max(0, len(acc.suspects) - max(0, room))
            for k, regions in acc.sightings.items():
                self.sightings[k].update(regions)
            if "directory" in unit.roles:
                self.interesting.update(acc.entries)
                self.result.directory_entries += acc.entry_count
                self.result.directory_problem_count += acc.problem_count
                self.result.directory_problems.extend(acc.problems)
            ts.pending -= 1
            ts.ended = time.perf_counter()
            finished = ts.pending == 0
        if finished:
            self.ctx.progress(ProgressEvent("scan", f"{unit.region}/{unit.plan.table}", done=True))

    def _submit(self, pool: ThreadPoolExecutor, units: list[_Unit]) -> list[Future[None]]:
        def run(unit: _Unit) -> None:
            ts = self.result.tables[unit.key]
            with self.lock:
                if ts.started is None:
                    ts.started = time.perf_counter()
            acc, error = self._run_unit(unit)
            self._merge(unit, acc, error)

        return [pool.submit(run, u) for u in units]

    # --- the whole scan ---

    def _resolve_exports(self) -> None:
        for arn in self.opts.export_arns:
            parts = arn.split(":")
            region = parts[3] if len(parts) > 5 else ""
            try:
                desc = self.ctx.clients.client("dynamodb", region).describe_export(ExportArn=arn)
                table_arn = str(desc["ExportDescription"]["TableArn"])
                table = table_arn.split(":table/", 1)[1].split("/", 1)[0]
            except Exception as exc:
                self.result.export_errors.append((arn, error_reason(exc)))
                continue
            self.exports[(region, table)] = arn

    def run(self) -> DataScan:
        res = self.result
        pinned = [p for p in self.ctx.plans if p.kind == "pinned"]
        globals_ = [p for p in self.ctx.plans if p.kind == "global"]
        system = [p for p in self.ctx.plans if p.kind == "system"]
        directory = next((p for p in globals_ if p.is_directory), None)
        inventory = inventory_of(self.ctx)
        copies = inventory.copies()

        def wanted(plan: TablePlan, region: str) -> bool:
            """Read where the policy places the table (a missing one is an ERROR), and
            wherever else it exists (extra regions included)."""
            if region in self.regions and region in plan.regions:
                return True
            state = inventory.table(region, plan.table)
            return state is not None and state.exists is True

        if not self.need_placement:
            directory = None
        candidates = [r for r in self.regions if directory and r in directory.regions]
        if self.opts.source == "export":
            self._resolve_exports()
        with ThreadPoolExecutor(
            max_workers=max(1, self.opts.workers), thread_name_prefix="regionkit-audit-scan"
        ) as pool:
            futures: list[Future[None]] = []
            first: tuple[TableScan, list[Future[None]]] | None = None
            if self.need_pii:
                first = self._submit_pii_scans(
                    pool, futures, [*globals_, *system], copies, wanted, directory, candidates
                )
            res.pii_scanned = self.need_pii
            if self.need_placement:
                res.placement_scanned = True
                if directory is not None:
                    res.directory_table = directory.table
                    futures += self._read_directory(pool, directory, candidates, first)
                else:
                    res.directory_error = "the policy has no directory data class"
                res.interesting = len(self.interesting)
                # phase B: every pinned table in every selected region, wherever else
                # it exists, and every unlisted copy of a pinned class
                targets = [(r, p) for p in pinned for r in self.scan_regions if wanted(p, r)]
                targets += [(c.region, c.plan) for c in copies if c.plan.kind == "pinned"]
                for region, plan in targets:
                    ts = self._table_scan(region, plan, frozenset({"placement"}))
                    self._announce(ts)
                    futures += self._submit(pool, self._units(ts))
            wait(futures)
            for f in futures:
                f.result()  # a bug in a worker surfaces here: never swallowed
        if self.need_placement:
            self._resolve()
        return res

    def _submit_pii_scans(
        self,
        pool: ThreadPoolExecutor,
        futures: list[Future[None]],
        plans: list[TablePlan],
        copies: list[TableState],
        wanted: Callable[[TablePlan, str], bool],
        directory: TablePlan | None,
        candidates: list[str],
    ) -> tuple[TableScan, list[Future[None]]] | None:
        """Phase A: the global tables' and conflict logs' PII scan, the directory (one
        replica) with it, and unlisted copies of global classes. Appends to ``futures``;
        returns the directory scan made with the PII scan, if any."""
        first: tuple[TableScan, list[Future[None]]] | None = None
        for plan in plans:
            for region in self.scan_regions:
                if not wanted(plan, region):
                    continue
                combined = plan is directory and bool(candidates) and region == candidates[0]
                roles = frozenset({"pii", "directory"} if combined else {"pii"})
                ts = self._table_scan(region, plan, roles)
                self._announce(ts)
                submitted = self._submit(pool, self._units(ts))
                futures += submitted
                if combined:
                    first = (ts, submitted)
        for state in copies:
            if state.plan.kind == "global":
                ts = self._table_scan(state.region, state.plan, frozenset({"pii"}))
                self._announce(ts)
                futures += self._submit(pool, self._units(ts))
        return first

    def _read_directory(
        self,
        pool: ThreadPoolExecutor,
        plan: TablePlan,
        candidates: list[str],
        first: tuple[TableScan, list[Future[None]]] | None,
    ) -> list[Future[None]]:
        """Read the directory from the first replica that answers completely."""
        res = self.result
        submitted: list[Future[None]] = []
        if not candidates:
            res.directory_error = "no selected region holds the directory"
        for i, region in enumerate(candidates):
            if i == 0 and first is not None:
                ts, futures = first
            else:
                slot = (region, plan.table)
                if slot in res.tables:  # already read for PII: read it again for the directory
                    slot = (region, plan.table + "#directory")
                ts = self._table_scan(region, plan, frozenset({"directory"}), slot=slot)
                self._announce(ts)
                futures = self._submit(pool, self._units(ts))
                submitted += futures
            wait(futures)
            for f in futures:
                f.result()
            if not ts.errors:
                res.directory_region = region
                res.directory_error = None
                return submitted
            res.directory_error = f"{region}: " + "; ".join(ts.errors)
            with self.lock:  # a partial directory is no directory
                self.interesting.clear()
                res.directory_entries = 0
                res.directory_problems.clear()
                res.directory_problem_count = 0
        return submitted

    # --- after the scan ---

    def _lookup(self, region: str, plan: TablePlan, subject: str) -> bool:
        client = self.ctx.clients.client("dynamodb", region)
        page = client.query(
            TableName=plan.table,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": plan.partition_key},
            ExpressionAttributeValues={":v": {"S": subject}},
            ProjectionExpression="#k",
            Limit=1,
        )
        return int(page.get("Count", 0)) > 0

    def _present_in(self, plan: TablePlan, subject: str, jurisdiction: str) -> bool | None:
        """Whether ``subject`` has an item in ``jurisdiction`` (None: could not tell)."""
        regions = [
            r
            for r in self.policy.jurisdictions[jurisdiction].regions
            if r in self.regions and not self.ctx.down(r)
        ]
        if not regions or self.result.lookups >= self.opts.max_lookups:
            return None
        for region in regions:
            self.result.lookups += 1
            try:
                if self._lookup(region, plan, subject):
                    return True
            except Exception as exc:
                self.ctx.note_failure(region, exc)
                self.result.lookup_errors.append(f"{region}: {error_reason(exc)}")
                return None
        return False

    def _unread(self, data_class: str) -> tuple[str, ...]:
        """Regions whose copy of ``data_class`` was not read in full (error or sample)."""
        out = {
            t.region
            for t in self.result.tables.values()
            if "placement" in t.roles and t.plan.data_class == data_class and not t.complete
        }
        out |= {r for r in self.regions if self.ctx.down(r)}
        return tuple(sorted(out))

    def _resolve(self) -> None:
        res = self.result
        ctx = self.ctx
        plans = {p.data_class: p for p in ctx.plans if p.kind == "pinned"}
        by_subject: dict[tuple[str, str | None], list[_Suspect]] = defaultdict(list)
        for s in self.suspects:
            if s.subject is None:  # unattributable: nothing to resolve
                res.misplaced.append(_misplaced(ctx, s))
            else:
                by_subject[(s.data_class, s.subject)].append(s)
        subjects = set(by_subject) | set(self.sightings)
        for dc, subject in sorted(subjects, key=lambda k: (k[0], k[1] or "")):
            if subject is None:
                continue
            suspects = by_subject.get((dc, subject), [])
            plan = plans[dc]
            unread = self._unread(dc)
            entry = self.interesting.get(subject)
            case = _Case(dc, subject, ctx.subject(subject), suspects, unread)
            if entry is None:
                self._resolve_unlisted(case, plan)
            elif entry.status == "moving":
                self._resolve_moving(case, entry)
            else:
                self._resolve_homed(case, entry)

    def _resolve_unlisted(self, case: _Case, plan: TablePlan) -> None:
        """A subject the directory does not list as interesting: homed where its ID says."""
        res, suspects = self.result, case.suspects
        res.misplaced.extend(_misplaced(self.ctx, s) for s in suspects)
        expected = suspects[0].expected if suspects else None
        if expected is None or expected not in self.policy.jurisdictions:
            return
        there = self._present_in(plan, case.subject, expected)
        if there is None:
            res.unverified_duplicates += 1
        elif there:
            js = sorted({s.found for s in suspects} | {expected})
            regions = sorted({s.region for s in suspects})
            res.duplicates.append(
                Duplicate(
                    case.data_class, case.who, tuple(js), tuple(regions), False, unknown=case.unread
                )
            )

    def _sighted(self, case: _Case) -> tuple[set[str], set[str]]:
        """The regions, and their jurisdictions, where the subject's data was read."""
        seen_regions = self.sightings.get((case.data_class, case.subject), set())
        return seen_regions, {self.rj.get(r, "?") for r in seen_regions}

    def _resolve_moving(self, case: _Case, entry: _Dir) -> None:
        """A subject whose directory entry says a move is in progress."""
        res, dc = self.result, case.data_class
        seen_regions, seen_j = self._sighted(case)
        where = _where(seen_regions, case.unread)
        res.misplaced.extend(_misplaced(self.ctx, s) for s in case.suspects)
        if entry.home_j in seen_j and entry.moving_j in seen_j and entry.home_j != entry.moving_j:
            res.duplicates.append(
                Duplicate(
                    dc,
                    case.who,
                    tuple(sorted(seen_j)),
                    tuple(sorted(seen_regions)),
                    True,
                    note=f"move in progress from {entry.home_region} to {entry.moving_to}",
                    unknown=case.unread,
                )
            )
        elif seen_j & entry.allowed == {entry.moving_j}:
            self._directory_problem(
                case.subject,
                f"move in progress: the entry still says moving from "
                f"{entry.home_region} to {entry.moving_to}, and the {dc} is {where}: "
                "resume the move to finish it",
                Harm.MOVE_TO_FINISH,
            )
        else:  # not copied yet (or not seen): still a move to resume, not a breach
            self._directory_problem(
                case.subject,
                f"move in progress from {entry.home_region} to {entry.moving_to}; "
                f"the {dc} is {where}: resume the move to finish it",
                Harm.MOVE_TO_FINISH,
            )

    def _resolve_homed(self, case: _Case, entry: _Dir) -> None:
        """A subject the directory homes away from where its user ID was minted."""
        res, ctx, suspects = self.result, self.ctx, case.suspects
        seen_regions, seen_j = self._sighted(case)
        hint = USER_ID.match(case.subject)
        hint_j = self.rj.get(hint.group(1)) if hint else None
        where = _where(seen_regions, case.unread)
        if entry.home_j in seen_j:
            res.misplaced.extend(_misplaced(ctx, s) for s in suspects)
            if len(seen_j) > 1:
                res.duplicates.append(
                    Duplicate(
                        case.data_class,
                        case.who,
                        tuple(sorted(seen_j)),
                        tuple(sorted(seen_regions)),
                        False,
                        unknown=case.unread,
                    )
                )
        elif entry.moved_from_j and entry.moved_from_j in seen_j:
            res.misplaced.extend(
                _misplaced(
                    ctx,
                    s,
                    basis="moved",
                    note=f"left behind by a move from {entry.moved_from} to {entry.home_region}",
                )
                for s in suspects
            )
        elif not entry.moved_from and seen_j and seen_j == {hint_j}:
            # The directory homes the subject in one jurisdiction and the data is in
            # another: personal data outside its subject's jurisdiction (per the
            # directory), whichever of the two is wrong. Always critical.
            self._directory_problem(
                case.subject,
                f"the entry homes the subject in {entry.home_region} ({entry.home_j}) "
                f"but the {case.data_class} is {where} ({hint_j}, where the user ID was "
                "minted): personal data outside its subject's jurisdiction per the "
                "directory, and the router cannot find it",
                Harm.PII_OUTSIDE,
            )
        else:
            res.misplaced.extend(_misplaced(ctx, s) for s in suspects)

    def _directory_problem(self, subject: str, reason: str, harm: str) -> None:
        """A problem of the subject's directory entry, found after the scan."""
        res = self.result
        res.directory_problems.append(
            DirectoryProblem(
                res.directory_region or "?",
                res.directory_table or "?",
                self.ctx.item(res.directory_table or "", subject, typed=False),
                reason,
                severity=severity_of(harm),
            )
        )
        res.directory_problem_count += 1


def _where(seen: set[str], unread: tuple[str, ...]) -> str:
    """Where data was found, claiming "only" only when every other region was read."""
    found = ", ".join(sorted(seen)) or "nowhere read"
    others = [r for r in unread if r not in seen]
    if not others:
        return f"only in {found}"
    return f"in {found}; unknown in {', '.join(others)} (unreadable or sampled)"


def _misplaced(
    ctx: AuditContext, s: _Suspect, basis: str | None = None, note: str = ""
) -> Misplaced:
    return Misplaced(
        region=s.region,
        table=s.table,
        data_class=s.data_class,
        key=s.key,
        subject=ctx.subject(s.subject) if s.subject else None,
        found=s.found,
        expected=s.expected,
        basis=basis or s.basis,
        note=note or s.note,
    )


def run_data_scan(ctx: AuditContext) -> DataScan:
    scan = _Scanner(ctx)
    if not any(isinstance(dc, PinnedDataClass) for dc in ctx.policy.data_classes.values()):
        scan.need_placement = False
    return scan.run()


def table_counts(scan: DataScan) -> Counter[tuple[str, str]]:
    return Counter({k: t.items for k, t in scan.tables.items()})


def data_of(ctx: AuditContext) -> DataScan:
    """The audit's data (collected once per run, shared by every check)."""
    return ctx.once("data", lambda: run_data_scan(ctx))
