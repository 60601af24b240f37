"""The residency policy: the model, its semantic checks, and the YAML loader.

A policy file says which regions the product runs in, which jurisdiction each
region and each country belongs to, where each data class may live, and the
targets drills and audits are measured against. Everything else in regionkit
(the router, the local cluster, the CDK app, the audit) is derived from it.

Validation happens in two passes so every message can name the file, the line
and the field:

1. structure: pydantic, ``extra="forbid"``, strict types;
2. semantics: :func:`policy_problems`, which knows the path of each field.

:func:`load_policy` reports every problem of both passes as one
:class:`~residency.errors.PolicyError`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from residency.aws_regions import AWS_REGIONS, distance_km
from residency.errors import (
    PolicyError,
    PolicyProblem,
    UnknownCountry,
    UnknownDataClass,
    UnknownRegion,
)
from residency.yamlmarks import MarkedYaml, load_marked_yaml

__all__ = [
    "AuditRequirements",
    "DataClass",
    "DrillTargets",
    "GlobalDataClass",
    "Jurisdiction",
    "MergeConflicts",
    "PinnedDataClass",
    "Policy",
    "SystemTables",
    "Targets",
    "dump_policy",
    "load_policy",
    "parse_policy",
    "parse_policy_text",
    "policy_problems",
]

_FIX_SCHEMA = "see policies/schema.json or `regionkit policy schema`"

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
TableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,200}$")]
AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
JurisdictionId = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")]
RegionCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
FunctionRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Jurisdiction(_Model):
    """A legal area: the countries whose residents' personal data must stay in it."""

    law: str = Field(min_length=1, description="The data-protection law, e.g. 'GDPR'.")
    countries: list[CountryCode] = Field(
        default_factory=list, description="ISO 3166-1 alpha-2 codes of the member countries."
    )
    regions: list[RegionCode] = Field(
        min_length=1, description="The AWS regions inside this jurisdiction."
    )
    home_regions: list[RegionCode] = Field(
        description="Where residents are homed, in failover order. A subset of regions."
    )


class MergeConflicts(_Model):
    """Resolve concurrent writes with a merge function instead of last-writer-wins."""

    merge: FunctionRef = Field(description="'module:function' taking (ours, theirs) items.")


class _DataClassBase(_Model):
    table: TableName = Field(description="The DynamoDB table name (before the settings prefix).")
    partition_key: AttributeName = "pk"
    sort_key: AttributeName | None = None
    description: str = ""


class PinnedDataClass(_DataClassBase):
    """Personal data: each item lives only in its subject's home jurisdiction."""

    kind: Literal["pinned"]
    pii_attributes: list[AttributeName] = Field(
        description="Attributes holding personal data; never logged or reported."
    )


class GlobalDataClass(_DataClassBase):
    """Shared, non-personal data in a DynamoDB global table (MREC)."""

    kind: Literal["global"]
    replicas: list[RegionCode] = Field(min_length=1, description="Replica regions.")
    conflicts: Literal["lww"] | MergeConflicts = "lww"


DataClass = Annotated[PinnedDataClass | GlobalDataClass, Field(discriminator="kind")]


class DrillTargets(_Model):
    rto_seconds: float = Field(
        gt=0, allow_inf_nan=False, description="Maximum time until routed writes succeed."
    )
    rpo_seconds: float = Field(
        ge=0, allow_inf_nan=False, description="Maximum age of writes lost to a fault."
    )
    convergence_seconds: float = Field(
        gt=0, allow_inf_nan=False, description="Maximum time to converge after heal."
    )
    max_age_days: int = Field(gt=0, description="Every region must be drilled this often.")


class AuditRequirements(_Model):
    pitr: bool = True
    customer_managed_kms: bool = True
    deletion_protection: bool = True
    streams: bool = True


class Targets(_Model):
    drills: DrillTargets
    audit: AuditRequirements = AuditRequirements()
    replication_latency_alarm_ms: int = Field(
        default=180_000, gt=0, description="AWS's suggested alarm level is 180,000 ms."
    )


class SystemTables(_Model):
    directory: Name = Field(
        default="directory", description="The global data class holding users' home regions."
    )
    conflict_log_table: TableName = "regionkit-conflicts"


class Policy(_Model):
    """A whole policy file."""

    version: Literal[1] = 1
    name: Name
    description: str = ""
    regions: list[RegionCode] = Field(min_length=1)
    default_jurisdiction: JurisdictionId
    jurisdictions: dict[JurisdictionId, Jurisdiction] = Field(min_length=1)
    data_classes: dict[Name, DataClass] = Field(min_length=1)
    system: SystemTables = SystemTables()
    targets: Targets

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
        return out

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


def policy_problems(p: Policy) -> list[Problem]:
    """Every cross-field problem of a structurally valid policy, with its location."""
    return list(_iter_problems(p))


