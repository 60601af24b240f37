"""The PII attribute names this process knows, for the log redactor.

A :class:`~residency.policy.Policy` registers its PII attributes here when it is built,
so every regionkit log line withholds their values whether or not logging was ever
configured. Kept apart from :mod:`residency.logs` so that loading a policy does not
import structlog. Names are only ever added: redaction never narrows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from residency.names import normalize_name

__all__ = ["register", "registered"]

_names: frozenset[str] = frozenset()
_lock = threading.Lock()


def register(names: Iterable[str]) -> None:
    """Add ``names`` (compared as :func:`~residency.names.normalize_name` compares them)."""
    global _names
    new = {normalize_name(n) for n in names}
    with _lock:
        _names = _names | new


def registered() -> frozenset[str]:
    return _names
