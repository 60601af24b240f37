"""The check registry: every audit check registers itself by id, with validated metadata.

Modelled on cloud-custodian's registry and prowler's check metadata: a check is a
function in one of the family modules under :mod:`residency.audit.checks`,
decorated with :func:`check`::

    @check(
        id="infra.pitr",
        title="Point-in-time recovery is on",
        severity="high",
        rationale="...",
        remediation="...",
        permissions=["dynamodb:ListTables", "dynamodb:DescribeContinuousBackups"],
    )
    def pitr(ctx: AuditContext) -> Iterator[Finding]:
        '''Every table has PITR enabled.

        Example::

            regionkit audit run --checks infra.pitr
        '''
        ...

The metadata is a pydantic model with ``extra="forbid"``: a misspelt field, an
unknown severity, a malformed IAM action, an id outside the module's family or a
missing docstring example fails at import time, not in an audit.
``permissions`` are what the check's collectors call; the union over the checks
is the least-privilege IAM policy ``regionkit audit checks`` prints.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from residency.audit.model import Finding, Severity, Status, finding_uid
from residency.errors import ConfigError, UnknownName

if TYPE_CHECKING:
    from residency.audit.context import AuditContext
    from residency.policy import Policy

__all__ = [
    "FAMILIES",
    "Check",
    "CheckMeta",
    "all_checks",
    "check",
    "get_check",
    "iam_policy",
    "permissions_for",
    "select_checks",
]

#: Check families, in the order the runner runs them.
FAMILIES = ("policy", "infra", "data", "operations", "subjects")
_ACTION = re.compile(r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$")

CheckFn = Callable[["AuditContext"], Iterable[Finding]]


class CheckMeta(BaseModel):
    """What a check declares about itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=r"^(policy|infra|data|operations|subjects)\.[a-z][a-z0-9_]{2,62}$")
    title: str = Field(min_length=3, max_length=120)
    severity: Severity
    rationale: str = Field(min_length=10)
    remediation: str = Field(min_length=10)
    permissions: tuple[str, ...] = Field(description="IAM actions the check needs (reading only).")
    export_permissions: tuple[str, ...] = Field(
        default=(), description="Extra IAM actions needed with --source export."
    )
    doc: str = Field(min_length=10, description="The check function's docstring.")

    @field_validator("permissions", "export_permissions")
    @classmethod
    def _actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for action in value:
            if not _ACTION.match(action):
                raise ValueError(f"{action!r} is not an IAM action such as 'dynamodb:Scan'")
        return tuple(sorted(set(value)))

    @field_validator("doc")
    @classmethod
    def _example(cls, value: str) -> str:
        if "Example" not in value:
            raise ValueError("the docstring must hold a short 'Example::' block")
        return value

    @model_validator(mode="after")
    def _title_is_one_line(self) -> CheckMeta:
        if "\n" in self.title:
            raise ValueError("the title is one line")
        return self

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def summary(self) -> str:
        """The docstring's first paragraph."""
        return inspect.cleandoc(self.doc).split("\n\n", 1)[0].replace("\n", " ")

    @property
    def example(self) -> str:
        doc = inspect.cleandoc(self.doc)
        _, _, tail = doc.partition("Example::")
        return inspect.cleandoc(tail).split("\n\n", 1)[0]


@dataclass(frozen=True)
class Check:
    """A registered check: its metadata and its function."""

    meta: CheckMeta
    fn: CheckFn

    @property
    def id(self) -> str:
        return self.meta.id

    def run(self, ctx: AuditContext) -> Iterator[Finding]:
        yield from self.fn(ctx)

    # --- findings of this check ---

    def finding(
        self,
        status: Status,
        *,
        region: str,
        resource: str,
        reason: str,
        severity: Severity | None = None,
        remediation: str | None = None,
        discriminator: str = "",
        details: dict[str, Any] | None = None,
    ) -> Finding:
        return Finding(
            uid=finding_uid(self.id, region, resource, discriminator),
            check_id=self.id,
            title=self.meta.title,
            status=status,
            severity=severity or self.meta.severity,
            region=region,
            resource=resource,
            reason=reason,
            remediation=remediation or self.meta.remediation,
            details=details or {},
        )

    def passed(self, *, region: str, resource: str, reason: str, **kw: Any) -> Finding:
        return self.finding("PASS", region=region, resource=resource, reason=reason, **kw)

    def failed(self, *, region: str, resource: str, reason: str, **kw: Any) -> Finding:
        return self.finding("FAIL", region=region, resource=resource, reason=reason, **kw)

    def error(self, *, region: str, resource: str, reason: str, **kw: Any) -> Finding:
        return self.finding("ERROR", region=region, resource=resource, reason=reason, **kw)


