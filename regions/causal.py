"""What a router has read: its clock learns every stamp, and each write's causal past.

Every item read moves the router's HLC forward (:mod:`regions.hlc`); a stamp too far
ahead is flagged, never adopted. The version vectors of items read are remembered,
so a write ``based_on`` one of them carries its ancestors (the conflict detector
tells a successor from a concurrent write by them).
"""

from __future__ import annotations

import threading
from typing import Any

from regions.codec import AT_ATTR, VERSION_ATTR, VV_ATTR
from regions.hlc import HLC, ClockDriftError, Stamp
from residency.errors import MalformedId
from residency.logs import get_logger

__all__ = ["CausalHistory"]

log = get_logger("regionkit.router")


class CausalHistory:
    """The clock, the drift flags, and the version vectors of recently read versions."""

    def __init__(self, clock: HLC) -> None:
        self.clock = clock
        self.drift_flags = 0
        self._lock = threading.Lock()
        self._vv_cache: dict[str, dict[str, str]] = {}

    def observe(self, item: dict[str, Any] | None) -> None:
        """Merge a read item's stamp into our clock, flagging (not adopting) a drifted one."""
        if not item or VERSION_ATTR not in item:
            return
        vv = item.get(VV_ATTR)
        if isinstance(vv, dict):
            own = dict(vv)
            at = item.get(AT_ATTR)
            if isinstance(at, str):
                own[at] = max(str(item[VERSION_ATTR]), str(own.get(at, "")))
            with self._lock:
                self._vv_cache[str(item[VERSION_ATTR])] = own
                if len(self._vv_cache) > 10_000:
                    self._vv_cache.pop(next(iter(self._vv_cache)))
        try:
            self.clock.merge(Stamp.parse(str(item[VERSION_ATTR])))
        except ClockDriftError as exc:
            with self._lock:
                self.drift_flags += 1
            log.warning(
                "clock drift flagged",
                stamp_region=getattr(exc, "region", None),
                ahead_ms=getattr(exc, "ahead_ms", None),
            )
        except MalformedId:
            log.warning("unparseable version stamp ignored")

    def observe_many(self, items: list[dict[str, Any]]) -> None:
        """The clock learns the newest stamp of a page or batch (one parse, not one per item).

        (Callers that write back ``based_on=item`` carry the item's own version vector.)
        """
        newest = max((str(i[VERSION_ATTR]) for i in items if VERSION_ATTR in i), default=None)
        if newest is not None:
            self.observe({VERSION_ATTR: newest})

    def causal_past(
        self, based_on: str | dict[str, Any] | None, stamp: str
    ) -> tuple[str | None, dict[str, str]]:
        """The base version and the version vector of a new write stamped ``stamp``."""
        if isinstance(based_on, dict):
            base = based_on.get(VERSION_ATTR)
            vv = dict(based_on.get(VV_ATTR) or {})
            if base:
                at = str(based_on.get(AT_ATTR) or str(base).rsplit(".", 1)[-1])
                vv[at] = max(str(base), vv.get(at, ""))
            based_on = str(base) if base else None
        elif based_on:
            with self._lock:
                vv = dict(self._vv_cache.get(based_on, {}))
            if not vv:  # never read here: its landing region is unknown, assume its writer's
                vv[based_on.rsplit(".", 1)[-1]] = based_on
        else:
            vv = {}
        if based_on and Stamp.parse(based_on) >= Stamp.parse(stamp):
            # The version we read is ahead of our clock by more than the allowed offset
            # (observe() refused to adopt it). Writing now would order our write before
            # the one it is based on: refuse instead.
            base_stamp = Stamp.parse(based_on)
            raise ClockDriftError(
                stamp=based_on,
                region=base_stamp.region,
                ahead_ms=base_stamp.l - Stamp.parse(stamp).l,
                max_offset_ms=self.clock.max_offset_ms,
            )
        return based_on, vv
