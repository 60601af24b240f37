"""The one error tree of regionkit.

Every error regionkit raises on purpose derives from :class:`RegionkitError`.
There are two branches, and the CLI maps each to an exit code::

    RegionkitError
    ├── ConfigError                 bad input or configuration (CLI exit 2)
    │   ├── PolicyError             a policy file is invalid; carries every problem found
    │   ├── SettingsError           a setting is invalid (for example a non-loopback
    │   │                           endpoint in local mode)
    │   ├── UnknownRegion           a region code that is not in the policy
    │   ├── UnknownDataClass        a data class that is not in the policy
    │   ├── UnknownCountry          not an ISO 3166-1 alpha-2 country code
    │   ├── MalformedId             an ID regionkit did not mint, or mangled (the value is
    │   │                           described by shape, never echoed)
    │   ├── UnassignedUser          a pinned request for a user with no directory entry yet
    │   ├── UnknownSubject          a data-subject request for an ID with no directory entry
    │   │                           and no data anywhere (a mistyped ID): nothing is done
    │   └── UnknownName             a scenario, check, format ... that does not exist
    └── OperationError              the request was valid but could not be carried out
        ├── ResidencyViolation      the residency guard refused a request before it left
        │                           (a pinned item abroad, or a PII attribute in a global class)
        ├── RegionUnavailable       no allowed region is healthy
        ├── StaleWrite              a conditional write lost to a newer version
        ├── ClockDriftError         a remote HLC stamp is further ahead of this clock than
        │                           the allowed offset (check NTP on the writer)
        ├── CorruptRecord           a stored record regionkit reads (a directory entry)
        │                           holds a value it never writes (named by field only)
        ├── BackendError            DynamoDB (or the local cluster) failed; wraps the cause
        │   ├── RegionTimeout       no answer in time (connect or read timeout)
        │   ├── RegionUnreachable   refused, reset, or a server fault (5xx)
        │   └── Throttled           still throttled after the retries in the same region
        ├── ClusterError            the embedded local cluster could not start or was lost
        └── ExportFailed            a DynamoDB export to S3 for the audit failed or was refused

Like botocore's exceptions, each class builds its message from a template and
keeps the facts as attributes (``err.region``, ``err.data_class`` ...), so code
can branch on them without parsing text. **No attribute and no message ever
holds a PII value**: errors name data classes, regions, jurisdictions, keys of
non-PII tables and user IDs minted by the router (opaque, no PII), never the
contents of a profile. An item that must be identified is named by its keyed
pseudonym (:mod:`residency.pseudonym`).

Every error pickles and copies with its facts (``__reduce__``, as botocore's
errors do), so it survives process pools, task queues and ``copy.copy``.
Library failures are mapped at the boundary (``raise ... from exc``) only where
the original carries no item value; where it could (a serialization error, a
condition failure returning the old item), the regionkit error is raised outside
the ``except`` block so that neither ``__cause__`` nor ``__context__`` holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "BackendError",
    "ClockDriftError",
    "ClusterError",
    "ConfigError",
    "CorruptRecord",
    "ExportFailed",
    "MalformedId",
    "OperationError",
    "PolicyError",
    "PolicyProblem",
    "RegionTimeout",
    "RegionUnavailable",
    "RegionUnreachable",
    "RegionkitError",
    "ResidencyViolation",
    "SettingsError",
    "StaleWrite",
    "Throttled",
    "UnassignedUser",
    "UnknownCountry",
    "UnknownDataClass",
    "UnknownName",
    "UnknownRegion",
    "UnknownSubject",
]


class RegionkitError(Exception):
    """Base of every regionkit error.

    Subclasses set ``fmt``; the keyword arguments fill it and are kept as
    attributes.
    """

    fmt: ClassVar[str] = "regionkit error"

    def __init__(self, **facts: Any) -> None:
        self.facts = facts
        for name, value in facts.items():
            setattr(self, name, value)
        super().__init__(self._render())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.facts))

    def _render(self) -> str:
        try:
            return self.fmt.format(**self.facts)
        except (KeyError, IndexError):  # a missing fact is a bug in the raiser
            return f"{self.fmt} {self.facts}"


# --- input and configuration -------------------------------------------------


class ConfigError(RegionkitError):
    """Bad input or configuration: the user can fix it. CLI exit code 2."""

    fmt = "{message}"


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    field: str
    message: str
    fix: str = ""
    value: str | None = None  # the offending value as written, escaped and truncated

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}"
        if self.value is not None and self.value.strip("'\"") not in self.message:
            text += f" (value: {self.value})"
        return f"{text} (fix: {self.fix})" if self.fix else text


class PolicyError(ConfigError):
    """A policy file is invalid. ``problems`` lists every problem found."""

    fmt = "{summary}"

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        summary = "\n".join(str(p) for p in problems)
        super().__init__(summary=summary)
        self.problems = problems

    def __reduce__(self) -> tuple[Any, ...]:
        return (PolicyError, (self.problems,))


class SettingsError(ConfigError):
    fmt = "setting {setting}={value!r} is invalid: {reason} (fix: {fix})"


class UnknownRegion(ConfigError):
    fmt = "unknown region {region!r}: {reason} (known: {known})"


class UnknownDataClass(ConfigError):
    fmt = "unknown data class {data_class!r} (the policy declares: {known})"


class UnknownCountry(ConfigError):
    fmt = "{country!r} is not an ISO 3166-1 alpha-2 country code (for example 'IN', 'BR', 'DE')"


class MalformedId(ConfigError):
    """``value`` is a description of what was given (its shape), never the value itself:
    a mistyped e-mail passed as a user ID must not be echoed into logs and terminals."""

    fmt = "malformed {kind} ({value}): {reason}"


class UnassignedUser(ConfigError):
    """A pinned request for a user the directory has no home for.

    Routing on the hint inside the ID would let a mis-minted ID choose the
    jurisdiction; only ``assign_home`` (which checks the country) makes a home.
    """

    fmt = (
        "user {user} has no home in the directory, so {data_class!r} cannot be "
        "{op}; call router.assign_home(user_id, country=...) at sign-up first"
    )


class UnknownSubject(ConfigError):
    """Erasing (or exporting) an ID the directory never knew and no region holds data of:
    most likely a mistyped ID, so saying ``done`` would certify the wrong person's erasure."""

    fmt = (
        "no user {user} in the directory and no data of theirs in any readable region: "
        "nothing to {action} (check the ID: it is as minted, 'u-<region>-<ULID>')"
    )


