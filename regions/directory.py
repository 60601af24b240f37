"""The user directory: user ID → home region, cached in process.

The directory is a global data class (no PII: a user ID, a region, a
jurisdiction and a move status). The router caches entries in a bounded LRU
with a TTL; a hit costs a dict lookup and no I/O. The cache is a speed-up, never
the guarantee: a process whose entry is stale after a move meets the ``moved``
fence the move left in the old home (see :mod:`regions.users`), and follows it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DirectoryCache", "DirectoryEntry", "check_cache_ttl"]


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    user_id: str
    home_region: str
    jurisdiction: str
    status: str = "active"  # "active" | "moving" | "verifying" (see regions.users)
    moving_to: str | None = None
    moved_from: str | None = None
    epoch: str | None = None  # the move this entry belongs to (see regions.moves)
    version: str | None = None
    source: str = "directory"  # "directory" | "id-hint" | "fence" (learnt from a move fence)

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "home_region": self.home_region,
            "jurisdiction": self.jurisdiction,
            "status": self.status,
        }
        if self.moving_to:
            item["moving_to"] = self.moving_to
        if self.moved_from:
            item["moved_from"] = self.moved_from
        if self.epoch:
            item["move_epoch"] = self.epoch
        return item

    @classmethod
    def from_item(cls, user_id: str, item: dict[str, Any]) -> DirectoryEntry:
        return cls(
            user_id=user_id,
            home_region=str(item["home_region"]),
            jurisdiction=str(item["jurisdiction"]),
            status=str(item.get("status", "active")),
            moving_to=item.get("moving_to"),
            moved_from=item.get("moved_from"),
            epoch=item.get("move_epoch"),
            version=item.get("rk_v"),
        )


class DirectoryCache:
    """A thread-safe LRU with a TTL. ``maxsize=0`` disables caching."""

    def __init__(
        self,
        maxsize: int = 100_000,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxsize = maxsize
        self.ttl = ttl_seconds
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, DirectoryEntry]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, user_id: str) -> DirectoryEntry | None:
        found = self._data.get(user_id)
        if found is not None and found[0] > self.clock():
            self.hits += 1  # a lost increment under contention is acceptable for a statistic
            # One C call, atomic under the GIL; the entry may have just been evicted.
            # (try/except, not contextlib.suppress: this is the router's hot path.)
            try:
                self._data.move_to_end(user_id)
            except KeyError:
                pass
            return found[1]
        self.misses += 1
        return None

    def put(self, entry: DirectoryEntry, ttl: float | None = None) -> None:
        if self.maxsize <= 0:
            return
        expires = self.clock() + (self.ttl if ttl is None else ttl)
        with self._lock:
            self._data[entry.user_id] = (expires, entry)
            self._data.move_to_end(entry.user_id)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def invalidate(self, user_id: str) -> None:
        with self._lock:
            self._data.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


def check_cache_ttl(tombstone_retention_days: int, ttl_seconds: float) -> None:
    """A cached home must expire before the fences a move leaves: a router whose entry
    outlived them would write the user's data in the old jurisdiction again."""
    from residency.errors import ConfigError

    retention = tombstone_retention_days * 86_400
    if ttl_seconds >= retention:
        raise ConfigError(
            message=f"directory_cache_ttl_seconds ({ttl_seconds:g}) must be shorter than the "
            f"policy's system.tombstone_retention_days ({retention} s): a cached home must "
            "expire before the fences a move leaves in the old jurisdiction (fix: lower "
            "REGIONKIT_DIRECTORY_CACHE_TTL_SECONDS; the default is 300)"
        )
