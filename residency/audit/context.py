"""The state one audit run shares between its checks.

An :class:`AuditContext` holds the policy, the clients, the options, and the
*collectors*: the table inventory, the data scan, the conflict log and the drill
history. Each collector runs at most once per audit, when the first check that
needs it asks (thread-safe), and every check reads its results. A region that
fails with a connection error is remembered as down, so the rest of the audit
reports ERROR for it at once instead of waiting for more timeouts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from residency.audit.clients import error_reason, is_unreachable
from residency.audit.safety import item_pseudonym
from residency.clients import ClientProvider
from residency.logs import get_logger
from residency.pii_detect import PiiDetector
from residency.policy import Policy
from residency.pseudonym import Pseudonymizer, default_pseudonymizer
from residency.tables import TablePlan, plan_tables

__all__ = ["AuditContext", "AuditOptions", "ProgressEvent", "ProgressFn"]

log = get_logger("regionkit.audit")

T = TypeVar("T")


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of the audit, for a progress bar.

    ``phase`` ``scan`` events come per page: ``key`` is ``region/table``,
    ``advance`` the items just read, ``total`` the table's estimated item count
    (first event of a key only), ``done`` once the key is finished.
    """

    phase: Literal["inventory", "scan", "export", "check"]
    key: str
    advance: int = 0
    total: int | None = None
    done: bool = False
    message: str = ""


ProgressFn = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class AuditOptions:
    policy_path: Path
    regions: tuple[str, ...]
    drill_history: Path
    now: datetime
    run_id: str
    table_prefix: str = ""
    extra_regions: tuple[str, ...] = ()
    source: Literal["scan", "export"] = "scan"
    sample: int | None = None
    segments: int | None = None
    max_segments: int = 8
    workers: int = 8
    export_bucket: str | None = None
    export_prefix: str = "regionkit-audit"
    export_arns: tuple[str, ...] = ()
    export_timeout_s: float = 3600.0
    export_poll_s: float = 2.0
    conflict_window: timedelta = timedelta(days=7)
    max_findings_per_resource: int = 100
    max_lookups: int = 10_000
    account_id: str | None = None
    value_every: int = 20
    inventory_sample: int = 20
    progress: ProgressFn | None = field(default=None, compare=False)
    pseudonymizer: Pseudonymizer | None = field(default=None, compare=False, repr=False)
    merge_modules: tuple[str, ...] = ()  # the operator's allow-listed merge modules
    # AWS: the conflict log counts only if the detector's alarms show it healthy. The
    # local cluster's detector is the emulator's own listener, with no alarms.
    detector_alarms: bool = False


class AuditContext:
    def __init__(
        self,
        policy: Policy,
        clients: ClientProvider,
        options: AuditOptions,
        checks: Sequence[Any],  # registry.Check (not imported: the registry imports this)
        *,
        resolve_account: bool = True,
    ) -> None:
        self.policy = policy
        self.clients = clients
        self.options = options
        self.checks = checks
        self.check_ids = frozenset(c.id for c in checks)
        self.plans: list[TablePlan] = plan_tables(policy, options.table_prefix)
        self.plan_by_table = {p.table: p for p in self.plans}
        self.region_jurisdiction = {
            r: jid for jid, j in policy.jurisdictions.items() for r in j.regions
        }
        self._down: dict[str, str] = {}
        self._lock = threading.Lock()
        self._memo: dict[str, Any] = {}
        self._memo_locks: dict[str, threading.Lock] = {}
        self.pn = options.pseudonymizer or default_pseudonymizer()
        self.detector = PiiDetector.for_policy(policy)
        self.partition = "aws"  # the caller's, from STS (aws-cn, aws-us-gov) when asked
        if resolve_account:
            self.account, self.account_source = self._account()
        else:  # policy-only audits make no AWS call at all, STS included
            self.account = options.account_id or "unknown"
            self.account_source = "option" if options.account_id else "not needed"

    # --- identity and names ---

    def _account(self) -> tuple[str, str]:
        if self.options.account_id:
            return self.options.account_id, "option"
        last = "no region to ask"
        for region in self.options.regions[:2]:
            try:
                ident = self.clients.client("sts", region).get_caller_identity()
                arn = str(ident.get("Arn", "")).split(":")
                if len(arn) > 2 and arn[1]:
                    self.partition = arn[1]
                return str(ident["Account"]), "sts"
            except Exception as exc:  # recorded in the report's parameters
                last = error_reason(exc)
                self.note_failure(region, exc)
        return "unknown", f"unavailable ({last})"

    def arn(self, region: str, table: str) -> str:
        return f"arn:{self.partition}:dynamodb:{region}:{self.account}:table/{table}"

    def item(self, table: str, partition: Any, sort: Any = None, *, typed: bool = True) -> str:
        """How a finding names one item of ``table``: its keyed pseudonym."""
        return item_pseudonym(self.pn, table, partition, sort, typed=typed)

    def subject(self, user_id: str) -> str:
        """How a finding names a data subject (a user ID): its keyed pseudonym."""
        return self.pn(user_id, scope="subject")

    def jurisdiction(self, region: str) -> str | None:
        return self.region_jurisdiction.get(region)

    @property
    def all_regions(self) -> list[str]:
        """The selected policy regions, then the extra regions."""
        extra = [r for r in self.options.extra_regions if r not in self.options.regions]
        return [*self.options.regions, *extra]

    def wants(self, *check_ids: str) -> bool:
        return any(c in self.check_ids for c in check_ids)

    # --- regions that stopped answering ---

    def note_failure(self, region: str, exc: BaseException) -> None:
        if is_unreachable(exc):
            with self._lock:
                self._down.setdefault(region, error_reason(exc))

    def down(self, region: str) -> str | None:
        """Why ``region`` is considered unreachable, or None."""
        return self._down.get(region)

    # --- progress ---

    def progress(self, event: ProgressEvent) -> None:
        if self.options.progress is not None:
            self.options.progress(event)

    # --- collectors (each runs once) ---

    def once(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name in self._memo:
                return self._memo[name]  # type: ignore[no-any-return]
            lock = self._memo_locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._memo:
                value = factory()
                with self._lock:
                    self._memo[name] = value
            return self._memo[name]  # type: ignore[no-any-return]

    def collected(self, name: str) -> Any:
        """A collector's result if it already ran, else None."""
        with self._lock:
            return self._memo.get(name)

    # The collectors (inventory, data scan, conflict and drill history) memoise their
    # results through once(); each lives in its own module with an accessor
    # (inventory_of, data_of, conflicts_of, drills_of), so this module imports none of them.
