"""The residency policy: the model, its semantic checks, and the YAML loader.

A policy file says which regions the product runs in, which jurisdiction each
region and each country belongs to, where each data class may live, and the
targets drills and audits are measured against. Everything else in regionkit
(the router, the local cluster, the CDK app, the audit) is derived from it.

A policy file is data that compliance officers edit and review, and may be
hostile. :func:`load_policy` reads at most ``max_bytes`` (1 MB by default,
``REGIONKIT_POLICY_MAX_BYTES``) and parses it with the bounded loader of
:mod:`residency.yamlmarks` (UTF-8 only, core-schema tags only, no anchors, aliases
or merge keys, capped depth and size). Validation then happens in passes, so
every message can name the file, the line, the field and the offending value:

1. structure: pydantic, ``extra="forbid"``, strict types, documented bounds;
2. semantics: :func:`policy_problems`, which knows the path of each field;
3. references: every merge function is resolved through :func:`resolve_merge`,
   which allows only ``regions.merges`` and the modules the operator lists in the
   ``merge_modules`` setting, and imports nothing else.

:func:`load_policy` reports every problem as one :class:`~residency.errors.PolicyError`
(at most :data:`MAX_PROBLEMS` of them); it raises nothing else.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from residency import pii_registry
from residency.aws_regions import AWS_REGIONS, distance_km
from residency.errors import (
    PolicyError,
    PolicyProblem,
    UnknownCountry,
    UnknownDataClass,
    UnknownRegion,
)
from residency.names import RESERVED_PREFIX, normalize_name
from residency.yamlmarks import (
    MarkedYaml,
    decode_policy_bytes,
    field_path,
    load_marked_yaml,
    shown_value,
)

__all__ = [
    "BUILTIN_MERGE_MODULE",
    "DEFAULT_MAX_POLICY_BYTES",
    "AuditRequirements",
    "DataClass",
    "DrillTargets",
    "GlobalDataClass",
    "Index",
    "Jurisdiction",
    "MergeConflicts",
    "PinnedDataClass",
    "Policy",
    "SystemTables",
    "Targets",
    "dump_policy",
    "load_policy",
    "merge_problems",
    "parse_policy",
    "parse_policy_text",
    "policy_problems",
    "resolve_merge",
]

DEFAULT_MAX_POLICY_BYTES = 1_000_000
"""Policy files larger than this are refused before parsing (``REGIONKIT_POLICY_MAX_BYTES``)."""
BUILTIN_MERGE_MODULE = "regions.merges"
"""The only module a policy may name merge functions from, besides those the operator lists."""
MAX_PROBLEMS = 50
"""At most this many problems are reported per file (then one line says how many more)."""

_FIX_SCHEMA = "see policies/schema.json or `regionkit policy schema`"

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
TableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,200}$")]


def _not_reserved(name: str) -> str:
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"attribute names starting with {RESERVED_PREFIX!r} are regionkit's own (versions, "
            "write tokens, fences); choose another name"
        )
    return name


AttributeName = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_not_reserved)
]
JurisdictionId = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")]
RegionCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
FunctionRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]


MAX_REGIONS = 64  # AWS has about 35 commercial regions
_UNIQUE: dict[str, Any] = {"uniqueItems": True}  # checked by policy_problems, with the line
DAY = 86_400.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Jurisdiction(_Model):
    """A legal area: the countries whose residents' personal data must stay in it."""

    law: str = Field(
        min_length=1, max_length=200, description="The data-protection law, e.g. 'GDPR'."
    )
    countries: list[CountryCode] = Field(
        default_factory=list,
        max_length=250,
        json_schema_extra=_UNIQUE,
        description="ISO 3166-1 alpha-2 codes of the member countries, each once.",
    )
    regions: list[RegionCode] = Field(
        min_length=1,
        max_length=MAX_REGIONS,
        json_schema_extra=_UNIQUE,
        description="The AWS regions inside this jurisdiction, each once.",
    )
    home_regions: list[RegionCode] = Field(
        max_length=MAX_REGIONS,
        json_schema_extra=_UNIQUE,
        description="Where residents are homed, in failover order. A subset of regions.",
    )


class MergeConflicts(_Model):
    """Resolve concurrent writes with a merge function instead of last-writer-wins."""

    merge: FunctionRef = Field(description="'module:function' taking (ours, theirs) items.")


class Index(_Model):
    """A secondary index the router may query (``router.query(..., index=name)``).

    Key attributes are strings. ``gsi``: its own partition key (and optional sort key);
    ``lsi``: the table's partition key and another sort key (the table needs a sort key).
    """

    name: Name
    kind: Literal["gsi", "lsi"] = "gsi"
    partition_key: AttributeName | None = None
    sort_key: AttributeName | None = None
    projection: Literal["all", "keys_only", "include"] = "keys_only"
    attributes: list[AttributeName] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra=_UNIQUE,
        description="include: the projected attributes besides the keys.",
    )


class _DataClassBase(_Model):
    table: TableName = Field(description="The DynamoDB table name (before the settings prefix).")
    partition_key: AttributeName = "pk"
    sort_key: AttributeName | None = None
    indexes: list[Index] = Field(
        default_factory=list, max_length=20, description="Secondary indexes (GSI or LSI)."
    )
    description: str = Field(default="", max_length=2000)


class PinnedDataClass(_DataClassBase):
    """Personal data: each item lives only in its subject's home jurisdiction."""

    kind: Literal["pinned"]
    pii_attributes: list[AttributeName] = Field(
        min_length=1,
        max_length=1000,
        json_schema_extra=_UNIQUE,
        description="Attributes holding personal data; never logged or reported. At least "
        "one: a pinned class without PII is a global class.",
    )


class Erasure(_Model):
    """What erasing a subject does to the items of a global class that name them.

    ``delete``: each item becomes an ``erased`` tombstone. ``anonymize``: the listed
    attributes are removed (the subject attribute always is). ``keep``: the items stay,
    for the reason given (the other party's data in a conversation, a legal hold).
    """

    action: Literal["delete", "anonymize", "keep"]
    attributes: list[AttributeName] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra=_UNIQUE,
        description="anonymize: the attributes to remove besides the subject attribute.",
    )
    reason: str = Field(default="", max_length=500, description="keep: why (the receipt says).")


