"""Hybrid logical clocks (Kulkarni, Demirbas et al., 2014) and version stamps.

A stamp is ``(l, c, node, region)``: ``l`` is the largest physical time (ms) the
clock has seen, ``c`` a counter that orders events within the same ``l``, and the
writer's identity (its node, then its region) breaks the remaining ties, so any
two stamps are totally ordered and the order extends happened-before: if a write
was based on a version it has read, its stamp is larger.

Stamps are unique per *writer*, not per region: every clock has a node ID (8 hex
digits, random per process unless configured), so two routers in one region
never mint the same stamp in the same millisecond.

Text form ``{l:012x}.{c:04x}.{node}.{region}`` (for example
``0193a2b4c5d6.0000.1f2e3d4c.eu-west-1``). The region stays the last dot-separated
field. The text sorts lexicographically in the same order as the stamps compare
(the order *is* the text's: fixed-width hex, then ``node.region``), so DynamoDB
condition expressions can compare stamps as strings. Stamps written before node
IDs existed (``{l:012x}.{c:04x}.{region}``, node ``""``) still parse and compare.

Invariants (tested with hypothesis): stamps from one clock strictly increase;
``l >= pt`` at every event; ``l - pt`` never exceeds the maximum offset, because
a remote stamp further ahead than ``max_offset_ms`` is refused
(:class:`ClockDriftError`) instead of being adopted.

Why refusing is the default, and the operator's way out: a clock that adopts a
stamp far ahead runs ahead itself, and so does every clock that reads what it
writes next; one broken clock (a year ahead) would drag every stamp with it for
good. The cost is availability: while one writer is ``d`` > ``max_offset_ms``
ahead, every write based on a version it wrote is refused elsewhere (measured in
``tests/test_conflicts_skew.py``: 100% at 5 s). An operator who knows the
skew is bounded (say, an NTP step after a VM pause) sets ``adopt_drift_ms`` (a
router's ``RouterConfig(hlc_adopt_drift_ms=...)``, ``REGIONKIT_HLC_ADOPT_DRIFT_MS``
for ``RegionRouter.from_env()`` and the CLI): a remote stamp up
to that far ahead is then adopted, with a ``clock drift adopted`` warning logged
and counted (``drift_adopted``), and causally later writes keep working (0%
refused at 5 s with 10 s allowed, no causally later write lost). Beyond it the
stamp is still refused. The offset bound then holds at ``adopt_drift_ms``.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from residency.errors import ClockDriftError, MalformedId, describe_value
from residency.logs import get_logger

log = get_logger("regionkit.hlc")

__all__ = ["HLC", "ClockDriftError", "Stamp", "new_node_id", "wall_clock_ms"]

_COUNTER_MAX = 0xFFFF
_TEXT = re.compile(r"^([0-9a-f]{12})\.([0-9a-f]{4})\.(?:([0-9a-f]{8})\.)?([a-z0-9-]{1,32})$")
_NODE = re.compile(r"^[0-9a-f]{8}$")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def new_node_id() -> str:
    """A random node ID: 32 bits, so two processes collide with chance 2**-32 per pair."""
    return secrets.token_hex(4)


def _text(l: int, c: int, node: str, region: str) -> str:  # noqa: E741 - the paper's name
    """A stamp's text: fixed-width hex, so text order is stamp order."""
    if node:
        return f"{l:012x}.{c:04x}.{node}.{region}"
    return f"{l:012x}.{c:04x}.{region}"


@dataclass(frozen=True, slots=True)
class Stamp:
    l: int  # noqa: E741 - the paper's name
    c: int
    region: str
    node: str = ""

    def __str__(self) -> str:
        return _text(self.l, self.c, self.node, self.region)

    def _key(self) -> tuple[int, int, str]:
        # the text order: l and c are fixed-width hex, then "node.region" (or the region)
        return (self.l, self.c, f"{self.node}.{self.region}" if self.node else self.region)

    def __lt__(self, other: Stamp) -> bool:
        return self._key() < other._key()

    def __le__(self, other: Stamp) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: Stamp) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: Stamp) -> bool:
        return self._key() >= other._key()

    @classmethod
    def parse(cls, text: str) -> Self:
        m = _TEXT.match(text)
        if not m:
            raise MalformedId(
                kind="version stamp",
                value=describe_value(text),
                reason="expected '<12 hex>.<4 hex>.<8 hex node>.<region>'",
            )
        return cls(int(m.group(1), 16), int(m.group(2), 16), m.group(4), m.group(3) or "")

    @property
    def millis(self) -> int:
        return self.l


