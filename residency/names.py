"""Deterministic names shared by the CDK app, the drill CLI and the audit.

Pure Python and in the base layer: the CDK app, the
drills and the audit find what the CDK app deployed (stacks, outputs, alarms, key
aliases, the conflict detector's function and its alarms) without a CDK import.

Every name is a function of the policy name and a region (table names add the
settings' table prefix), so the same policy always deploys the same physical names.
It follows that a policy is deployed once per account: two table prefixes of one
policy in one account would share stacks, alarms, roles and the FIS template (whose
targets are the tables tagged with the policy). Give a second deployment in the same
account its own policy name.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

__all__ = [
    "DETECTOR_ALARMS",
    "DISRUPT_TAG",
    "DISRUPT_TAG_VALUE",
    "FIS_OUTPUT_KEY",
    "RESERVED_PREFIX",
    "TAG_DATA_CLASS",
    "TAG_JURISDICTION",
    "TAG_POLICY",
    "TAG_REGION",
    "UNDETERMINED_EVENT",
    "UNDETERMINED_METRIC",
    "access_stack_name",
    "composite_alarm_name",
    "detector_alarm_name",
    "detector_function_name",
    "fis_role_name",
    "key_alias",
    "keys_stack_name",
    "normalize_name",
    "regional_stack_name",
    "replication_alarm_name",
    "tables_stack_name",
]

#: The tag the FIS "Cross-Region: Connectivity" scenario selects tables by.
DISRUPT_TAG = "DisruptDynamoDb"
DISRUPT_TAG_VALUE = "Allowed"
TAG_DATA_CLASS = "regionkit:data-class"
TAG_JURISDICTION = "regionkit:jurisdiction"
TAG_POLICY = "regionkit:policy"
TAG_REGION = "regionkit:region"

#: Attribute names regionkit writes itself (versions, write tokens, fences) start with it;
#: a policy may not name an attribute so.
RESERVED_PREFIX = "rk_"

#: The CloudFormation output of each regional stack holding its FIS template id.
FIS_OUTPUT_KEY = "PauseReplicationExperimentTemplateId"


def _slug(text: str) -> str:
    """Letters, digits and hyphens only (CloudFormation stack names)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")


def _bounded(name: str, limit: int) -> str:
    """``name`` if it fits, else a prefix plus a short hash that keeps it unique."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def _stack(policy: str, *parts: str) -> str:
    return _bounded(_slug("-".join(("regionkit", policy, *parts))), 128)


def keys_stack_name(policy: str, region: str) -> str:
    """The stack holding the customer-managed KMS keys of one region."""
    return _stack(policy, "keys", region)


def tables_stack_name(policy: str, region: str) -> str:
    """The stack defining the global tables whose primary replica is in ``region``."""
    return _stack(policy, "tables", region)


def regional_stack_name(policy: str, region: str) -> str:
    """The stack of one region's detector, alarms and FIS experiment template."""
    return _stack(policy, "region", region)


def access_stack_name(policy: str) -> str:
    """The stack holding the IAM managed policy for services (IAM is global)."""
    return _stack(policy, "access")


def key_alias(policy: str, table: str) -> str:
    """The alias of a table's customer-managed key; the same name in every region.

    KMS keys are regional, so the alias names one key per region. Alias names allow
    letters, digits, ``/``, ``_`` and ``-``; other table-name characters become ``_``.
    """
    alias = "alias/regionkit/" + re.sub(r"[^A-Za-z0-9/_-]", "_", f"{policy}/{table}")
    return _bounded(alias, 256)  # KMS: 1 to 256 characters


def replication_alarm_name(policy: str, table: str, source: str, part: int | None = None) -> str:
    """The ReplicationLatency alarm of ``table``'s replication out of ``source`` (to every
    receiving region; ``part`` when they take more than one alarm)."""
    suffix = "" if part is None else f"-{part}"
    return _bounded(f"regionkit-{policy}-{table}-replication-latency-from-{source}{suffix}", 255)


def composite_alarm_name(policy: str, region: str) -> str:
    """The composite of every ReplicationLatency alarm emitted in ``region``."""
    return _bounded(f"regionkit-{policy}-{region}-replication-latency", 255)


def fis_role_name(policy: str, region: str) -> str:
    """The role FIS assumes to pause replication in ``region`` (IAM: 64 characters)."""
    return _bounded(_slug(f"regionkit-{policy}-fis-{region}"), 64)


def detector_function_name(policy: str, region: str) -> str:
    """The conflict-detector Lambda function of ``region`` (64 characters)."""
    return _bounded(_slug(f"regionkit-{policy}-detector-{region}"), 64)


DETECTOR_ALARMS = ("errors", "iteratorage", "deadletters", "undetermined")
"""The conflict detector's health alarms in each region: failed invocations, a stream
iterator more than 5 minutes old, messages in its dead-letter queue, a record it could
not judge (its lineage entry never arrived: :data:`UNDETERMINED_EVENT`)."""

UNDETERMINED_EVENT = "conflict undetermined: the lineage entry never arrived"
"""The detector's log event for a record left undetermined (regions.conflicts); the CDK
app counts it with a metric filter on the detector's log group and alarms on it."""
UNDETERMINED_METRIC = "ConflictsUndetermined"


def detector_alarm_name(policy: str, region: str, alarm: str) -> str:
    """One of the :data:`DETECTOR_ALARMS` of ``region``'s conflict detector."""
    if alarm not in DETECTOR_ALARMS:
        raise ValueError(f"not a detector alarm: {alarm!r} (one of {DETECTOR_ALARMS})")
    return f"{detector_function_name(policy, region)}-{alarm}"


_SEPARATORS = re.compile(r"[\s_.\-]+")


@functools.lru_cache(maxsize=4096)
def normalize_name(name: str) -> str:
    """How an attribute name is compared with the policy's PII names, everywhere (the
    router's guard, the log redactor, the policy checks and the audit).

    NFKC (full-width and other compatibility forms fold to plain letters), without
    invisible format characters (zero-width spaces and joiners), without ``_ - .``
    and spaces, case-folded: ``E-Mail``, ``e_mail``, a full-width ``email`` and
    ``e\u200bmail`` (a zero-width space inside) are all ``email``. Cached: a service
    uses the same few names over and over.
    """
    if not name.isascii():
        folded = unicodedata.normalize("NFKC", name)
        name = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return _SEPARATORS.sub("", name).casefold()