class GlobalDataClass(_DataClassBase):
    """Shared, non-personal data in a DynamoDB global table (MREC)."""

    kind: Literal["global"]
    replicas: list[RegionCode] = Field(
        min_length=1,
        max_length=MAX_REGIONS,
        json_schema_extra=_UNIQUE,
        description="Replica regions, each once.",
    )
    conflicts: Literal["lww"] | MergeConflicts = "lww"
    subject_attribute: AttributeName | None = Field(
        default=None,
        description="The attribute naming the user an item belongs to (e.g. author_id); "
        "indexed, so a data-subject request finds the items without a scan.",
    )
    erasure: Erasure | None = Field(
        default=None, description="What erasing the subject does to these items."
    )


DataClass = Annotated[PinnedDataClass | GlobalDataClass, Field(discriminator="kind")]


class DrillTargets(_Model):
    rto_seconds: float = Field(
        gt=0,
        le=DAY,
        allow_inf_nan=False,
        description="Maximum time until routed writes succeed (0 < s <= 86400).",
    )
    rpo_seconds: float = Field(
        ge=0,
        le=DAY,
        allow_inf_nan=False,
        description="Maximum age of writes lost to a fault (0 <= s <= 86400).",
    )
    convergence_seconds: float = Field(
        gt=0,
        le=DAY,
        allow_inf_nan=False,
        description="Maximum time to converge after heal (0 < s <= 86400).",
    )
    max_age_days: int = Field(
        gt=0, le=3650, description="Every region must be drilled this often (1 to 3650 days)."
    )


class AuditRequirements(_Model):
    pitr: bool = True
    customer_managed_kms: bool = True
    deletion_protection: bool = True
    streams: bool = True


class Targets(_Model):
    drills: DrillTargets
    audit: AuditRequirements = AuditRequirements()
    replication_latency_alarm_ms: int = Field(
        default=180_000,
        gt=0,
        le=86_400_000,
        description="AWS's suggested alarm level is 180,000 ms (at most a day).",
    )


class SystemTables(_Model):
    directory: Name = Field(
        default="directory", description="The global data class holding users' home regions."
    )
    conflict_log_table: TableName = "regionkit-conflicts"
    lineage_table: TableName = Field(
        default="regionkit-lineage",
        description=(
            "Each version's parent as its landing region saw it, written by the conflict "
            "detector of the region a write originated in and read by the others (a global "
            "table in every replica region of a global data class; no item keys or values)."
        ),
    )
    tombstone_retention_days: int = Field(
        default=35,
        ge=2,
        le=3650,
        description=(
            "How long a tombstone (a versioned delete, a 'moved' or 'erased' marker) is kept "
            "before TTL removes it. It must outlive any replication pause: FIS pauses end, and "
            "a replica left unauthorized for about 20 hours is dropped; the default also covers "
            "a 35-day PITR restore."
        ),
    )


class Policy(_Model):
    """A whole policy file."""

    version: Literal[1] = 1
    name: Name
    description: str = Field(default="", max_length=2000)
    regions: list[RegionCode] = Field(
        min_length=1, max_length=MAX_REGIONS, json_schema_extra=_UNIQUE
    )
    default_jurisdiction: JurisdictionId
    jurisdictions: dict[JurisdictionId, Jurisdiction] = Field(min_length=1, max_length=64)
    data_classes: dict[Name, DataClass] = Field(min_length=1, max_length=256)
    system: SystemTables = SystemTables()
    targets: Targets

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: Any) -> Any:
        if type(value) is not int:  # YAML's true and 1.0 equal 1 in Python
            raise ValueError("version must be the integer 1")
        return value

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get("skip_semantics"):
            return self
        problems = policy_problems(self)
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, p[0]))}: {p[1]}" for p in problems))
        return self

    # --- derived views (pure functions of the model) ---

    def jurisdiction_of_region(self, region: str) -> str:
        for jid, j in self.jurisdictions.items():
            if region in j.regions:
                return jid
        raise UnknownRegion(
            region=region,
            reason="no jurisdiction of the policy owns it",
            known=", ".join(self.regions),
        )

    def jurisdiction_of_country(self, country: str) -> str:
        """The jurisdiction of an ISO 3166-1 alpha-2 country (any case), else the default.

        A code that is not ISO raises :class:`UnknownCountry`: silently homing a
        mistyped 'de' or 'UK' in the default jurisdiction would break residency.
        """
        code = country.strip().upper()
        if code not in _country_codes():
            raise UnknownCountry(country=country)
        for jid, j in self.jurisdictions.items():
            if code in j.countries:
                return jid
        return self.default_jurisdiction

    def data_class(self, name: str) -> PinnedDataClass | GlobalDataClass:
        try:
            return self.data_classes[name]
        except KeyError:
            raise UnknownDataClass(data_class=name, known=", ".join(self.data_classes)) from None

    def check_region(self, region: str) -> str:
        if region not in self.regions:
            raise UnknownRegion(
                region=region,
                reason="the policy does not declare it",
                known=", ".join(self.regions),
            )
        return region

    def allowed_regions(self, data_class: str, jurisdiction: str | None = None) -> list[str]:
        """Where items of ``data_class`` may live (for pinned: of that jurisdiction)."""
        dc = self.data_class(data_class)
        if isinstance(dc, GlobalDataClass):
            return list(dc.replicas)
        if jurisdiction is None:
            raise ValueError("a pinned data class needs the subject's jurisdiction")
        return list(self.jurisdictions[jurisdiction].regions)

    def pinned_placements(self, data_class: str) -> dict[str, list[str]]:
        """For a pinned class: jurisdiction → the regions its table is replicated in."""
        return {jid: list(j.regions) for jid, j in self.jurisdictions.items()}

    def table_placements(self) -> dict[str, list[str]]:
        """Every table (logical name) → every region it must exist in."""
        out: dict[str, list[str]] = {}
        for dc in self.data_classes.values():
            if isinstance(dc, GlobalDataClass):
                out[dc.table] = list(dc.replicas)
            else:
                out[dc.table] = list(self.regions)
        out[self.system.conflict_log_table] = list(self.regions)
        lineage = self.lineage_regions()
        if lineage:
            out[self.system.lineage_table] = lineage
        return out

    def lineage_regions(self) -> list[str]:
        """Where the conflict detector's lineage table lives: every region a global data
        class has a replica in (a detector runs there), in the policy's order."""
        replicas = {
            r
            for dc in self.data_classes.values()
            if isinstance(dc, GlobalDataClass)
            for r in dc.replicas
        }
        return [r for r in self.regions if r in replicas]

    def nearest_first(self, origin: str, candidates: list[str]) -> list[str]:
        """Order candidates by distance from ``origin``; the policy order breaks ties."""
        index = {r: i for i, r in enumerate(candidates)}
        return sorted(candidates, key=lambda r: (distance_km(origin, r), index[r]))

    def country_in(self, jurisdiction: str) -> str:
        """A country whose residents belong to ``jurisdiction`` (for sign-ups in tests,
        drills and the demo); for a default jurisdiction without countries, the first
        ISO country no jurisdiction lists."""
        j = self.jurisdictions[jurisdiction]
        if j.countries:
            return j.countries[0]
        from iso3166 import countries_by_alpha2

        listed = {c for x in self.jurisdictions.values() for c in x.countries}
        return next(c for c in sorted(countries_by_alpha2) if c not in listed)

    def pii_attributes(self) -> frozenset[str]:
        names: set[str] = set()
        for dc in self.data_classes.values():
            if isinstance(dc, PinnedDataClass):
                names.update(dc.pii_attributes)
        return frozenset(names)

    def model_post_init(self, context: Any, /) -> None:
        # A process holding this policy withholds its PII attributes' values from every
        # regionkit log line, whether or not anyone configured regionkit's logging.
        pii_registry.register(self.pii_attributes())

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # An unpickled policy (a worker process) registers them as a built one does.
        super().__setstate__(state)
        pii_registry.register(self.pii_attributes())


