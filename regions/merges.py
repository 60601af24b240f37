"""The built-in merge functions, under the name policies give them.

A policy writes ``regions.merges:merge_counters``. The functions are defined in
:mod:`residency.merges`, the base layer, so that the policy loader checks a policy's
merge references without importing ``regions``; this module holds the same functions
under their documented name.
"""

from __future__ import annotations

from residency.merges import (
    increment_counter,
    merge_counters,
    total,  # noqa: F401 - a helper for readers, not a merge function
)

__all__ = ["increment_counter", "merge_counters"]