_registry: dict[str, Check] = {}
_lock = threading.Lock()
_loaded = False


def check(
    *,
    id: str,
    title: str,
    severity: Severity,
    rationale: str,
    remediation: str,
    permissions: Iterable[str],
    export_permissions: Iterable[str] = (),
) -> Callable[[CheckFn], Check]:
    """Register the decorated function as check ``id``."""

    def register(fn: CheckFn) -> Check:
        module_family = fn.__module__.rsplit(".", 1)[-1]
        if fn.__module__.startswith("residency.audit.checks.") and not id.startswith(
            module_family + "."
        ):
            raise ValueError(
                f"check {id!r} is defined in the {module_family!r} family module; "
                f"its id must start with {module_family + '.'!r}"
            )
        meta = CheckMeta(
            id=id,
            title=title,
            severity=severity,
            rationale=rationale,
            remediation=remediation,
            permissions=tuple(permissions),
            export_permissions=tuple(export_permissions),
            doc=fn.__doc__ or "",
        )
        registered = Check(meta, fn)
        with _lock:
            if id in _registry and _registry[id].fn.__qualname__ != fn.__qualname__:
                raise ValueError(f"check {id!r} is registered twice")
            _registry[id] = registered
        return registered

    return register


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for family in FAMILIES:
        importlib.import_module(f"residency.audit.checks.{family}")
    _loaded = True


def all_checks() -> list[Check]:
    """Every registered check, by family (in run order), then as declared."""
    _load()
    order = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(_registry.values(), key=lambda c: order[c.meta.family])  # stable: as declared


def get_check(check_id: str) -> Check:
    _load()
    try:
        return _registry[check_id]
    except KeyError:
        raise UnknownName(
            kind="check", name=check_id, known=", ".join(c.id for c in all_checks())
        ) from None


def select_checks(selection: Iterable[str] | None) -> list[Check]:
    """Checks by id or by family name (``infra``); None selects every check."""
    checks = all_checks()
    if selection is None:
        return checks
    wanted: set[str] = set()
    for raw in selection:
        name = raw.strip()
        if not name:
            continue
        family = name.removesuffix(".*")
        if family in FAMILIES:
            wanted.update(c.id for c in checks if c.meta.family == family)
        else:
            wanted.add(get_check(name).id)
    if not wanted:
        raise UnknownName(
            kind="check selection",
            name=",".join(selection),
            known=", ".join([*FAMILIES, *(c.id for c in checks)]),
        )
    return [c for c in checks if c.id in wanted]


def permissions_for(checks: Iterable[Check], *, export: bool = False) -> list[str]:
    actions: set[str] = {"sts:GetCallerIdentity"}
    for c in checks:
        actions.update(c.meta.permissions)
        if export:
            actions.update(c.meta.export_permissions)
    return sorted(actions)


# Actions that act on a table (or its exports) and can be scoped to table ARNs.
_TABLE_ACTIONS = frozenset(
    {
        "dynamodb:DescribeTable",
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:ListTagsOfResource",
        "dynamodb:Scan",
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:DescribeExport",
    }
)


# What the inventory calls on every table it finds, to class it.
# What the audit does to a table it must class or judge without knowing its name in
# advance (a renamed copy): describe, tags, a sample, its backups, and exporting it.
_INVENTORY_ACTIONS = (
    "dynamodb:DescribeContinuousBackups",
    "dynamodb:DescribeExport",
    "dynamodb:DescribeTable",
    "dynamodb:ExportTableToPointInTime",
    "dynamodb:ListTagsOfResource",
    "dynamodb:Scan",
)
_EXPORT_ACTIONS = frozenset({"dynamodb:DescribeExport", "dynamodb:ExportTableToPointInTime"})


def _signing_statement(key: str, arn: str) -> dict[str, Any]:
    """``kms:Sign`` and ``kms:GetPublicKey`` on the signing key.

    IAM names a KMS key only by its key ARN: an alias (name or ARN) or a bare key ID
    in ``Resource`` matches nothing. An alias becomes the ``kms:ResourceAliases``
    condition on any key; a key ID, the key's ARN in any region and account.
    """
    statement: dict[str, Any] = {
        "Sid": "RegionkitAuditSigning",
        "Effect": "Allow",
        "Action": ["kms:GetPublicKey", "kms:Sign"],
    }
    alias = key.split(":", 5)[5] if key.startswith("arn:") and ":alias/" in key else key
    if alias.startswith("alias/"):
        statement["Resource"] = f"{arn}:kms:*:*:key/*"
        statement["Condition"] = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}
    elif key.startswith("arn:"):
        statement["Resource"] = key
    else:
        statement["Resource"] = f"{arn}:kms:*:*:key/{key}"
    return statement