# --- semantic checks -----------------------------------------------------------

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, str]  # (location, message, fix)


@functools.cache
def _country_codes() -> frozenset[str]:
    from iso3166 import countries_by_alpha2

    return frozenset(countries_by_alpha2)


def _unknown_region(r: str, declared: list[str] | None = None) -> tuple[str, str]:
    """Message and fix for a region code AWS does not have; suggest a declared one first."""
    close = difflib.get_close_matches(r, declared or [], n=1, cutoff=0.8)
    close = close or difflib.get_close_matches(r, list(AWS_REGIONS), n=1, cutoff=0.8)
    if close:
        return f"unknown AWS region code {r!r} (did you mean {close[0]!r}?)", f"use {close[0]!r}"
    known = ", ".join(sorted(AWS_REGIONS)[:6]) + ", ..."
    return f"unknown AWS region code {r!r}", f"use a commercial AWS region code such as {known}"


def _twice(loc: Loc, items: Sequence[str], what: str) -> Iterator[Problem]:
    """A problem at each repeated item of a list that must not repeat, naming the item."""
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if item in first:
            yield (
                (*loc, i),
                f"{what} {item!r} is listed twice (first as item {first[item] + 1})",
                f"list each {what} once: remove this {item!r}",
            )
        first.setdefault(item, i)


def policy_problems(p: Policy) -> list[Problem]:
    """Every cross-field problem of a structurally valid policy, with its location."""
    return list(_iter_problems(p))


def _erasure_problems(p: Policy) -> Iterator[Problem]:
    """Erasure rules that could leave a subject's data behind, or that cannot run."""
    pii = {normalize_name(n) for n in p.pii_attributes()}
    for name, dc in p.data_classes.items():
        if not isinstance(dc, GlobalDataClass):
            continue
        base: Loc = ("data_classes", name)
        if dc.erasure is not None and dc.subject_attribute is None:
            yield (
                base + ("erasure",),
                "an erasure rule needs the items' subject_attribute",
                "add subject_attribute: <the attribute holding the user ID>",
            )
        if dc.subject_attribute is not None and dc.erasure is None:
            yield (
                base + ("erasure",),
                f"{name} names its subject but says nothing about erasure",
                "add erasure: {action: delete}, {action: anonymize, attributes: [...]} "
                "or {action: keep, reason: ...}",
            )
        if dc.subject_attribute is not None and normalize_name(dc.subject_attribute) in pii:
            yield (
                base + ("subject_attribute",),
                f"{dc.subject_attribute!r} is named as personal data, which a global class "
                "may not hold",
                "point subject_attribute at the user ID attribute (e.g. author_id)",
            )
        rule = dc.erasure
        if rule is None:
            continue
        if rule.action == "keep" and not rule.reason.strip():
            yield (base + ("erasure", "reason"), "keep needs a reason", "say why the items stay")
        if rule.action != "anonymize" and rule.attributes:
            yield (
                base + ("erasure", "attributes"),
                f"attributes apply only to anonymize, not {rule.action}",
                "remove them, or use action: anonymize",
            )
        if dc.subject_attribute in (dc.partition_key, dc.sort_key) and rule.action == "anonymize":
            yield (
                base + ("erasure", "action"),
                "anonymize cannot remove a key attribute, and the subject attribute is one",
                "use action: delete",
            )
        yield from _anonymized_keys(base, dc)


def _anonymized_keys(base: Loc, dc: GlobalDataClass) -> Iterator[Problem]:
    """Anonymizing removes attributes; a key attribute cannot be removed from an item (the
    erasure would fail on every round, for ever)."""
    keys = {dc.partition_key, dc.sort_key}  # an index key may go: the item leaves the index
    for i, attr in enumerate(dc.erasure.attributes if dc.erasure else []):
        if attr in keys:
            yield (
                base + ("erasure", "attributes", i),
                f"{attr!r} is a key attribute of the table: an item cannot lose its key",
                "list only non-key attributes, or use action: delete",
            )