class UnknownName(ConfigError):
    fmt = "unknown {kind} {name!r} (choose one of: {known})"


# --- runtime and backend ----------------------------------------------------


class OperationError(RegionkitError):
    """A valid request that could not be carried out. CLI exit code 1."""

    fmt = "{message}"


class ResidencyViolation(OperationError):
    """The residency guard refused a request; nothing was sent to AWS."""

    fmt = (
        "residency violation: {op} of data class {data_class!r} for a subject of "
        "jurisdiction {jurisdiction} may not go to region {region} "
        "(allowed: {allowed}); {reason}"
    )


class RegionUnavailable(OperationError):
    fmt = "no healthy region for data class {data_class!r} in {scope}: {reason}"


class StaleWrite(OperationError):
    """A conditional write lost: the item already holds a newer version.

    ``current`` is the version (an HLC stamp string) the item holds now.
    """

    fmt = (
        "stale write to {data_class!r} key {key!r} in {region}: based on {based_on}, "
        "but the item is at {current}; re-read and retry"
    )


class CorruptRecord(OperationError):
    """A stored record holds a value regionkit never writes there (an edit by hand, a
    tool, an attack). The value is never shown: it could be anything."""

    fmt = "the {kind} of {record} holds an invalid {field} (value not shown); {fix}"


class BackendError(OperationError):
    fmt = "{operation} in {region} failed: {code}: {reason}"


class RegionTimeout(BackendError):
    """The region did not answer in time; ``__cause__`` is the botocore timeout."""


class RegionUnreachable(BackendError):
    """The region refused, reset the connection, or answered with a server fault."""


class Throttled(BackendError):
    """The region kept throttling after the router's retries in that region."""


class ClusterError(OperationError):
    fmt = "local cluster: {message}"


class ClockDriftError(OperationError):
    """A remote stamp is further ahead of our physical clock than the allowed offset."""

    fmt = (
        "remote stamp {stamp} from {region} is {ahead_ms} ms ahead of this clock "
        "(max offset {max_offset_ms} ms); check NTP on the writer"
    )


class ExportFailed(OperationError):
    """A DynamoDB export to S3 (the audit's data scan of a large table) failed."""

    fmt = "export {what}: {reason}"


def _rebuild(cls: type[RegionkitError], facts: dict[str, Any]) -> RegionkitError:
    """Unpickle a regionkit error from its class and facts (see ``__reduce__``)."""
    return cls(**facts)


def describe_value(value: object) -> str:
    """A value's shape for a message: its type and length, never its content."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return f"a value of type {type(value).__name__}"
