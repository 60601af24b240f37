"""The residency guard: may data class D of a subject from jurisdiction J go to region R?

It runs inside the process, before any request leaves it. A refusal raises
:class:`~residency.errors.ResidencyViolation` and writes an audit event (data
class, operation, region, jurisdiction; never an item value). There is no
switch that turns it off: a service that must reach another region changes the
policy, which is reviewed like code.
"""

from __future__ import annotations

import threading

from residency.errors import ResidencyViolation
from residency.logs import get_logger
from residency.policy import GlobalDataClass, Policy

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