def _index_problems(p: Policy) -> Iterator[Problem]:
    """Indexes that cannot be built, or that would carry personal data where it may not go."""
    pii = {normalize_name(n) for n in p.pii_attributes()}
    for name, dc in p.data_classes.items():
        seen: set[str] = set()
        for i, ix in enumerate(dc.indexes):
            base: Loc = ("data_classes", name, "indexes", i)
            if ix.name in seen or ix.name == "by-subject":
                yield (base + ("name",), f"index name {ix.name!r} is taken", "choose another")
            seen.add(ix.name)
            if ix.kind == "gsi" and ix.partition_key is None:
                yield (base + ("partition_key",), "a gsi needs a partition_key", "name one")
            if ix.kind == "lsi" and (ix.sort_key is None or dc.sort_key is None):
                yield (
                    base + ("sort_key",),
                    "an lsi needs its own sort_key, on a table that has a sort key",
                    "add sort_key (and the data class's sort_key), or use a gsi",
                )
            keys = [k for k in (ix.partition_key, ix.sort_key) if k]
            for k in keys:
                if normalize_name(k) in pii:
                    yield (
                        base,
                        f"index key {k!r} is named as personal data: index keys reach "
                        "streams, metrics and every replica's index",
                        "key the index by an ID, not by personal data",
                    )
            projected = {a.casefold() for a in ix.attributes}
            if isinstance(dc, GlobalDataClass) and projected & pii:
                yield (
                    base + ("attributes",),
                    "a global class's index may not project personal data",
                    "drop the PII attributes from the projection",
                )
            if ix.projection != "include" and ix.attributes:
                yield (base + ("attributes",), "attributes apply to include only", "remove them")


def _iter_problems(p: Policy) -> Iterator[Problem]:
    yield from _erasure_problems(p)
    yield from _index_problems(p)
    yield from _region_list_problems(p)
    region_owner: dict[str, str] = {}
    yield from _jurisdiction_problems(p, region_owner)
    yield from _orphan_region_problems(p, region_owner)
    if p.default_jurisdiction not in p.jurisdictions:
        yield (
            ("default_jurisdiction",),
            f"{p.default_jurisdiction!r} is not a declared jurisdiction",
            f"use one of {', '.join(p.jurisdictions)}",
        )
    yield from _data_class_problems(p)
    yield from _directory_problems(p)


def _region_list_problems(p: Policy) -> Iterator[Problem]:
    """The top-level region list: known regions, each listed once."""
    seen_regions: set[str] = set()
    for i, r in enumerate(p.regions):
        if r not in AWS_REGIONS:
            yield (("regions", i), *_unknown_region(r))
        if r in seen_regions:
            yield (("regions", i), f"region {r!r} is listed twice", "list each region once")
        seen_regions.add(r)


def _jurisdiction_problems(p: Policy, region_owner: dict[str, str]) -> Iterator[Problem]:
    """Every jurisdiction; fills ``region_owner`` (region -> first jurisdiction holding it)."""
    countries = _country_codes()
    country_owner: dict[str, str] = {}
    for jid, j in p.jurisdictions.items():
        base: Loc = ("jurisdictions", jid)
        yield from _twice(base + ("regions",), j.regions, "region")
        yield from _twice(base + ("countries",), j.countries, "country")
        yield from _jurisdiction_region_problems(p, jid, j, region_owner)
        yield from _jurisdiction_country_problems(jid, j, countries, country_owner)
        yield from _home_region_problems(jid, j)


def _jurisdiction_region_problems(
    p: Policy, jid: str, j: Jurisdiction, region_owner: dict[str, str]
) -> Iterator[Problem]:
    base: Loc = ("jurisdictions", jid)
    for i, r in enumerate(j.regions):
        if r not in AWS_REGIONS:
            yield (base + ("regions", i), *_unknown_region(r, p.regions))
        elif r not in p.regions:
            yield (
                base + ("regions", i),
                f"region {r!r} is not declared in 'regions'",
                f"add {r!r} to the top-level 'regions' list or remove it here",
            )
        if r in region_owner and region_owner[r] != jid:
            yield (
                base + ("regions", i),
                f"region {r!r} is already in jurisdiction {region_owner[r]!r}",
                "a region belongs to exactly one jurisdiction",
            )
        region_owner.setdefault(r, jid)


def _jurisdiction_country_problems(
    jid: str, j: Jurisdiction, countries: frozenset[str], country_owner: dict[str, str]
) -> Iterator[Problem]:
    base: Loc = ("jurisdictions", jid)
    for i, c in enumerate(j.countries):
        if c not in countries:
            yield (
                base + ("countries", i),
                f"{c!r} is not an ISO 3166-1 alpha-2 code",
                "use two-letter codes such as 'IN', 'BR', 'DE'",
            )
        if c in country_owner and country_owner[c] != jid:
            yield (
                base + ("countries", i),
                f"country {c!r} is already in jurisdiction {country_owner[c]!r}",
                "a country belongs to exactly one jurisdiction",
            )
        country_owner.setdefault(c, jid)


def _home_region_problems(jid: str, j: Jurisdiction) -> Iterator[Problem]:
    base: Loc = ("jurisdictions", jid)
    if not j.home_regions:
        yield (
            base + ("home_regions",),
            "the home region list is empty",
            f"list at least one of {', '.join(j.regions)} in failover order",
        )
    for i, r in enumerate(j.home_regions):
        if r not in AWS_REGIONS:
            yield (base + ("home_regions", i), *_unknown_region(r, j.regions))
        elif r not in j.regions:
            yield (
                base + ("home_regions", i),
                f"home region {r!r} is outside jurisdiction {jid!r} "
                f"(its regions: {', '.join(j.regions)})",
                f"add {r!r} to this jurisdiction's regions or pick one of them",
            )
    yield from _twice(base + ("home_regions",), j.home_regions, "home region")


