"""The residency guard: may data class D of a subject from jurisdiction J go to region R?

It runs inside the process, before any request leaves it. It answers two questions:

* :meth:`ResidencyGuard.check`: may this region serve this data class for a subject
  of this jurisdiction?
* :meth:`ResidencyGuard.check_no_pii`: does an item bound for a global data class
  (replicated to every replica region) hold an attribute the policy names as
  personal data? Names are matched case-insensitively at any depth of nested maps
  and lists. A global class cannot declare an exception: personal data belongs in
  a pinned class, and an attribute whose name collides with a PII name (an
  ``address`` that is a URL) is renamed.
 A refusal raises
:class:`~residency.errors.ResidencyViolation` and writes an audit event (data
class, operation, region, jurisdiction; never an item value). There is no
switch that turns it off: a service that must reach another region changes the
policy, which is reviewed like code.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from residency import pii_registry
from residency.errors import ResidencyViolation
from residency.logs import get_logger
from residency.names import normalize_name
from residency.policy import GlobalDataClass, Policy

_MAX_DEPTH = 32  # DynamoDB allows 32 levels of nesting
_LEAVES = frozenset({str, int, bool, bytes, float, type(None)})  # skipped before the ABC check

__all__ = ["ResidencyGuard"]

audit_log = get_logger("regionkit.audit")


class ResidencyGuard:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # (data class, jurisdiction or "") -> allowed regions, computed once.
        self._allowed: dict[tuple[str, str], frozenset[str]] = {}
        for name, dc in policy.data_classes.items():
            if isinstance(dc, GlobalDataClass):
                self._allowed[(name, "")] = frozenset(dc.replicas)
            else:
                for jid, j in policy.jurisdictions.items():
                    self._allowed[(name, jid)] = frozenset(j.regions)
        self._lock = threading.Lock()
        self.refusals = 0
        self.pii_names = frozenset(normalize_name(n) for n in policy.pii_attributes())
        pii_registry.register(self.pii_names)  # a policy however made (model_copy ...)

    def allowed(self, data_class: str, jurisdiction: str | None) -> frozenset[str]:
        dc = self.policy.data_class(data_class)
        key = (data_class, "" if isinstance(dc, GlobalDataClass) else (jurisdiction or ""))
        return self._allowed.get(key, frozenset())

    def check(
        self, *, op: str, data_class: str, region: str, jurisdiction: str | None, reason: str = ""
    ) -> None:
        """Return if allowed; otherwise log an audit event and raise ResidencyViolation."""
        allowed = self.allowed(data_class, jurisdiction)
        if region in allowed:
            return
        dc = self.policy.data_class(data_class)
        if isinstance(dc, GlobalDataClass):
            why = reason or f"{region} holds no replica of {data_class}"
        elif jurisdiction is None:
            why = reason or "the subject's jurisdiction is unknown"
        else:
            law = self.policy.jurisdictions[jurisdiction].law
            why = reason or f"{law} keeps {data_class} inside {jurisdiction}"
        with self._lock:
            self.refusals += 1
        audit_log.warning(
            "residency.refused",
            op=op,
            data_class=data_class,
            region=region,
            jurisdiction=jurisdiction,
            reason=why,
        )
        raise ResidencyViolation(
            op=op,
            data_class=data_class,
            region=region,
            jurisdiction=jurisdiction or "unknown",
            allowed=", ".join(sorted(allowed)) or "none",
            reason=why,
        )

    def check_no_pii(self, *, op: str, data_class: str, item: object) -> None:
        """Refuse (ResidencyViolation) an item of a global class holding a PII attribute name.

        Only the attribute's *name* and depth are reported: the value never is, and
        neither are the names of the maps above it (a map may be keyed by data).
        """
        found = _find_pii_name(item, self.pii_names, 0)
        if found is None:
            return
        name, depth = found
        why = (
            f"attribute {name!r} (depth {depth}) is named as personal data by the policy; "
            f"{data_class} is replicated to every replica region, so personal data belongs "
            "in a pinned data class"
        )
        with self._lock:
            self.refusals += 1
        audit_log.warning(
            "residency.refused", op=op, data_class=data_class, reason="pii attribute", depth=depth
        )
        raise ResidencyViolation(
            op=op,
            data_class=data_class,
            region="any replica",
            jurisdiction="global",
            allowed="none",
            reason=why,
        )


def _find_pii_name(value: object, names: frozenset[str], depth: int) -> tuple[str, int] | None:
    """The first attribute name in ``names`` (normalized: :func:`normalize_name`) inside
    ``value``, and its depth."""
    if depth > _MAX_DEPTH:  # deeper than DynamoDB stores: refuse rather than look away
        return "(nesting deeper than 32 levels)", depth
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and (n := normalize_name(k)) in names:
                return n, depth
            if type(v) not in _LEAVES and isinstance(v, (Mapping, list, tuple)):
                found = _find_pii_name(v, names, depth + 1)
                if found is not None:
                    return found
    elif isinstance(value, (list, tuple)):
        for v in value:
            if type(v) not in _LEAVES and isinstance(v, (Mapping, list, tuple)):
                found = _find_pii_name(v, names, depth + 1)
                if found is not None:
                    return found
    return None
