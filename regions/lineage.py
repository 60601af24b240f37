"""The shared record of parents: each version's parent, as its landing region saw it.

A write's parent is what it replaced in the replica it landed in, and only that
region's stream record (its ``OldImage``) shows it. The local cluster's detector
reads every region's stream, so it learns every parent itself. On AWS each
region's detector (a Lambda on that region's streams) sees a write that landed
elsewhere only as a replicated record over whatever *its* replica held, which for
a blind write (no ``rk_base``, an empty version vector) says nothing about what
the write replaced where it landed.

So each detector publishes the parents of the writes that *originated* in its
region (its own stream's records with ``rk_at`` = its region) to a small lineage
table, itself a global table replicated to every region a detector runs in, and a
detector judging a replicated write whose parent the writer's claims do not give
looks the parent up there (``BatchGetItem``, up to 100 keys a request).

One entry per version::

    pk         "<table>#<version>"   (the physical table name and the HLC stamp)
    parent     the version it replaced (absent: it replaced nothing)
    expires_at epoch seconds (TTL): entries are needed only while the records that
               refer to them are in flight (a stream keeps records for 24 hours)

Entries hold no item key and no attribute value (stamps are clock, counter, node
and region), so the table may replicate across jurisdictions.

An entry that has not replicated yet is never guessed at: the record waits
(:class:`LineagePending`), and the detector's caller retries it (the Lambda reports
it in ``batchItemFailures``). One whose entry is still missing when the record is
older than the detector's ``lineage_max_age_s`` is counted and logged as
*undetermined*, never as a conflict (see :mod:`regions.conflicts`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from residency.clients import ClientProvider
from residency.tables import TTL_ATTRIBUTE

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "GET_LIMIT",
    "PARENT_ATTR",
    "WRITE_LIMIT",
    "LineagePending",
    "SharedLineage",
    "entry_key",
]

PARENT_ATTR = "parent"
GET_LIMIT = 100  # keys per BatchGetItem (DynamoDB's limit)
WRITE_LIMIT = 25  # puts per BatchWriteItem (DynamoDB's limit)
# A week: longer than a stream keeps a record (24 hours) plus any retry of it.
DEFAULT_TTL_SECONDS = 7 * 86_400
_ROUNDS = 8  # attempts at unprocessed keys or items before the call fails


class LineagePending(Exception):
    """A version's parent is not in the lineage table (yet): the record must wait."""

    def __init__(self, table: str, version: str) -> None:
        super().__init__(f"{table}: the parent of {version} has not replicated yet")
        self.table = table
        self.version = version

    def __reduce__(self) -> Any:
        return (LineagePending, (self.table, self.version))


def entry_key(table: str, version: str) -> str:
    return f"{table}#{version}"


class SharedLineage:
    """Reads and writes the lineage table in one region (each region its own replica)."""

    def __init__(
        self,
        clients: ClientProvider,
        table: str,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Any = time.time,
        pause: Any = time.sleep,
    ) -> None:
        self.clients = clients
        self.table = table
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.pause = pause
        self.requests = 0  # BatchGetItem and BatchWriteItem calls made (for the benchmark)
        self.seconds = 0.0  # wall time spent in them

    def publish(self, region: str, entries: Iterable[tuple[str, str, str | None]]) -> int:
        """Write ``(table, version, parent)`` entries to ``region``'s replica; how many.

        Idempotent (a version's parent never changes), so a retried batch writes the
        same entries again. Raises if DynamoDB keeps some unprocessed.
        """
        expires = str(int(self.clock()) + self.ttl_seconds)
        items: dict[str, dict[str, Any]] = {}
        for table, version, parent in entries:
            pk = entry_key(table, version)
            item: dict[str, Any] = {"pk": {"S": pk}, TTL_ATTRIBUTE: {"N": expires}}
            if parent:
                item[PARENT_ATTR] = {"S": parent}
            items[pk] = item  # one put per key in a batch (DynamoDB refuses duplicates)
        puts = [{"PutRequest": {"Item": i}} for i in items.values()]
        client = self.clients.client("dynamodb", region)
        for start in range(0, len(puts), WRITE_LIMIT):
            request: dict[str, Any] = {self.table: puts[start : start + WRITE_LIMIT]}
            for _ in self._until_processed(
                client.batch_write_item,
                request,
                "UnprocessedItems",
                f"{region}/{self.table}: lineage writes",
            ):
                pass
        return len(puts)

    def _until_processed(
        self, call: Any, request: dict[str, Any], leftover: str, what: str
    ) -> Iterator[dict[str, Any]]:
        """Send a batch request, then what DynamoDB left unprocessed (``leftover``), with
        backoff; yield each response. Raises after ``_ROUNDS`` attempts."""
        for attempt in range(_ROUNDS):
            self.requests += 1
            t0 = time.perf_counter()
            out: dict[str, Any] = call(RequestItems=request)
            self.seconds += time.perf_counter() - t0
            yield out
            request = out.get(leftover) or {}
            if not request:
                return
            self.pause(min(0.05 * 2**attempt, 1.0))
        raise RuntimeError(f"{what} left unprocessed")

    def fetch(
        self, region: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], str | None]:
        """The entries of ``(table, version)`` found in ``region``'s replica: version →
        parent (None: replaced nothing). Versions without an entry are left out."""
        wanted = {entry_key(t, v): (t, v) for t, v in keys}
        found: dict[tuple[str, str], str | None] = {}
        client = self.clients.client("dynamodb", region)
        pks = list(wanted)
        for start in range(0, len(pks), GET_LIMIT):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [{"pk": {"S": pk}} for pk in pks[start : start + GET_LIMIT]],
                    "ConsistentRead": True,
                }
            }
            for out in self._until_processed(
                client.batch_get_item,
                request,
                "UnprocessedKeys",
                f"{region}/{self.table}: lineage reads",
            ):
                for item in out.get("Responses", {}).get(self.table, []):
                    pk = item["pk"]["S"]
                    if pk in wanted:
                        found[wanted[pk]] = (item.get(PARENT_ATTR) or {}).get("S")
        return found