def _orphan_region_problems(p: Policy, region_owner: dict[str, str]) -> Iterator[Problem]:
    for i, r in enumerate(p.regions):
        if r in AWS_REGIONS and r not in region_owner:
            yield (
                ("regions", i),
                f"region {r!r} belongs to no jurisdiction",
                "add it to exactly one jurisdiction's 'regions'",
            )


def _data_class_problems(p: Policy) -> Iterator[Problem]:
    """Keys, placement and tables of every data class."""
    tables: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, dc in p.data_classes.items():
        base: Loc = ("data_classes", name)
        if dc.sort_key is not None and dc.sort_key == dc.partition_key:
            yield (
                base + ("sort_key",),
                "sort_key equals partition_key",
                "use distinct attribute names",
            )
        if isinstance(dc, GlobalDataClass):
            placement: tuple[str, ...] = tuple(sorted(dc.replicas))
            yield from _replica_problems(p, base, dc)
        else:
            placement = tuple(sorted(p.regions))
            yield from _pinned_key_problems(base, dc)
        yield from _table_problems(p, base, name, dc, placement, tables)


def _replica_problems(p: Policy, base: Loc, dc: GlobalDataClass) -> Iterator[Problem]:
    for i, r in enumerate(dc.replicas):
        if r not in AWS_REGIONS:
            yield (base + ("replicas", i), *_unknown_region(r, p.regions))
        elif r not in p.regions:
            yield (
                base + ("replicas", i),
                f"replica region {r!r} is not declared",
                f"use one of {', '.join(p.regions)} or declare it",
            )
    yield from _twice(base + ("replicas",), dc.replicas, "replica region")


def _pinned_key_problems(base: Loc, dc: PinnedDataClass) -> Iterator[Problem]:
    if dc.partition_key in dc.pii_attributes:
        yield (
            base + ("pii_attributes",),
            f"the partition key {dc.partition_key!r} is listed as PII",
            "keys are logged and reported: key items by an opaque user ID",
        )
    if dc.sort_key is not None and dc.sort_key in dc.pii_attributes:
        yield (
            base + ("pii_attributes", dc.pii_attributes.index(dc.sort_key)),
            f"the sort key {dc.sort_key!r} is listed as PII",
            "keys are logged and reported: use an opaque sort key",
        )
    yield from _twice(base + ("pii_attributes",), dc.pii_attributes, "PII attribute")


def _table_problems(
    p: Policy,
    base: Loc,
    name: str,
    dc: PinnedDataClass | GlobalDataClass,
    placement: tuple[str, ...],
    tables: dict[str, tuple[str, tuple[str, ...]]],
) -> Iterator[Problem]:
    """A data class's table against those seen before it; records it in ``tables``."""
    if dc.table in tables and tables[dc.table][1] != placement:
        other = tables[dc.table][0]
        yield (
            base + ("table",),
            f"table {dc.table!r} is shared with data class {other!r} "
            "but the two have different replica sets",
            "give each data class its own table",
        )
    elif dc.table in tables:
        yield (
            base + ("table",),
            f"table {dc.table!r} is already used by data class {tables[dc.table][0]!r}",
            "give each data class its own table",
        )
    tables.setdefault(dc.table, (name, placement))
    if dc.table == p.system.conflict_log_table:
        yield (
            base + ("table",),
            f"table {dc.table!r} is the conflict-log table",
            "choose another table name",
        )
    if dc.table == p.system.lineage_table:
        yield (
            base + ("table",),
            f"table {dc.table!r} is the conflict detector's lineage table",
            "choose another table name",
        )


def _directory_problems(p: Policy) -> Iterator[Problem]:
    """The user directory: declared, global, and replicated to every region."""
    directory = p.data_classes.get(p.system.directory)
    if directory is None:
        yield (
            ("data_classes",),
            f"data class {p.system.directory!r} (the user directory) is not declared "
            "(system.directory names it)",
            "declare a global data class for the directory, e.g. 'directory'",
        )
    elif not isinstance(directory, GlobalDataClass):
        yield (
            ("data_classes", p.system.directory, "kind"),
            "the user directory must be a global data class",
            "set kind: global; the directory holds no PII",
        )
    elif set(directory.replicas) != set(p.regions):
        yield (
            ("data_classes", p.system.directory, "replicas"),
            "the directory must be replicated to every region",
            f"set replicas to all of: {', '.join(p.regions)}",
        )


# --- loading and dumping ------------------------------------------------------------


def _field(loc: Loc) -> str:
    return field_path(loc)


# Plain-language descriptions of the string formats above, keyed by their regex.
_FORMATS: dict[str, str] = {
    get_args(Name)[1].pattern: "a lowercase name (a letter, then up to 62 of a-z 0-9 _ -)",
    get_args(TableName)[1].pattern: "a DynamoDB table name (3 to 200 of A-Z a-z 0-9 _ . -)",
    get_args(JurisdictionId)[1].pattern: "an upper-case jurisdiction ID such as 'EU' or 'IN'",
    get_args(RegionCode)[1].pattern: "an AWS region code such as 'eu-west-1'",
    get_args(CountryCode)[1].pattern: "an upper-case ISO 3166-1 alpha-2 code such as 'DE'",
    get_args(FunctionRef)[1].pattern: "a 'module:function' reference such as "
    "'regions.merges:merge_counters'",
}