def _iter_problems(p: Policy) -> Iterator[Problem]:
    seen_regions: set[str] = set()
    for i, r in enumerate(p.regions):
        if r not in AWS_REGIONS:
            yield (("regions", i), *_unknown_region(r))
        if r in seen_regions:
            yield (("regions", i), f"region {r!r} is listed twice", "list each region once")
        seen_regions.add(r)

    countries = _country_codes()
    region_owner: dict[str, str] = {}
    country_owner: dict[str, str] = {}
    for jid, j in p.jurisdictions.items():
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
        if len(set(j.home_regions)) != len(j.home_regions):
            yield (
                base + ("home_regions",),
                "a home region is listed twice",
                "list each home region once",
            )

    for i, r in enumerate(p.regions):
        if r in AWS_REGIONS and r not in region_owner:
            yield (
                ("regions", i),
                f"region {r!r} belongs to no jurisdiction",
                "add it to exactly one jurisdiction's 'regions'",
            )

    if p.default_jurisdiction not in p.jurisdictions:
        yield (
            ("default_jurisdiction",),
            f"{p.default_jurisdiction!r} is not a declared jurisdiction",
            f"use one of {', '.join(p.jurisdictions)}",
        )

    tables: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, dc in p.data_classes.items():
        base = ("data_classes", name)
        if isinstance(dc, GlobalDataClass):
            placement: tuple[str, ...] = tuple(sorted(dc.replicas))
            for i, r in enumerate(dc.replicas):
                if r not in AWS_REGIONS:
                    yield (base + ("replicas", i), *_unknown_region(r, p.regions))
                elif r not in p.regions:
                    yield (
                        base + ("replicas", i),
                        f"replica region {r!r} is not declared",
                        f"use one of {', '.join(p.regions)} or declare it",
                    )
            if len(set(dc.replicas)) != len(dc.replicas):
                yield (
                    base + ("replicas",),
                    "a replica region is listed twice",
                    "list each replica once",
                )
            if dc.sort_key is not None and dc.sort_key == dc.partition_key:
                yield (
                    base + ("sort_key",),
                    "sort_key equals partition_key",
                    "use distinct attribute names",
                )
        else:
            placement = tuple(sorted(p.regions))
            if dc.partition_key in dc.pii_attributes:
                yield (
                    base + ("pii_attributes",),
                    f"the partition key {dc.partition_key!r} is listed as PII",
                    "keys are logged and reported: key items by an opaque user ID",
                )
            if len(set(dc.pii_attributes)) != len(dc.pii_attributes):
                yield (
                    base + ("pii_attributes",),
                    "an attribute is listed twice",
                    "list each PII attribute once",
                )
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
    return ".".join(str(x) for x in loc) or "(top level)"


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
    if isinstance(value, bool) and "countries" in loc:
        return (
            loc,
            f"expected a country code, got {got}: {_YAML_BOOLS} (an unquoted NO is false)",
            'quote the country code, e.g. "NO"',
        )
    if kind == "union_tag_invalid":
        tag = err["ctx"]["tag"]
        return (*loc, "kind"), f"unknown kind {tag!r}", "use kind: pinned or kind: global"
    if kind == "union_tag_not_found":
        return (
            loc,
            "the data class has no 'kind'",
            "add kind: pinned (personal data) or kind: global (shared data)",
        )
    if kind == "literal_error" and loc[-1:] == ("conflicts",):
        return (
            loc,
            f"conflicts must be 'lww' or a mapping 'merge: module:function', got {got}",
            "write conflicts: lww, or conflicts: {merge: 'package.module:function'}",
        )
    if kind == "literal_error":
        return loc, f"must be {err['ctx']['expected']}, got {got}", "use one of the allowed values"
    if kind == "string_pattern_mismatch":
        fmt = _FORMATS.get(err["ctx"]["pattern"], f"of the form {err['ctx']['pattern']}")
        what = "the key" if raw[-1] == "[key]" else "the value"
        return loc, f"{what} {value!r} is not {fmt}", "use that format; " + _FIX_SCHEMA
    if kind == "list_type":
        return loc, f"expected a list, got {got}", "write a list, e.g. [a, b]"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return (
            loc,
            f"expected a mapping, got {got}",
            "write indented 'key: value' lines under it; " + _FIX_SCHEMA,
        )
    if kind == "string_type":
        return loc, f"expected a string, got {got}", "quote the value"
    if kind in {"float_type", "int_type", "int_from_float"}:
        whole = "a whole number" if kind != "float_type" else "a number"
        if isinstance(value, bool):
            return loc, f"expected {whole}, got {got}: {_YAML_BOOLS}", f"write {whole}"
        return loc, f"expected {whole}, got {got}", f"write {whole}"
    if kind == "bool_type":
        return loc, f"expected true or false, got {got}", "write true or false, unquoted"
    if kind == "finite_number":
        return loc, f"must be a finite number, got {got}", "write a finite number"
    if kind == "too_short":
        return (
            loc,
            f"must hold at least {err['ctx']['min_length']} item, got none",
            "add at least one; " + _FIX_SCHEMA,
        )
    msg = err["msg"].replace("Input should be", "must be", 1)
    if "input" in err:
        msg = f"{msg}, got {got}"
    return loc, msg, _FIX_SCHEMA


def parse_policy(data: Any, *, source: str = "<policy>", marks: MarkedYaml | None = None) -> Policy:
    """Validate plain data as a policy; raise one PolicyError with every problem."""

    def line(loc: Loc) -> int | None:
        return marks.line_of(loc) if marks else None

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
        raise PolicyError([PolicyProblem(source, line(()) or 1, "(top level)", msg, fix)])
    try:
        policy = Policy.model_validate(data, context={"skip_semantics": True})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            described = _describe(err, data)
            if described is not None:
                loc, msg, fix = described
                problems.append(PolicyProblem(source, line(loc), _field(loc), msg, fix))
        raise PolicyError(problems) from None
    found = policy_problems(policy)
    if found:
        raise PolicyError(
            [PolicyProblem(source, line(loc), _field(loc), msg, fix) for loc, msg, fix in found]
        )
    return policy


def load_policy(path: str | Path) -> Policy:
    """Load and fully validate a policy file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            [
                PolicyProblem(
                    str(path),
                    None,
                    "(file)",
                    f"cannot read the file: {exc.strerror}",
                    "check the path, or set REGIONKIT_POLICY",
                )
            ]
        ) from None
    return parse_policy_text(text, source=str(path))


def parse_policy_text(text: str, *, source: str = "<policy>") -> Policy:
    marked = load_marked_yaml(text, source=source)
    return parse_policy(marked.data, source=source, marks=marked)


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
