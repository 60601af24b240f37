"""The merge functions a router applies, resolved once each through the allow-list.

A data class names its merge function in the policy (``conflicts: {merge: ...}``);
the reference resolves only inside ``regions.merges`` and the operator's
``merge_modules`` setting, never where a policy points (see
:func:`residency.policy.resolve_merge`). The functions themselves are
:mod:`regions.merges`.
"""

from __future__ import annotations

from collections.abc import Sequence

from regions.versioned import Merge

__all__ = ["MergeFunctions"]


class MergeFunctions:
    """``(data_class, ref) -> merge function``, each resolved once and kept."""

    def __init__(self, extra_modules: Sequence[str]) -> None:
        self.extra_modules = extra_modules
        self._merge: dict[str, Merge] = {}

    def __call__(self, data_class: str, ref: str) -> Merge:
        """The data class's merge function, resolved once through the policy's allow-list
        (``regions.merges`` and the operator's ``merge_modules``; never a policy's choice)."""
        fn = self._merge.get(data_class)
        if fn is None:
            from residency.policy import resolve_merge

            fn = resolve_merge(
                ref,
                extra_modules=self.extra_modules,
                field=f"data_classes.{data_class}.conflicts.merge",
            )
            self._merge[data_class] = fn
        return fn