def _shown(value: Any) -> str:
    """How a YAML value reads in a message (never long)."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int) and abs(value) > 10**30:
        return f"a number of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a long string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _at(data: Any, loc: Loc) -> Any:
    for part in loc:
        found = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        )
        if not found:
            return None
        data = data[part]
    return data


def _known_keys(loc: Loc, data: Any) -> list[str]:
    """The keys the mapping at ``loc`` may hold (for "did you mean")."""
    models: list[type[BaseModel]]
    match loc:
        case ():
            models = [Policy]
        case ("jurisdictions", _):
            models = [Jurisdiction]
        case ("data_classes", _, "conflicts"):
            models = [MergeConflicts]
        case ("data_classes", _):
            kind = _at(data, (*loc, "kind"))
            models = [PinnedDataClass, GlobalDataClass]
            if kind == "pinned":
                models = [PinnedDataClass]
            elif kind == "global":
                models = [GlobalDataClass]
        case ("system",):
            models = [SystemTables]
        case ("targets",):
            models = [Targets]
        case ("targets", "drills"):
            models = [DrillTargets]
        case ("targets", "audit"):
            models = [AuditRequirements]
        case _:
            models = []
    return [name for m in models for name in m.model_fields]


def _clean_loc(loc: tuple[str | int, ...]) -> Loc:
    """Drop what pydantic adds to locations: union tags and dict-key markers.

    Only at the places pydantic puts them, so a data class named 'global' keeps its name.
    """
    out: list[str | int] = []
    for i, x in enumerate(loc):
        if i == 2 and loc[0] == "data_classes" and x in {"pinned", "global"}:
            continue
        if i > 0 and loc[i - 1] == "conflicts" and x in {"literal['lww']", "MergeConflicts"}:
            continue
        if x == "[key]":
            continue
        out.append(x)
    return tuple(out)


_YAML_BOOLS = "YAML 1.1 reads unquoted yes, no, on and off as booleans"


@dataclass(frozen=True, slots=True)
class _ErrorView:
    """One pydantic error, with its cleaned location and its value as shown."""

    err: Any
    raw: tuple[str | int, ...]
    loc: Loc
    value: Any
    got: str


def _describe(err: Any, data: Any) -> tuple[Loc, str, str] | None:
    """One pydantic error as (location, message, fix), or None for union noise."""
    raw: tuple[str | int, ...] = tuple(err["loc"])
    loc = _clean_loc(raw)
    kind: str = err["type"]
    value = err.get("input")
    got = _shown(value)
    if "literal['lww']" in raw and isinstance(value, dict):
        return None  # a mapping: only the MergeConflicts branch applies
    if "MergeConflicts" in raw and kind == "model_type":
        return None  # not a mapping: the literal branch reports it
    if kind == "missing":
        return loc, f"required field {loc[-1]!r} is missing", "add it; " + _FIX_SCHEMA
    if kind == "extra_forbidden":
        return _unknown_key(loc, data)
    if isinstance(value, bool) and "countries" in loc:
        return (
            loc,
            f"expected a country code, got {got}: {_YAML_BOOLS} (an unquoted NO is false)",
            'quote the country code, e.g. "NO"',
        )
    describer = _DESCRIBERS.get(kind)
    if describer is not None:
        return describer(_ErrorView(err, raw, loc, value, got))
    msg = err["msg"].replace("Input should be", "must be", 1).removeprefix("Value error, ")
    if "input" in err:
        msg = f"{msg}, got {got}"
    return loc, msg, _FIX_SCHEMA


def _unknown_key(loc: Loc, data: Any) -> tuple[Loc, str, str]:
    key = str(loc[-1])
    known = _known_keys(loc[:-1], data)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    if close:
        return (
            loc,
            f"unknown key {key!r} (did you mean {close[0]!r}?)",
            f"rename it to {close[0]!r}",
        )
    allowed = f"the keys allowed here are {', '.join(known)}" if known else _FIX_SCHEMA
    return loc, f"unknown key {key!r}", f"remove it or check its spelling; {allowed}"


def _union_tag_invalid(e: _ErrorView) -> tuple[Loc, str, str]:
    tag = e.err["ctx"]["tag"]
    return (*e.loc, "kind"), f"unknown kind {tag!r}", "use kind: pinned or kind: global"


def _union_tag_not_found(e: _ErrorView) -> tuple[Loc, str, str]:
    return (
        e.loc,
        "the data class has no 'kind'",
        "add kind: pinned (personal data) or kind: global (shared data)",
    )


def _literal_error(e: _ErrorView) -> tuple[Loc, str, str]:
    if e.loc[-1:] == ("conflicts",):
        return (
            e.loc,
            f"conflicts must be 'lww' or a mapping 'merge: module:function', got {e.got}",
            "write conflicts: lww, or conflicts: {merge: 'package.module:function'}",
        )
    expected = e.err["ctx"]["expected"]
    return e.loc, f"must be {expected}, got {e.got}", "use one of the allowed values"


def _pattern_mismatch(e: _ErrorView) -> tuple[Loc, str, str]:
    pattern = e.err["ctx"]["pattern"]
    fmt = _FORMATS.get(pattern, f"of the form {pattern}")
    what = "the key" if e.raw[-1] == "[key]" else "the value"
    return e.loc, f"{what} {e.value!r} is not {fmt}", "use that format; " + _FIX_SCHEMA


def _list_type(e: _ErrorView) -> tuple[Loc, str, str]:
    return e.loc, f"expected a list, got {e.got}", "write a list, e.g. [a, b]"


def _mapping_type(e: _ErrorView) -> tuple[Loc, str, str]:
    return (
        e.loc,
        f"expected a mapping, got {e.got}",
        "write indented 'key: value' lines under it; " + _FIX_SCHEMA,
    )


def _string_type(e: _ErrorView) -> tuple[Loc, str, str]:
    return e.loc, f"expected a string, got {e.got}", "quote the value"


def _number_type(e: _ErrorView) -> tuple[Loc, str, str]:
    whole = "a whole number" if e.err["type"] != "float_type" else "a number"
    if isinstance(e.value, bool):
        return e.loc, f"expected {whole}, got {e.got}: {_YAML_BOOLS}", f"write {whole}"
    return e.loc, f"expected {whole}, got {e.got}", f"write {whole}"


def _bool_type(e: _ErrorView) -> tuple[Loc, str, str]:
    return e.loc, f"expected true or false, got {e.got}", "write true or false, unquoted"


def _finite_number(e: _ErrorView) -> tuple[Loc, str, str]:
    return e.loc, f"must be a finite number, got {e.got}", "write a finite number"


def _too_long(e: _ErrorView) -> tuple[Loc, str, str]:
    ctx = e.err.get("ctx", {})
    actual = ctx.get("actual_length")
    return (
        e.loc,
        f"must hold at most {ctx.get('max_length')} items"
        + (f", got {actual}" if actual is not None else ""),
        "remove some; " + _FIX_SCHEMA,
    )


def _too_short(e: _ErrorView) -> tuple[Loc, str, str]:
    return (
        e.loc,
        f"must hold at least {e.err['ctx']['min_length']} item, got none",
        "add at least one; " + _FIX_SCHEMA,
    )


# How each pydantic error type reads, past the checks _describe makes first.
_DESCRIBERS: dict[str, Callable[[_ErrorView], tuple[Loc, str, str]]] = {
    "union_tag_invalid": _union_tag_invalid,
    "union_tag_not_found": _union_tag_not_found,
    "literal_error": _literal_error,
    "string_pattern_mismatch": _pattern_mismatch,
    "list_type": _list_type,
    "dict_type": _mapping_type,
    "model_type": _mapping_type,
    "model_attributes_type": _mapping_type,
    "string_type": _string_type,
    "float_type": _number_type,
    "int_type": _number_type,
    "int_from_float": _number_type,
    "bool_type": _bool_type,
    "finite_number": _finite_number,
    "too_long": _too_long,
    "too_short": _too_short,
}


def _problem(
    source: str, marks: MarkedYaml | None, data: Any, loc: Loc, msg: str, fix: str
) -> PolicyProblem:
    """A located problem, with the offending value when it is a scalar of the file."""
    value = _at(data, loc)
    shown = None
    if value is not None and not isinstance(value, (dict, list)):
        shown = shown_value(value)
    line = marks.line_of(loc) if marks else None
    return PolicyProblem(source, line, _field(loc), msg, fix, shown)


def _capped(problems: list[PolicyProblem], source: str) -> list[PolicyProblem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    return [
        *problems[:MAX_PROBLEMS],
        PolicyProblem(
            source,
            None,
            "(file)",
            f"... and {more} more problems not shown",
            "fix the problems above, then validate again",
        ),
    ]


def parse_policy(
    data: Any,
    *,
    source: str = "<policy>",
    marks: MarkedYaml | None = None,
    merge_modules: Sequence[str] | None = (),
) -> Policy:
    """Validate plain data as a policy; raise one PolicyError with every problem.

    ``merge_modules`` are the modules, besides :data:`BUILTIN_MERGE_MODULE`, that the
    operator allows merge functions from (settings, never the policy). Every merge
    reference is resolved through :func:`resolve_merge`; ``None`` skips that step
    (for tools that only read the structure and never merge).
    """

    def problem(loc: Loc, msg: str, fix: str) -> PolicyProblem:
        return _problem(source, marks, data, loc, msg, fix)

    if not isinstance(data, dict):
        if data is None:
            msg, fix = (
                "the file is empty (or holds only comments)",
                "start from policies/minimal.yaml; " + _FIX_SCHEMA,
            )
        else:
            msg, fix = (
                f"the policy must be a YAML mapping (key: value lines), got {_shown(data)}",
                "start from policies/minimal.yaml; " + _FIX_SCHEMA,
            )
        line = (marks.line_of(()) if marks else None) or 1
        raise PolicyError([PolicyProblem(source, line, "(top level)", msg, fix)])
    try:
        policy = Policy.model_validate(data, context={"skip_semantics": True})
    except ValidationError as exc:
        problems: list[PolicyProblem] = []
        errors = exc.errors(include_url=False)
        for n, err in enumerate(errors):
            if len(problems) >= MAX_PROBLEMS:  # describing costs (did-you-mean): stop here
                more = len(errors) - n
                problems.append(
                    PolicyProblem(
                        source,
                        None,
                        "(file)",
                        f"... and up to {more} more problems not shown",
                        "fix the problems above, then validate again",
                    )
                )
                break
            described = _describe(err, data)
            if described is not None:
                problems.append(problem(*described))
        raise PolicyError(problems) from None
    found = [problem(*p) for p in policy_problems(policy)]
    if merge_modules is not None:
        found += merge_problems(policy, extra_modules=merge_modules, source=source, marks=marks)
    if found:
        raise PolicyError(_capped(found, source))
    return policy


def load_policy(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_POLICY_BYTES,
    merge_modules: Sequence[str] | None = (),
) -> Policy:
    """Load and fully validate a policy file.

    The file is read up to ``max_bytes`` (a larger one is refused before any parsing,
    so a special file such as /dev/zero cannot make it read forever), decoded as
    UTF-8 and parsed by the bounded loader of :mod:`residency.yamlmarks`. Every way
    this can fail is a :class:`PolicyError`. See :func:`parse_policy` for
    ``merge_modules``.
    """
    path = Path(path)
    source = str(path)
    try:
        raw = _read_bounded(path, max_bytes + 1)
    except OSError as exc:
        raise PolicyError(
            [
                PolicyProblem(
                    source,
                    None,
                    "(file)",
                    f"cannot read the file: {exc.strerror or type(exc).__name__}",
                    "check the path, or set REGIONKIT_POLICY",
                )
            ]
        ) from None
    if len(raw) > max_bytes:
        try:
            st_size = path.stat().st_size
        except OSError:
            st_size = 0
        size = f"{st_size:,} bytes" if st_size > max_bytes else f"more than {max_bytes:,} bytes"
        raise PolicyError(
            [
                PolicyProblem(
                    source,
                    None,
                    "(file)",
                    f"the file is larger than the {max_bytes:,}-byte limit for policies",
                    "a policy is a few kilobytes: check that this is the right file "
                    "(REGIONKIT_POLICY_MAX_BYTES raises the limit)",
                    size,
                )
            ]
        )
    text = decode_policy_bytes(raw, source=source)
    return parse_policy_text(text, source=source, merge_modules=merge_modules)


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``. Opened non-blocking, so a FIFO nobody writes
    to reads as empty instead of hanging; reads then block as usual (a pipe with a
    writer, such as a shell's process substitution, still delivers its data)."""
    import os

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        try:
            import fcntl

            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