class HLC:
    """A thread-safe hybrid logical clock for one writer (a region plus a node ID).

    ``physical`` returns milliseconds; a skewed writer is simulated by passing a
    skewed physical clock (the local cluster's clock-skew fault does exactly that).
    ``node`` (8 hex digits) names the writer within its region; by default it is
    random, so every clock, in every process, mints stamps no other clock mints.
    """

    def __init__(
        self,
        region: str,
        *,
        physical: Callable[[], int] = wall_clock_ms,
        max_offset_ms: int = 500,
        node: str | None = None,
        adopt_drift_ms: int = 0,
    ) -> None:
        if node is not None and not _NODE.match(node):
            raise MalformedId(
                kind="clock node ID", value=describe_value(node), reason="expected 8 hex digits"
            )
        self.region = region
        self.node = node if node is not None else new_node_id()
        self.adopt_drift_ms = max(0, adopt_drift_ms)
        self.drift_adopted = 0
        self.physical = physical
        self.max_offset_ms = max_offset_ms
        self._l = 0
        self._c = 0
        self._lock = threading.Lock()

    def _tick(self) -> tuple[int, int]:
        """Advance for a local event; the new (l, c)."""
        with self._lock:
            pt = self.physical()
            if pt > self._l:
                self._l, self._c = pt, 0
            else:
                self._bump()
            return self._l, self._c

    def now(self) -> Stamp:
        """A stamp for a local event (a write)."""
        l, c = self._tick()  # noqa: E741 - the paper's name
        return Stamp(l, c, self.region, self.node)

    def now_text(self) -> str:
        """``str(self.now())`` without the :class:`Stamp` in between (every write's path)."""
        l, c = self._tick()  # noqa: E741 - the paper's name
        return _text(l, c, self.node, self.region)

    def observe(self, remote: Stamp) -> Stamp:
        """Merge a stamp read from elsewhere (a receive event); returns the new local stamp.

        Raises ClockDriftError, leaving the clock unchanged, when ``remote`` is more
        than ``max_offset_ms`` ahead of our physical time (or, when the operator
        allows adopting drift, more than ``adopt_drift_ms``: up to that it is
        adopted with a warning).
        """
        l, c = self.merge(remote)  # noqa: E741 - the paper's name
        return Stamp(l, c, self.region, self.node)

    def merge(self, remote: Stamp) -> tuple[int, int]:
        """:meth:`observe`, returning the new local (l, c) without building a Stamp
        (every read's path)."""
        with self._lock:
            pt = self.physical()
            ahead = remote.l - pt
            if ahead > self.max_offset_ms and ahead <= self.adopt_drift_ms:
                self.drift_adopted += 1
                log.warning("clock drift adopted", stamp_region=remote.region, ahead_ms=ahead)
            elif ahead > self.max_offset_ms:
                raise ClockDriftError(
                    stamp=str(remote),
                    region=remote.region,
                    ahead_ms=remote.l - pt,
                    max_offset_ms=self.max_offset_ms,
                )
            l_new = max(self._l, remote.l, pt)
            if l_new == self._l == remote.l:
                c_new = max(self._c, remote.c) + 1
            elif l_new == self._l:
                c_new = self._c + 1
            elif l_new == remote.l:
                c_new = remote.c + 1
            else:
                c_new = 0
            self._l, self._c = l_new, c_new
            if self._c > _COUNTER_MAX:
                self._l, self._c = self._l + 1, 0
            return self._l, self._c

    def _bump(self) -> None:
        self._c += 1
        if self._c > _COUNTER_MAX:  # 65k events in one ms: borrow the next ms
            self._l, self._c = self._l + 1, 0

    def peek(self) -> Stamp:
        with self._lock:
            return Stamp(self._l, self._c, self.region, self.node)