_S3_BUCKET_ACTIONS = frozenset({"s3:GetBucketLocation", "s3:ListBucket"})


def _s3_statements(actions: list[str], arn: str, bucket: str) -> list[dict[str, Any]]:
    name = re.sub(r"\{(region|jurisdiction)\}", "*", bucket)
    on_bucket = sorted(a for a in actions if a in _S3_BUCKET_ACTIONS)
    on_objects = sorted(a for a in actions if a not in _S3_BUCKET_ACTIONS)
    out = []
    if on_bucket:
        out.append(
            {
                "Sid": "RegionkitAuditExportBucket",
                "Effect": "Allow",
                "Action": on_bucket,
                "Resource": f"{arn}:s3:::{name}",
            }
        )
    if on_objects:
        out.append(
            {
                "Sid": "RegionkitAuditExportObjects",
                "Effect": "Allow",
                "Action": on_objects,
                "Resource": f"{arn}:s3:::{name}/*",
            }
        )
    return out


def iam_policy(
    checks: Iterable[Check],
    *,
    export: bool = False,
    policy: Policy | None = None,
    table_prefix: str = "",
    signing_key: str | None = None,
    partition: str = "aws",
    export_bucket: str | None = None,
) -> dict[str, Any]:
    """The least-privilege IAM policy document for running ``checks``.

    Every ARN is in ``partition``. For an export run (``export=True``), the S3
    actions are scoped to ``export_bucket`` (its ``{region}`` and ``{jurisdiction}``
    placeholders become ``*``): the bucket itself for listing and locating, its
    objects for the rest. Without a bucket an export policy cannot be scoped, and
    is refused.

    With ``signing_key`` (the KMS key that signs reports in aws mode), also
    ``kms:Sign`` and ``kms:GetPublicKey`` on that key.

    With the residency ``policy``, table actions are scoped to the policy's tables
    (in any region and account: the audit also looks where tables should not be),
    except what the inventory needs to class *every* table and then judge a copy like
    the class it copies (``DescribeTable``, ``ListTagsOfResource``, a ``Scan``,
    ``DescribeContinuousBackups`` and, for an export run, the export itself, when
    ``infra.table_placement`` runs): a renamed copy of a pinned table has a name nobody
    can list in advance.
    """
    checks = list(checks)
    actions = permissions_for(checks, export=export)
    arn = f"arn:{partition}"
    s3_actions = [a for a in actions if a.startswith("s3:")]
    if s3_actions and not export_bucket:
        raise ConfigError(
            message="an IAM policy for export runs needs the export bucket, to scope S3 to "
            "it (fix: pass the bucket, as for 'regionkit audit run --export-bucket')"
        )
    actions = [a for a in actions if not a.startswith("s3:")]
    classify = any(c.id == "infra.table_placement" for c in checks)
    table_actions = [a for a in actions if a in _TABLE_ACTIONS]
    other = [a for a in actions if a not in _TABLE_ACTIONS]
    statements: list[dict[str, Any]] = []
    if table_actions:
        if policy is not None and classify:
            inventory = sorted(set(table_actions) & set(_INVENTORY_ACTIONS))
            statements.append(
                {
                    "Sid": "RegionkitAuditInventory",
                    "Effect": "Allow",
                    "Action": inventory,
                    "Resource": [
                        f"{arn}:dynamodb:*:*:table/*",
                        f"{arn}:dynamodb:*:*:table/*/export/*",
                    ]
                    if _EXPORT_ACTIONS & set(inventory)
                    else f"{arn}:dynamodb:*:*:table/*",
                }
            )
        if policy is not None:
            names = sorted(
                {table_prefix + dc.table for dc in policy.data_classes.values()}
                | {table_prefix + policy.system.conflict_log_table}
                | {table_prefix + policy.system.lineage_table}
            )
            arns = [f"{arn}:dynamodb:*:*:table/{n}" for n in names]
            if {"dynamodb:ExportTableToPointInTime", "dynamodb:DescribeExport"} & set(
                table_actions
            ):
                arns += [f"{arn}:dynamodb:*:*:table/{n}/export/*" for n in names]
            resources: list[str] | str = arns
        else:
            resources = "*"
        statements.append(
            {
                "Sid": "RegionkitAuditTables",
                "Effect": "Allow",
                "Action": table_actions,
                "Resource": resources,
            }
        )
    if other:
        statements.append(
            {
                "Sid": "RegionkitAuditDiscovery",
                "Effect": "Allow",
                "Action": other,
                "Resource": "*",
            }
        )
    if s3_actions and export_bucket:
        statements += _s3_statements(s3_actions, arn, export_bucket)
    if signing_key:
        statements.append(_signing_statement(signing_key, arn))
    return {"Version": "2012-10-17", "Statement": statements}