def parse_policy_text(
    text: str, *, source: str = "<policy>", merge_modules: Sequence[str] | None = ()
) -> Policy:
    marked = load_marked_yaml(text, source=source)
    return parse_policy(marked.data, source=source, marks=marked, merge_modules=merge_modules)


# --- merge functions ---------------------------------------------------------------

MergeFunction = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
_REF = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*)$")


class _Refused(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix

    def __reduce__(self) -> tuple[object, ...]:  # pickles like every regionkit error
        return (type(self), (self.message, self.fix))


def _builtin_merges() -> ModuleType:
    """The built-in merge functions: :mod:`residency.merges`, which policies name
    ``regions.merges`` (re-exported there); residency never imports ``regions``."""
    import residency.merges

    return residency.merges


def _merge_module(module_name: str) -> ModuleType:
    """The module an allowed merge reference names, imported (refused if that fails)."""
    if module_name == BUILTIN_MERGE_MODULE:
        return _builtin_merges()
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise _Refused(
            f"module {module_name!r} (listed in REGIONKIT_MERGE_MODULES) cannot be "
            f"imported: {type(exc).__name__}",
            "install the module, or correct REGIONKIT_MERGE_MODULES",
        ) from None
    except Exception as exc:
        raise _Refused(
            f"importing module {module_name!r} failed: {type(exc).__name__}",
            "fix that module: importing it must not fail",
        ) from None


def _merge_target(ref: str, allowed: Sequence[str]) -> MergeFunction:
    m = _REF.match(ref)
    if m is None:
        raise _Refused(
            "not a 'module:function' reference",
            f"write it like '{BUILTIN_MERGE_MODULE}:merge_counters'",
        )
    module_name, name = m["module"], m["name"]
    if module_name not in allowed:
        raise _Refused(
            f"module {module_name!r} is not allowed for merge functions "
            f"(allowed: {', '.join(allowed)}); a policy never causes any other import",
            f"use a function of {BUILTIN_MERGE_MODULE}, or ask the operator to list the "
            "module in the REGIONKIT_MERGE_MODULES setting (settings, not the policy)",
        )
    if name.startswith("_"):
        raise _Refused(
            f"{name!r} is private to {module_name}", "name a public function of the module"
        )
    module = _merge_module(module_name)
    public = getattr(module, "__all__", None)
    fn = getattr(module, name, None)
    if fn is None:
        names = public or [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _Refused(
            f"module {module_name!r} has no function {name!r}{hint}",
            f"use one of: {', '.join(sorted(names))}" if names else "check the name",
        )
    if public is not None and name not in public:
        raise _Refused(
            f"{name!r} is not exported by {module_name} (its __all__)",
            f"use one of: {', '.join(sorted(public))}",
        )
    if getattr(fn, "__module__", None) != module.__name__:
        raise _Refused(
            f"{name!r} is imported into {module_name}, not defined there",
            "name the function in the module that defines it (and is allowed)",
        )
    if inspect.isclass(fn) or not callable(fn):
        raise _Refused(f"{ref!r} is not a function", "name a function")
    if inspect.iscoroutinefunction(fn):
        raise _Refused(f"{ref!r} is a coroutine function", "a merge function is synchronous")
    try:
        inspect.signature(fn).bind({}, {})
    except (TypeError, ValueError):
        raise _Refused(
            f"{ref!r} does not fit the merge signature (ours: dict, theirs: dict) -> dict",
            "a merge function takes the two conflicting items and returns the merged one",
        ) from None
    merge: MergeFunction = fn
    return merge


def resolve_merge(
    ref: str,
    *,
    extra_modules: Sequence[str] = (),
    source: str = "<policy>",
    field: str = "conflicts.merge",
    line: int | None = None,
) -> MergeFunction:
    """The merge function a policy names, after checking that it may be used.

    Only functions of :data:`BUILTIN_MERGE_MODULE` (``regions.merges``) and of the
    modules in ``extra_modules`` (the operator's ``merge_modules`` setting, never the
    policy) are allowed; no other module is ever imported. The target must be a
    public function defined in that module (not re-exported from elsewhere), listed
    in its ``__all__`` if it has one, synchronous, and callable as ``fn(ours, theirs)``.

    Raises :class:`PolicyError` (a ConfigError) naming ``source``/``line``/``field``.
    """
    allowed = [BUILTIN_MERGE_MODULE, *(m for m in extra_modules if m != BUILTIN_MERGE_MODULE)]
    try:
        return _merge_target(ref, allowed)
    except _Refused as exc:
        problem = PolicyProblem(
            source, line, field, f"merge function: {exc.message}", exc.fix, shown_value(ref)
        )
        raise PolicyError([problem]) from None


def merge_problems(
    policy: Policy,
    *,
    extra_modules: Sequence[str] = (),
    source: str = "<policy>",
    marks: MarkedYaml | None = None,
) -> list[PolicyProblem]:
    """Every merge reference of the policy that :func:`resolve_merge` refuses."""
    out: list[PolicyProblem] = []
    for name, dc in policy.data_classes.items():
        if isinstance(dc, GlobalDataClass) and isinstance(dc.conflicts, MergeConflicts):
            loc: Loc = ("data_classes", name, "conflicts", "merge")
            try:
                resolve_merge(
                    dc.conflicts.merge,
                    extra_modules=extra_modules,
                    source=source,
                    field=_field(loc),
                    line=marks.line_of(loc) if marks else None,
                )
            except PolicyError as exc:
                out.extend(exc.problems)
    return out


def dump_policy(policy: Policy) -> str:
    """The policy as canonical YAML: defaults included, keys in model order."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # PyYAML writes a NEL (U+0085) raw inside a single-quoted scalar when
        # allow_unicode is on, and reads it back as a space; double quotes escape it.
        style = '"' if "\x85" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    data = policy.model_dump(mode="json")
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
