"""The data collector: parallel, streaming reads of every table the data checks look at.

Work is cut into *units*: (region, table, segment) for ``source="scan"`` (DynamoDB
parallel scan, ``Segment``/``TotalSegments``), (region, table) for
``source="export"``. A thread pool runs them across regions and tables at once.
Each unit reads page by page (or export line by line), hands each raw item to
the visitors of its roles and drops it: no table is ever held in memory. Per
unit it keeps counters and the (few) suspicious keys it met, merged under a
lock when the unit ends.

What is read, and why so little:

==============  =====================================  ===============================
role            tables                                 attributes read (projection)
==============  =====================================  ===============================
``directory``   the directory, in one region           the key, ``home_region``,
                                                       ``jurisdiction``, ``status``,
                                                       ``moving_to``, ``moved_from``
``pii``         every global table, in every replica   the key and the policy's PII
                                                       attribute *names* (values are
                                                       never looked at or kept)
``placement``   every pinned table, in every region    the key only
==============  =====================================  ===============================

So the audit never reads a profile's personal data at all in ``scan`` mode (an
export holds whole items; only the key and the attribute names are looked at).

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

import json
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
from residency.audit.safety import USER_ID, hashed, safe_key
from residency.logs import get_logger
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
_EXAMPLES = 10
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
    key: str  # safe to show
    subject: str | None  # the user ID, when the key is one
    found: str  # the jurisdiction of the region it is stored in
    expected: str | None  # the subject's jurisdiction, None when unknown
    basis: str  # "directory" | "id-hint" | "unattributable" | "moved"
    note: str = ""


@dataclass(frozen=True)
class Duplicate:
    data_class: str
    subject: str
    jurisdictions: tuple[str, ...]
    regions: tuple[str, ...]
    moving: bool
    note: str = ""


@dataclass(frozen=True)
class DirectoryProblem:
    region: str  # where the entry (or the profile) was read
    table: str
    key: str
    reason: str


@dataclass
class PiiHit:
    region: str
    table: str
    attribute: str
    count: int = 0
    examples: list[str] = field(default_factory=list)


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
    pii: dict[tuple[str, str, str], PiiHit] = field(default_factory=dict)
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
    subject: str | None
    key: str
    region: str
    table: str
    found: str
    expected: str | None
    basis: str


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
    pii: dict[str, PiiHit] = field(default_factory=dict)
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


def _raw_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


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
        self.pii_names = frozenset(ctx.policy.pii_attributes())
        self.regions = list(self.opts.regions)
        self.rj = ctx.region_jurisdiction
        self.need_placement = ctx.wants(*PLACEMENT_CHECKS)
        self.need_pii = ctx.wants(PII_CHECK)
        self.exports: dict[tuple[str, str], str] = {}

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
        inv = self.ctx.inventory()
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
        )
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

    def _projection(self, unit: _Unit) -> tuple[str, dict[str, str]]:
        names: list[str] = [unit.plan.partition_key]
        if unit.plan.sort_key:
            names.append(unit.plan.sort_key)
        if "directory" in unit.roles:
            names.extend(DIRECTORY_FIELDS)
        if "pii" in unit.roles:
            names.extend(sorted(self.pii_names))
        seen: dict[str, str] = {}
        for n in names:
            seen.setdefault(n, f"#a{len(seen)}")
        return ", ".join(seen.values()), {v: k for k, v in seen.items()}

    def _scan_pages(self, unit: _Unit) -> Iterable[list[dict[str, Any]]]:
        client = self.ctx.clients.dynamodb(unit.region)
        projection, names = self._projection(unit)
        kwargs: dict[str, Any] = {
            "TableName": unit.plan.table,
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": names,
        }
        if unit.total > 1:
            kwargs["Segment"] = unit.segment
            kwargs["TotalSegments"] = unit.total
        remaining = unit.limit
        while True:
            if remaining is not None:
                kwargs["Limit"] = min(remaining, 1000)
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

        ddb = self.ctx.clients.dynamodb(unit.region)
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
            state = self.ctx.inventory().table(unit.region, unit.plan.table)
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
        if "pii" in unit.roles and self.pii_names:
            fns.append(self._pii_visitor(unit, acc))
        if "placement" in unit.roles:
            fns.append(self._placement_visitor(unit, acc))
        if len(fns) == 1:
            return fns[0]

        def all_of(raw: dict[str, Any]) -> None:
            for fn in fns:
                fn(raw)

        return all_of

    def _key_text(self, plan: TablePlan, raw: dict[str, Any], *, user_ids_only: bool) -> str:
        pk = raw.get(plan.partition_key)
        s = pk.get("S") if isinstance(pk, dict) else None
        shown = safe_key(s, user_ids_only=user_ids_only) if s is not None else hashed(_raw_key(pk))
        if plan.sort_key:
            sk = raw.get(plan.sort_key)
            sks = sk.get("S") if isinstance(sk, dict) else None
            shown += " / " + (
                safe_key(sks, user_ids_only=user_ids_only)
                if sks is not None
                else hashed(_raw_key(sk))
            )
        return shown

    def _pii_visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        pii = self.pii_names
        plan, region = unit.plan, unit.region

        def visit(raw: dict[str, Any]) -> None:
            found = raw.keys() & pii
            if not found:
                return
            key = self._key_text(plan, raw, user_ids_only=False)
            for name in found:
                hit = acc.pii.get(name)
                if hit is None:
                    hit = acc.pii[name] = PiiHit(region, plan.table, name)
                hit.count += 1
                if len(hit.examples) < _EXAMPLES:
                    hit.examples.append(key)

        return visit

    def _placement_visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        plan, region = unit.plan, unit.region
        found_j = self.rj.get(region, "?")
        interesting = self.interesting
        rj = self.rj
        pk_name = plan.partition_key
        dc = plan.data_class

        def suspect(
            subject: str | None, raw: dict[str, Any], expected: str | None, basis: str
        ) -> None:
            acc.suspects.append(
                _Suspect(
                    dc,
                    subject,
                    self._key_text(plan, raw, user_ids_only=True),
                    region,
                    plan.table,
                    found_j,
                    expected,
                    basis,
                )
            )

        def visit(raw: dict[str, Any]) -> None:
            pk = raw.get(pk_name)
            subject = pk.get("S") if isinstance(pk, dict) else None
            if not isinstance(subject, str):
                suspect(None, raw, None, "unattributable")
                return
            entry = interesting.get(subject)
            if entry is not None:
                acc.sightings.setdefault((dc, subject), set()).add(region)
                if found_j not in entry.allowed:
                    suspect(subject, raw, entry.home_j, "directory")
                return
            m = USER_ID.match(subject)
            if m is None:
                suspect(None, raw, None, "unattributable")
                return
            expected = rj.get(m.group(1))
            if expected != found_j:
                suspect(subject, raw, expected, "id-hint")

        return visit

    def _directory_visitor(self, unit: _Unit, acc: _Acc) -> Callable[[dict[str, Any]], None]:
        plan, region, rj = unit.plan, unit.region, self.rj
        pk_name = plan.partition_key

        def problem(key: str, reason: str) -> None:
            acc.problem_count += 1
            if len(acc.problems) < _MAX_PROBLEMS:
                acc.problems.append(DirectoryProblem(region, plan.table, key, reason))

        def visit(raw: dict[str, Any]) -> None:
            acc.entry_count += 1
            uid = _s(raw, pk_name)
            if uid is None:
                problem(hashed(_raw_key(raw.get(pk_name))), "the key is not a string user ID")
                return
            m = USER_ID.match(uid)
            if m is None:
                problem(hashed(uid), "the key is not a regionkit user ID")
                return
            home = _s(raw, "home_region")
            jur = _s(raw, "jurisdiction")
            status = _s(raw, "status") or "active"
            moving_to = _s(raw, "moving_to")
            moved_from = _s(raw, "moved_from")
            home_j = rj.get(home) if home else None
            if home is None or home_j is None:
                problem(uid, f"home_region {home!r} is not a region of the policy")
                return
            if jur != home_j:
                problem(uid, f"jurisdiction {jur!r} does not match home_region {home} ({home_j})")
            if status not in {"active", "moving"}:
                problem(uid, f"status {status!r} is neither 'active' nor 'moving'")
            moving_j = rj.get(moving_to) if moving_to else None
            if status == "moving" and moving_j is None:
                problem(
                    uid, f"status is 'moving' but moving_to {moving_to!r} is not a policy region"
                )
            hint_j = rj.get(m.group(1))
            if home_j != hint_j or status == "moving":
                acc.entries[uid] = _Dir(
                    home,
                    home_j,
                    status,
                    moving_to,
                    moving_j,
                    moved_from,
                    rj.get(moved_from) if moved_from else None,
                )

        return visit

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
            for name, hit in acc.pii.items():
                mine = self.result.pii.setdefault(
                    (unit.region, unit.plan.table, name), PiiHit(unit.region, unit.plan.table, name)
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
                desc = self.ctx.clients.dynamodb(region).describe_export(ExportArn=arn)
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
        directory = next((p for p in globals_ if p.is_directory), None)
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
            # phase A: the global tables' PII scan, the directory (one replica) with it
            for plan in globals_ if self.need_pii else []:
                for region in self.regions:
                    if region not in plan.regions:
                        continue
                    combined = plan is directory and bool(candidates) and region == candidates[0]
                    roles = frozenset({"pii", "directory"} if combined else {"pii"})
                    ts = self._table_scan(region, plan, roles)
                    self._announce(ts)
                    submitted = self._submit(pool, self._units(ts))
                    futures += submitted
                    if combined:
                        first = (ts, submitted)
            res.pii_scanned = self.need_pii
            if self.need_placement:
                res.placement_scanned = True
                if directory is not None:
                    res.directory_table = directory.table
                    futures += self._read_directory(pool, directory, candidates, first)
                else:
                    res.directory_error = "the policy has no directory data class"
                res.interesting = len(self.interesting)
                # phase B: every pinned table in every selected region
                for plan in pinned:
                    for region in self.regions:
                        ts = self._table_scan(region, plan, frozenset({"placement"}))
                        self._announce(ts)
                        futures += self._submit(pool, self._units(ts))
            wait(futures)
            for f in futures:
                f.result()  # a bug in a worker surfaces here: never swallowed
        if self.need_placement:
            self._resolve()
        return res

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
        client = self.ctx.clients.dynamodb(region)
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

    def _resolve(self) -> None:
        res = self.result
        plans = {p.data_class: p for p in self.ctx.plans if p.kind == "pinned"}
        by_subject: dict[tuple[str, str | None], list[_Suspect]] = defaultdict(list)
        for s in self.suspects:
            if s.subject is None:  # unattributable: nothing to resolve
                res.misplaced.append(_misplaced(s))
            else:
                by_subject[(s.data_class, s.subject)].append(s)
        subjects = set(by_subject) | set(self.sightings)
        for dc, subject in sorted(subjects, key=lambda k: (k[0], k[1] or "")):
            if subject is None:
                continue
            suspects = by_subject.get((dc, subject), [])
            plan = plans[dc]
            entry = self.interesting.get(subject)
            if entry is None:
                res.misplaced.extend(_misplaced(s) for s in suspects)
                expected = suspects[0].expected if suspects else None
                if expected is None:
                    continue
                there = self._present_in(plan, subject, expected)
                if there is None:
                    res.unverified_duplicates += 1
                elif there:
                    js = sorted({s.found for s in suspects} | {expected})
                    regions = sorted({s.region for s in suspects})
                    res.duplicates.append(Duplicate(dc, subject, tuple(js), tuple(regions), False))
                continue
            seen_regions = self.sightings.get((dc, subject), set())
            seen_j = {self.rj.get(r, "?") for r in seen_regions}
            hint = USER_ID.match(subject)
            hint_j = self.rj.get(hint.group(1)) if hint else None
            if entry.status == "moving":
                res.misplaced.extend(_misplaced(s) for s in suspects)
                if (
                    entry.home_j in seen_j
                    and entry.moving_j in seen_j
                    and entry.home_j != entry.moving_j
                ):
                    res.duplicates.append(
                        Duplicate(
                            dc,
                            subject,
                            tuple(sorted(seen_j)),
                            tuple(sorted(seen_regions)),
                            True,
                            note=f"unfinished move from {entry.home_region} to {entry.moving_to}",
                        )
                    )
                elif seen_j & entry.allowed == {entry.moving_j}:
                    res.directory_problems.append(
                        DirectoryProblem(
                            res.directory_region or "?",
                            res.directory_table or "?",
                            subject,
                            f"the entry still says moving from {entry.home_region} to "
                            f"{entry.moving_to}, but the {dc} is only in "
                            f"{', '.join(sorted(seen_regions))}: finish the move",
                        )
                    )
                    res.directory_problem_count += 1
                continue
            if entry.home_j in seen_j:
                res.misplaced.extend(_misplaced(s) for s in suspects)
                if len(seen_j) > 1:
                    res.duplicates.append(
                        Duplicate(
                            dc, subject, tuple(sorted(seen_j)), tuple(sorted(seen_regions)), False
                        )
                    )
            elif entry.moved_from_j and entry.moved_from_j in seen_j:
                res.misplaced.extend(
                    _misplaced(
                        s,
                        basis="moved",
                        note=f"left behind by a move from "
                        f"{entry.moved_from} to {entry.home_region}",
                    )
                    for s in suspects
                )
            elif not entry.moved_from and seen_j and seen_j == {hint_j}:
                res.directory_problems.append(
                    DirectoryProblem(
                        res.directory_region or "?",
                        res.directory_table or "?",
                        subject,
                        f"the entry says home {entry.home_region} ({entry.home_j}) but the {dc} is "
                        f"only in {', '.join(sorted(seen_regions))} ({hint_j}), where the user ID "
                        "was minted: the router cannot find it",
                    )
                )
                res.directory_problem_count += 1
            else:
                res.misplaced.extend(_misplaced(s) for s in suspects)


def _misplaced(s: _Suspect, basis: str | None = None, note: str = "") -> Misplaced:
    return Misplaced(
        region=s.region,
        table=s.table,
        data_class=s.data_class,
        key=s.key,
        subject=s.subject,
        found=s.found,
        expected=s.expected,
        basis=basis or s.basis,
        note=note,
    )


def run_data_scan(ctx: AuditContext) -> DataScan:
    scan = _Scanner(ctx)
    if not any(isinstance(dc, PinnedDataClass) for dc in ctx.policy.data_classes.values()):
        scan.need_placement = False
    return scan.run()


def table_counts(scan: DataScan) -> Counter[tuple[str, str]]:
    return Counter({k: t.items for k, t in scan.tables.items()})
