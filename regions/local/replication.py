"""The global-table replication emulator: DynamoDB MREC semantics on moto streams.

moto keeps each region's tables apart and replicates nothing. This module tails
every replica's stream and applies each change to the other replicas of the same
table, following what AWS documents for global tables version 2019.11.21 in
multi-region eventual consistency (MREC) mode:

* **asynchronous, per item.** Each change travels on its own over a link
  ``(table, source, destination)``, after that link's lag. Items are not kept in
  order across keys, as DynamoDB's partitions replicate independently.
* **last writer wins by write time**, on a private per-item timestamp (the source
  record's creation time; ties broken by region, then stream sequence), resolved
  identically in every region, so all replicas converge. Items carry no extra
  attributes, as in the current global-tables version.
* **replicated writes appear in the destination's stream**, and are recognised
  as the emulator's own (an expected-echo ledger), so they are never sent on
  again: no echo, no ping-pong.
* **deletes and transactions replicate per item**: moto writes one stream
  record per item of a transaction, and each travels alone.
* **faults lose nothing**: a paused or partitioned link, or a region that is
  down, keeps its backlog; when it resumes everything is applied.

The per-item rule, for each replica region ``R`` and key ``k``: the emulator
remembers the LWW winner ``W`` it believes ``R`` holds. Reading ``R``'s stream in
order, a record is either an expected echo of a change the emulator applied or a
local write ``L``. A local write newer than ``W`` becomes the winner and is queued
to every other replica; an apply to ``R`` happens only when the incoming version
is newer than ``W``. Whenever the image physically last written to ``R`` is not
the winner's and no echo of the winner is still due (a client write raced with a
replicated put), the emulator re-applies the winner. This is what makes
concurrent writes converge even when a local write and a replicated put
interleave.

Each change is written conditionally on what the replica is known to hold. How it
is written is an applier's job (:mod:`regions.local.appliers`): the local cluster
applies a batch inside the replica's own server, through moto's backend, as
DynamoDB applies replicated writes internally; the simulation sends each change as
a conditional client request. Both report the same outcomes.

There are two drivers over one engine:

* :class:`Replicator` runs background threads (a poller per region, an applier
  per destination) against moto servers: the live local cluster.
* :class:`ReplicationEngine` used directly is step-by-step and thread-free: the
  caller passes virtual time to :meth:`~ReplicationEngine.poll` and
  :meth:`~ReplicationEngine.deliver_due`. With a seeded RNG the whole history is
  reproducible, which the deterministic drill simulations rely on.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from regions.local.appliers import Applier, ClientApplier, Write
from residency.clients import ClientProvider
from residency.logs import get_logger
from residency.policy import GlobalDataClass, Policy

__all__ = [
    "Change",
    "LinkFaults",
    "LinkMetrics",
    "RecordListener",
    "ReplicationEngine",
    "Replicator",
    "Version",
]

log = get_logger("regionkit.replication")

Image = dict[str, Any] | None  # DynamoDB JSON of the item; None for a delete
KeyTuple = tuple[tuple[str, str], ...]


class RecordListener(Protocol):
    """Called for every stream record of every replica, echoes included.

    This is the feed a stream consumer in each region sees (the conflict
    detector subscribes to it in the local cluster).
    """

    def __call__(self, region: str, table: str, record: dict[str, Any]) -> None: ...


@dataclass(frozen=True, order=True, slots=True)
class Version:
    """The private per-item write time DynamoDB resolves conflicts with."""

    ts: float  # seconds since the epoch (creation time of the source record)
    origin: str  # region of the write; breaks ties
    seq: int  # stream sequence in the origin; orders writes within one ms


@dataclass(slots=True)
class Change:
    table: str
    key: KeyTuple
    keys: dict[str, Any]
    image: Image
    version: Version
    digest: str
    deliver_at: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class LinkMetrics:
    table: str
    src: str
    dst: str
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_last_ms: float | None
    pending: int
    applied: int
    skipped: int
    paused: bool
    failed: int = 0
    injected_lag_ms: float = 0.0  # the lag fault on the link (0: none)


# a change claimed for a replica: its link, the change, the winner before it, what it goes over
_Claimed = tuple["_Link | None", Change, tuple["Version | None", "Change | None"], Any]


@dataclass(slots=True)
class _Link:
    table: str
    src: str
    dst: str
    queue: list[tuple[float, int, Change]] = field(default_factory=list)  # (deliver_at, n, c)
    lags_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    applied: int = 0
    skipped: int = 0
    failed: int = 0
    lag_s: float = 0.0
    jitter_s: float = 0.0
    jitter_kind: Literal["uniform", "exponential"] = "uniform"
    last_at: dict[KeyTuple, float] = field(default_factory=dict)


def _json_default(o: Any) -> Any:
    """Stream images hold bytes (B, BS) and, through the resource API, Decimals and sets."""
    if isinstance(o, (bytes, bytearray)):
        return {"$b64": base64.b64encode(bytes(o)).decode()}
    if isinstance(o, (set, frozenset)):
        return sorted(json.dumps(x, sort_keys=True, default=_json_default) for x in o)
    return str(o)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _key_tuple(keys: dict[str, Any]) -> KeyTuple:
    return tuple(sorted((k, _canonical(v)) for k, v in keys.items()))


def _digest(image: Image) -> str:
    if image is None:
        return "-"
    return hashlib.blake2b(_canonical(image).encode(), digest_size=12).hexdigest()


CHAIN_LIMIT = 32
"""Versions of one item one link applies in one round (threaded emulator only)."""
APPLY_WORKERS = 4
"""Replicated changes applied to one replica at once (distinct items; see
``ReplicationEngine.apply_workers``). A region back from an outage drains its
backlog this many requests at a time (``benchmarks/bench_replication.py``)."""
MAX_POLL_ATTEMPTS = 20  # a stream record that cannot be read in is retried this often
MAX_APPLY_ATTEMPTS = 20  # a change DynamoDB refuses (not a lost condition, not a fault)
DOUBT_TTL_S = 300.0  # how long a change whose write timed out may still show up applied
_FAULTS = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
)


def _is_fault(exc: Exception) -> bool:
    """A region that does not answer (kept and retried without limit), not a refusal."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return code in ("ThrottlingException", "ProvisionedThroughputExceededException") or (
            code.startswith("5") or code in ("InternalServerError", "ServiceUnavailable")
        )
    return type(exc).__name__ in _FAULTS or isinstance(exc, (ConnectionError, OSError))


def _condition(keys: dict[str, Any], held: Image) -> dict[str, Any]:
    """Conditions that make a replicated put apply only over what the replica is known to
    hold (DynamoDB compares its private timestamps atomically; an apply over a write the
    emulator has not read yet must not happen)."""
    if held is None:
        return {
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": sorted(keys)[0]},
        }
    version = held.get("rk_v")
    if version is not None:
        return {
            "ConditionExpression": "#v = :v",
            "ExpressionAttributeNames": {"#v": "rk_v"},
            "ExpressionAttributeValues": {":v": version},
        }
    scalars = [k for k, v in sorted(held.items()) if isinstance(v, dict) and set(v) <= {"S", "N"}]
    if not scalars:
        return {}
    return {
        "ConditionExpression": " AND ".join(f"#a{i} = :a{i}" for i in range(len(scalars))),
        "ExpressionAttributeNames": {f"#a{i}": k for i, k in enumerate(scalars)},
        "ExpressionAttributeValues": {f":a{i}": held[k] for i, k in enumerate(scalars)},
    }


def _error_text(exc: Exception) -> str:
    """An apply error for the engine's lists, which ``local status`` prints: a refusal by
    its code only (DynamoDB's message may quote an attribute value)."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"{type(exc).__name__}({code})" if code else repr(exc)


def _count_applied(ln: _Link, change: Change, now: float) -> None:
    ln.applied += 1
    ln.lags_ms.append(max(0.0, (now - change.version.ts) * 1000))


def _unexpired(entries: list[tuple[Change, float]], now: float) -> list[tuple[Change, float]]:
    return [e for e in entries if e[1] > now]


def _pct(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    return data[min(len(data) - 1, int(q * len(data)))]


class LinkFaults:
    """Fault injection on replication links: lag, pause, partition, heal.

    A pause matches the FIS action ``aws:dynamodb:global-table-pause-replication``:
    changes keep accumulating and are all applied, in LWW order, on resume.
    """

    def __init__(self, engine: ReplicationEngine) -> None:
        self._engine = engine

    def _links(self, src: str | None, dst: str | None) -> list[_Link]:
        return [
            ln
            for ln in self._engine._links.values()
            if (src is None or ln.src == src) and (dst is None or ln.dst == dst)
        ]

    def set_lag(
        self,
        src: str | None = None,
        dst: str | None = None,
        seconds: float | None = None,
        *,
        jitter: float = 0.0,
        distribution: Literal["uniform", "exponential"] = "uniform",
    ) -> None:
        """Fixed lag plus jitter (uniform in [0, jitter], or exponential with mean jitter)."""
        with self._engine._lock:
            for ln in self._links(src, dst):
                ln.lag_s = seconds or 0.0
                ln.jitter_s = jitter
                ln.jitter_kind = distribution

    def pause(self, src: str | None = None, dst: str | None = None) -> None:
        self._engine._add_block(src, dst, "pause")

    def resume(self, src: str | None = None, dst: str | None = None) -> None:
        self._engine._remove_block(src, dst, "pause")

    def partition(self, groups: list[list[str]]) -> None:
        """Cut every link between regions of different groups."""
        owner = {r: i for i, g in enumerate(groups) for r in g}
        with self._engine._lock:
            for ln in self._engine._links.values():
                if ln.src in owner and ln.dst in owner and owner[ln.src] != owner[ln.dst]:
                    self._engine._blocks[(ln.src, ln.dst)].add("partition")
            self._engine._wake()

    def heal(self) -> None:
        """Clear lag, pauses and partitions (not region outages)."""
        with self._engine._lock:
            for pair in list(self._engine._blocks):
                self._engine._blocks[pair] -= {"pause", "partition"}
            for ln in self._engine._links.values():
                ln.lag_s, ln.jitter_s = 0.0, 0.0
            self._engine._wake()

    def blocked(self, src: str, dst: str) -> bool:
        return bool(self._engine._blocks.get((src, dst)))


class ReplicationEngine:
    """The thread-safe, clock-free core: stream records in, puts and deletes out."""

    def __init__(
        self,
        policy: Policy,
        clients: ClientProvider,
        *,
        table_prefix: str = "",
        rng: random.Random | None = None,
        time_source: Literal["record", "poll"] = "record",
        listeners: Iterable[RecordListener] = (),
        apply_workers: int = 1,
        applier: Applier | None = None,
    ) -> None:
        self.policy = policy
        # Requests in flight at once when a batch is applied to one replica. A batch
        # holds one change per item, and items are independent, so only the order
        # within an item matters (kept: an item's next change waits for the next
        # batch). 1 keeps the simulation's history a function of its seed.
        self.apply_workers = max(1, apply_workers)
        self.applier: Applier = applier or ClientApplier(clients, workers=self.apply_workers)
        # With several workers (the threaded emulator), a link's due versions of one
        # item go in one batch and are applied in order, each conditional on the one
        # before: a hot item no longer drains one version per apply round. The
        # simulation keeps one version per item per round (each polled in between).
        self.chain_limit = CHAIN_LIMIT if self.apply_workers > 1 else 1
        self.clients = clients
        self.prefix = table_prefix
        self.rng = rng or random.Random(0)
        self.time_source = time_source
        self.listeners: list[RecordListener] = list(listeners)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        # Replication groups, as the policy places tables: a global table is one
        # group; a pinned table is one group per multi-region jurisdiction, so it
        # never replicates across a border.
        self.groups: list[tuple[str, tuple[str, ...]]] = []
        for dc in policy.data_classes.values():
            if isinstance(dc, GlobalDataClass):
                self.groups.append((self.prefix + dc.table, tuple(dc.replicas)))
            else:
                self.groups.extend(
                    (self.prefix + dc.table, tuple(j.regions))
                    for j in policy.jurisdictions.values()
                    if len(j.regions) > 1
                )
        self.groups.append((self.prefix + policy.system.conflict_log_table, tuple(policy.regions)))
        lineage = policy.lineage_regions()
        if lineage:  # per-region detectors' shared parents (regions.lineage)
            self.groups.append((self.prefix + policy.system.lineage_table, tuple(lineage)))
        self._links: dict[tuple[str, str, str], _Link] = {}
        for table, regions in self.groups:
            for src in regions:
                for dst in regions:
                    if src != dst:
                        self._links[(table, src, dst)] = _Link(table, src, dst)
        self._blocks: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._down: set[str] = set()
        self._winner: dict[tuple[str, str, KeyTuple], Version] = {}
        self._winner_change: dict[tuple[str, str, KeyTuple], Change] = {}
        self._echoes: dict[tuple[str, str, KeyTuple], deque[tuple[str, Version]]] = {}
        self._repairs: list[tuple[str, Change]] = []
        # Changes whose write failed as a fault (a timeout, a dropped connection): the
        # replica may still have applied them. A record of one that shows up later is
        # that change arriving late, not a new local write (which would be sent on with
        # a fresh, later write time). Kept for DOUBT_TTL_S; never counted as pending.
        self._doubt: dict[tuple[str, str, KeyTuple], list[tuple[Change, float]]] = {}
        self._iterators: dict[tuple[str, str], list[str]] = {}
        self._shards: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (arn, shard id)
        # What each replica holds as far as its own stream has told us (the image of
        # its latest record): replicated puts apply only over it.
        self._held: dict[tuple[str, str, KeyTuple], Image] = {}
        self._poll_attempts: dict[tuple[str, str, str], int] = {}
        self._repoll: set[tuple[str, str]] = set()  # streams to read again (a record failed)
        # the last sequence number taken in, per (region, table, shard index)
        self._last_seq: dict[tuple[str, str, int], int] = {}
        self.redelivered = 0  # records read again and skipped (see _fresh)
        self.failed: deque[str] = deque(maxlen=1000)  # changes given up on, never silently
        self.failed_count = 0
        self._poll_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        # Optional: (region, table) -> "may have new records?". The simulation tracks
        # writes and skips reading streams that cannot have changed.
        self.should_poll: Callable[[str, str], bool] | None = None
        self._n = 0
        self.faults = LinkFaults(self)
        self.errors: deque[str] = deque(maxlen=100)

    # --- topology ---

    def tables_in(self, region: str) -> list[str]:
        """Tables with a replica in ``region`` that take part in replication."""
        return sorted({t for t, regions in self.groups if region in regions})

    def peers(self, table: str, region: str) -> list[str]:
        for t, regions in self.groups:
            if t == table and region in regions:
                return [r for r in regions if r != region]
        return []

    # --- faults bookkeeping ---

    def _add_block(self, src: str | None, dst: str | None, reason: str) -> None:
        with self._lock:
            for ln in self._links.values():
                if (src is None or ln.src == src) and (dst is None or ln.dst == dst):
                    self._blocks[(ln.src, ln.dst)].add(reason)

    def _remove_block(self, src: str | None, dst: str | None, reason: str) -> None:
        with self._lock:
            for pair, reasons in self._blocks.items():
                if (src is None or pair[0] == src) and (dst is None or pair[1] == dst):
                    reasons.discard(reason)
            self._wake()

    def region_down(self, region: str) -> None:
        """Stop reading from and writing to ``region``; its links keep their backlog."""
        self._add_block(region, None, f"down:{region}")
        self._add_block(None, region, f"down:{region}")
        with self._lock:
            self._down.add(region)

    def region_up(self, region: str) -> None:
        with self._lock:
            self._down.discard(region)
        self._remove_block(region, None, f"down:{region}")
        self._remove_block(None, region, f"down:{region}")

    def is_down(self, region: str) -> bool:
        with self._lock:
            return region in self._down

    def _wake(self) -> None:
        self._changed.notify_all()

    # --- reading streams ---

    def _iterator_list(self, region: str, table: str) -> list[str]:
        key = (region, table)
        its = self._iterators.get(key)
        if its is None:
            ddb = self.clients.client("dynamodb", region)
            streams = self.clients.client("dynamodbstreams", region)
            arn = ddb.describe_table(TableName=table)["Table"].get("LatestStreamArn")
            if not arn:
                its = []
                self._shards[key] = []
            else:
                shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
                its = [
                    streams.get_shard_iterator(
                        StreamArn=arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
                    )["ShardIterator"]
                    for s in shards
                ]
                self._shards[key] = [(arn, s["ShardId"]) for s in shards]
            self._iterators[key] = its
        return its

    def poll(
        self, region: str, table: str | None = None, *, now: float | None = None, limit: int = 1000
    ) -> int:
        """Read new records of ``region``'s streams and queue what must replicate.

        Returns the number of records read. Raises the client's error if the
        region cannot be reached (the caller decides how to back off).
        """
        if self.is_down(region):
            return 0
        with self._poll_locks[region]:
            return self._poll_locked(region, table, now, limit)

    def _poll_locked(self, region: str, table: str | None, now: float | None, limit: int) -> int:
        count = 0
        for t in [table] if table else self.tables_in(region):
            if (
                self.should_poll is not None
                and not self.should_poll(region, t)
                and (region, t) not in self._repoll
            ):
                continue
            self._repoll.discard((region, t))
            its = self._iterator_list(region, t)
            streams = self.clients.client("dynamodbstreams", region)
            for i, it in enumerate(its):
                if not it:
                    continue
                try:
                    resp = streams.get_records(ShardIterator=it, Limit=limit)
                except Exception:
                    self._repoll.add((region, t))  # whatever says it has nothing new
                    raise
                if "Records" not in resp:
                    self._repoll.add((region, t))
                    # A body cut short (a connection closed mid-response): Streams answers
                    # carry no checksum, and botocore reads the empty body as "{}". Taken
                    # as an answer, it lost the shard's iterator, and the stream, for good.
                    raise ConnectionError(f"GetRecords in {region}: answer cut short")
                records = self._fresh((region, t, i), resp["Records"])
                stopped_at = self._ingest_all((region, t, i), records, now)
                if stopped_at is None:
                    its[i] = resp.get("NextShardIterator") or ""
                    count += len(records)
                else:
                    # Never advance past a change that was not taken in: read again from it.
                    self._repoll.add((region, t))
                    arn, shard = self._shards[(region, t)][i]
                    seq = records[stopped_at]["dynamodb"]["SequenceNumber"]
                    its[i] = streams.get_shard_iterator(
                        StreamArn=arn,
                        ShardId=shard,
                        ShardIteratorType="AT_SEQUENCE_NUMBER",
                        SequenceNumber=seq,
                    )["ShardIterator"]
                    count += stopped_at
        return count

    def _fresh(
        self, shard: tuple[str, str, int], records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The records not taken in before: a stream is read at least once, not exactly
        once (a re-read after a failure, a Lambda retry; a moto without
        :mod:`regions.local.atomic` hands out a number twice and then re-sends its last
        record on every read). A re-delivered record is no new write: taken for one, it
        would be sent round the regions again, for ever. Sequence numbers only grow
        within a shard, so the last one taken in is the mark."""
        last = self._last_seq.get(shard)
        if last is None or not records:
            return records
        fresh = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) > last]
        if len(fresh) < len(records):
            with self._lock:
                self.redelivered += len(records) - len(fresh)
        return fresh

    def _ingest_all(
        self, shard: tuple[str, str, int], records: list[dict[str, Any]], now: float | None
    ) -> int | None:
        """Take records in, in order; the index of the first that failed (to be read
        again), or None. A record that fails MAX_POLL_ATTEMPTS times is counted as failed."""
        region, table, _ = shard
        for n, rec in enumerate(records):
            seq = str(rec["dynamodb"]["SequenceNumber"])
            try:
                self._ingest(region, table, rec, now)
                self._last_seq[shard] = int(seq)
            except Exception as exc:
                slot = (region, table, seq)
                with self._lock:
                    self._poll_attempts[slot] = self._poll_attempts.get(slot, 0) + 1
                    attempts = self._poll_attempts[slot]
                    self.errors.append(f"stream record {seq} of {region}/{table}: {exc!r}")
                    if attempts < MAX_POLL_ATTEMPTS:
                        log.warning(
                            "stream record not taken in; read again",
                            region=region,
                            table=table,
                            error=type(exc).__name__,
                        )
                        return n
                    self._poll_attempts.pop(slot, None)
                    self._last_seq[shard] = int(seq)
                    self.failed_count += 1
                    self.failed.append(f"stream record {seq} of {region}/{table}: {exc!r}")
                log.error(
                    "stream record given up on",
                    region=region,
                    table=table,
                    error=type(exc).__name__,
                )
        return None

    def _record_time(self, rec: dict[str, Any], now: float | None) -> float:
        if self.time_source == "poll" and now is not None:
            return now
        created = rec["dynamodb"].get("ApproximateCreationDateTime")
        if hasattr(created, "timestamp"):
            return float(created.timestamp())
        if isinstance(created, (int, float)):
            return float(created)
        return time.time() if now is None else now

    def _ingest(self, region: str, table: str, rec: dict[str, Any], now: float | None) -> None:
        for listener in self.listeners:
            try:
                listener(region, table, rec)
            except Exception as exc:  # a listener bug must not stop replication; record it
                self.errors.append(f"listener failed on {region}/{table}: {exc!r}")
                log.error("stream listener failed", region=region, table=table, error=repr(exc))
        body = rec["dynamodb"]
        keys = body["Keys"]
        key = _key_tuple(keys)
        image = body.get("NewImage") if rec["eventName"] != "REMOVE" else None
        digest = _digest(image)
        slot = (region, table, key)
        with self._lock:
            self._held[slot] = image
            expected = self._echoes.get(slot)
            if expected and any(d == digest for d, _ in expected):
                for i, (d, _version) in enumerate(expected):
                    if d == digest:
                        del expected[i]
                        break
                if not expected:
                    del self._echoes[slot]
                self._reconcile(region, table, key, physical_digest=digest)
                return
            late = self._late_arrival(slot, digest, time.time() if now is None else now)
            if late is not None:  # a write of ours that timed out, applied after all
                current = self._winner.get(slot)
                if current is None or late.version > current:
                    self._winner[slot] = late.version
                    self._winner_change[slot] = late
                self._reconcile(region, table, key, physical_digest=digest)
                return
            seq = int(body.get("SequenceNumber", "0"))
            current = self._winner.get(slot)
            ts = self._record_time(rec, now)
            if current is not None and not self._echoes.get(slot) and ts <= current.ts:
                # Written after everything this replica holds (no put of ours is in
                # flight): its write time is later, even within one clock tick.
                ts = current.ts + 1e-6
            version = Version(ts, region, seq)
            change = Change(table, key, keys, image, version, digest)
            if current is None or version > current:
                self._winner[slot] = version
                self._winner_change[slot] = change
                for dst in self.peers(table, region):
                    self._enqueue(self._links[(table, region, dst)], change, now)
                self._wake()
            else:
                # A local write landed before a replicated put of a newer version
                # reached it: the region must end on the winner again.
                self._reconcile(region, table, key, physical_digest=digest)

    def _reconcile(self, region: str, table: str, key: KeyTuple, *, physical_digest: str) -> None:
        slot = (region, table, key)
        winner = self._winner_change.get(slot)
        if winner is None or winner.digest == physical_digest:
            return
        if any(d == winner.digest for d, _ in self._echoes.get(slot, ())):
            return  # the winner's own put is still on its way through the stream
        repair = Change(
            winner.table, winner.key, winner.keys, winner.image, winner.version, winner.digest, 0.0
        )
        self._repairs.append((region, repair))
        self._wake()

    def _enqueue(self, link: _Link, change: Change, now: float | None) -> None:
        delay = link.lag_s
        if link.jitter_s:
            delay += (
                self.rng.uniform(0, link.jitter_s)
                if link.jitter_kind == "uniform"
                else self.rng.expovariate(1 / link.jitter_s)
            )
        base = now if now is not None else time.time()
        # One item replicates in order on a link (it lives in one partition), so a
        # change never overtakes an earlier change of the same key.
        at = max(base + delay, link.last_at.get(change.key, 0.0))
        link.last_at[change.key] = at
        self._n += 1
        bisect.insort(link.queue, (at, self._n, change), key=lambda e: (e[0], e[1]))

    # --- applying ---

    def has_due(self, dst: str, now: float) -> bool:
        return bool(self.due_tables(dst, now))

    def due_tables(self, dst: str, now: float) -> set[str]:
        """The tables with changes due for ``dst`` (a look: nothing is taken off a link)."""
        with self._lock:
            if dst in self._down:
                return set()
            tables = {c.table for region, c in self._repairs if region == dst}
            tables.update(
                ln.table
                for ln in self._links.values()
                if ln.dst == dst
                and ln.queue
                and ln.queue[0][0] <= now
                and not self._blocks.get((ln.src, ln.dst))
            )
            return tables

    def due(self, dst: str, now: float) -> list[tuple[_Link | None, Change]]:
        """Pop the changes due for ``dst``: repairs first, then each link's, in order.

        At most ``chain_limit`` changes per item are taken per call, all from one link
        and in its order (1 in the simulation: every version is applied, and streamed,
        in its own round).
        """
        out: list[tuple[_Link | None, Change]] = []
        taken: dict[tuple[str, KeyTuple], tuple[_Link | None, int]] = {}
        with self._lock:
            if dst in self._down:
                return out
            keep: list[tuple[str, Change]] = []
            for region, c in self._repairs:
                if region == dst and (c.table, c.key) not in taken:
                    taken[(c.table, c.key)] = (None, 1)
                    out.append((None, c))
                else:
                    keep.append((region, c))
            self._repairs = keep
            for ln in self._links.values():
                if ln.dst != dst or self._blocks.get((ln.src, ln.dst)):
                    continue
                rest: list[tuple[float, int, Change]] = []
                i = 0
                while i < len(ln.queue) and ln.queue[i][0] <= now:
                    entry = ln.queue[i]
                    k = (entry[2].table, entry[2].key)
                    by, n = taken.get(k, (ln, 0))
                    if by is ln and n < self.chain_limit:
                        taken[k] = (ln, n + 1)
                        out.append((ln, entry[2]))
                    else:
                        rest.append(entry)
                    i += 1
                ln.queue[:i] = rest
        return out

    def _claim(self, dst: str, ln: _Link | None, change: Change, now: float) -> bool:
        """Decide under the lock whether ``change`` overwrites ``dst``; if so register its echo."""
        slot = (dst, change.table, change.key)
        current = self._winner.get(slot)
        is_repair = current == change.version and self._winner_change[slot].digest == change.digest
        if not is_repair and current is not None and current >= change.version:
            if ln is not None:
                ln.skipped += 1
            return False
        if is_repair and ln is not None and _digest(self._held.get(slot)) == change.digest:
            _count_applied(ln, change, now)  # a change that arrived late: already there
            return False
        if not is_repair:
            self._winner[slot] = change.version
            self._winner_change[slot] = change
            if ln is not None:
                _count_applied(ln, change, now)
        self._echoes.setdefault(slot, deque()).append((change.digest, change.version))
        return True

    def _unclaim(
        self,
        dst: str,
        change: Change,
        previous: tuple[Version | None, Change | None],
        ln: _Link | None,
    ) -> None:
        slot = (dst, change.table, change.key)
        if self._winner.get(slot) == change.version:
            if previous[0] is None:
                self._winner.pop(slot, None)
                self._winner_change.pop(slot, None)
            else:
                self._winner[slot] = previous[0]
                assert previous[1] is not None
                self._winner_change[slot] = previous[1]
            if ln is not None:
                ln.applied -= 1
        self._forget_echo(slot, change)

    def _forget_echo(self, slot: tuple[str, str, KeyTuple], change: Change) -> None:
        echoes = self._echoes.get(slot)
        if echoes:
            for i, (d, v) in enumerate(echoes):
                if d == change.digest and v == change.version:
                    del echoes[i]
                    break
            if not echoes:
                del self._echoes[slot]

    def apply(
        self, dst: str, batch: list[tuple[_Link | None, Change]], *, now: float | None = None
    ) -> int:
        """Write ``batch`` to ``dst``, each change conditionally on what ``dst`` is known to
        hold; a lost condition (a write ``dst`` took that its stream has not shown yet) or
        a failed write goes back on its link: nothing is lost, nothing older is applied
        over a newer write. The versions of one item go in order, each over the one
        before (a failed one takes the rest back); the applier writes them
        (:mod:`regions.local.appliers`)."""
        now_ = time.time() if now is None else now
        claimed = self._claim_batch(dst, batch, now_)
        if not claimed:
            return 0
        items: dict[tuple[str, KeyTuple], list[_Claimed]] = {}
        for e in claimed:
            items.setdefault((e[1].table, e[1].key), []).append(e)
        groups = list(items.values())
        writes = [
            [Write(c.table, c.keys, c.image, _condition(c.keys, held)) for _, c, _, held in g]
            for g in groups
        ]
        try:
            outcomes = self.applier.apply(dst, writes)
        except Exception as err:  # claimed changes are never dropped: all go back
            outcomes = [(0, err)] * len(groups)
        written = 0
        for entries, (n, exc) in zip(groups, outcomes, strict=True):
            for _ln, change, _prev, held in entries[:n]:
                if change.image is None and held is None:
                    # nothing was there to delete: DynamoDB streams no record of it
                    with self._lock:
                        self._forget_echo((dst, change.table, change.key), change)
            if n < len(entries):
                self._requeue(dst, [(x[0], x[1], x[2]) for x in entries[n:]], now_, exc)
            written += n
        return written

    def _claim_batch(
        self, dst: str, batch: list[tuple[_Link | None, Change]], now: float
    ) -> list[_Claimed]:
        claimed: list[_Claimed] = []
        with self._lock:
            written_before: dict[tuple[str, str, KeyTuple], Image] = {}
            for ln, change in batch:
                slot = (dst, change.table, change.key)
                prev = (self._winner.get(slot), self._winner_change.get(slot))
                # a version after another of the same item in this batch goes over it
                held = written_before[slot] if slot in written_before else self._held.get(slot)
                if self._claim(dst, ln, change, now):
                    claimed.append((ln, change, prev, held))
                    written_before[slot] = change.image
        return claimed

    def close(self) -> None:
        """Stop the applier (a batch being applied finishes first)."""
        self.applier.close()

    def _hold_in_doubt(self, dst: str, changes: list[Change], now: float) -> None:
        if len(self._doubt) > 10_000:
            self._doubt = {
                slot: kept
                for slot, entries in self._doubt.items()
                if (kept := _unexpired(entries, now))
            }
        for change in changes:
            self._doubt.setdefault((dst, change.table, change.key), []).append(
                (change, now + DOUBT_TTL_S)
            )

    def _late_arrival(
        self, slot: tuple[str, str, KeyTuple], digest: str, now: float
    ) -> Change | None:
        """The change in doubt whose image ``digest`` is, if any (taken off the ledger)."""
        entries = self._doubt.get(slot)
        if not entries:
            return None
        kept = _unexpired(entries, now)
        found = next((c for c, _ in kept if c.digest == digest), None)
        if found is not None:
            kept = [e for e in kept if e[0] is not found]
        if kept:
            self._doubt[slot] = kept
        else:
            del self._doubt[slot]
        return found

    def _requeue(
        self,
        dst: str,
        chunk: list[tuple[_Link | None, Change, Any]],
        now: float,
        exc: Exception | None,
    ) -> None:
        with self._lock:
            if exc is not None and _is_fault(exc):
                self._hold_in_doubt(dst, [c for _, c, _ in chunk], now)
            for ln, change, prev in reversed(chunk):  # newest first: each restores the one before
                self._unclaim(dst, change, prev, ln)
            for ln, change, _prev in chunk:
                if exc is not None and not _is_fault(exc):
                    change.attempts += 1
                    if change.attempts >= MAX_APPLY_ATTEMPTS:
                        self.failed_count += 1
                        self.failed.append(f"apply to {dst}/{change.table}: {_error_text(exc)}")
                        if ln is not None:
                            ln.failed += 1
                        log.error(
                            "replication change given up on",
                            region=dst,
                            table=change.table,
                            error=type(exc).__name__,
                        )
                        continue
                if ln is None:
                    self._repairs.append((dst, change))
                    continue
                self._n += 1
                bisect.insort(ln.queue, (now + 0.05, self._n, change), key=lambda e: (e[0], e[1]))
            if exc is not None:
                self.errors.append(f"apply to {dst} failed: {_error_text(exc)}")
                log.warning(
                    "replication apply failed; will retry", region=dst, error=type(exc).__name__
                )

    def deliver_due(self, now: float, dst: str | None = None) -> int:
        """Step mode: apply every change due by ``now`` (to ``dst`` or to all regions)."""
        written = 0
        for region in [dst] if dst else sorted({ln.dst for ln in self._links.values()}):
            if not self.has_due(region, now):
                continue
            # Read the destination's own writes first, as a replica compares
            # timestamps atomically: an older change must not land on a newer write.
            self.poll(region, now=now)
            batch = self.due(region, now)
            if batch:
                written += self.apply(region, batch, now=now)
        return written

    # --- observation ---

    def pending(self) -> int:
        with self._lock:
            return sum(len(ln.queue) for ln in self._links.values()) + len(self._repairs)

    def unreplicated_ages(self, region: str, now: float) -> list[float]:
        """Ages (s) of writes made in ``region`` that some replica has not received yet.

        This is the RPO exposure if ``region`` were lost now.
        """
        with self._lock:
            ages: dict[tuple[str, KeyTuple, Version], float] = {}
            for ln in self._links.values():
                if ln.src == region:
                    for _, _, c in ln.queue:
                        ages[(c.table, c.key, c.version)] = max(0.0, now - c.version.ts)
            return sorted(ages.values())

    def rereads_pending(self) -> int:
        """Streams with a record that failed to be taken in and will be read again."""
        with self._lock:
            return len(self._repoll)

    def echoes_pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._echoes.values())

    def next_due(self) -> float | None:
        with self._lock:
            times = [
                ln.queue[0][0]
                for ln in self._links.values()
                if ln.queue and not self._blocks.get((ln.src, ln.dst))
            ]
            if self._repairs:
                times.append(0.0)
            return min(times) if times else None

    def metrics(self) -> list[LinkMetrics]:
        with self._lock:
            return [
                LinkMetrics(
                    table=ln.table,
                    src=ln.src,
                    dst=ln.dst,
                    lag_p50_ms=_pct(ln.lags_ms, 0.50),
                    lag_p99_ms=_pct(ln.lags_ms, 0.99),
                    lag_last_ms=ln.lags_ms[-1] if ln.lags_ms else None,
                    pending=len(ln.queue),
                    applied=ln.applied,
                    skipped=ln.skipped,
                    paused=bool(self._blocks.get((ln.src, ln.dst))),
                    failed=ln.failed,
                    injected_lag_ms=(ln.lag_s + ln.jitter_s) * 1000.0,
                )
                for ln in sorted(self._links.values(), key=lambda x: (x.table, x.src, x.dst))
            ]

    def lag_samples_ms(self) -> list[float]:
        with self._lock:
            return [v for ln in self._links.values() for v in ln.lags_ms]


class Replicator:
    """The live emulator: background threads over a :class:`ReplicationEngine`.

    One poller thread per region reads that region's streams (backing off while
    the region does not answer); one applier thread per region writes the changes
    due for it, in batches.
    """

    def __init__(
        self,
        policy: Policy,
        clients: ClientProvider,
        *,
        table_prefix: str = "",
        listeners: Iterable[RecordListener] = (),
        poll_interval: float = 0.01,
        max_idle_interval: float = 0.05,
        deep_idle_interval: float = 0.5,
        deep_idle_after: float = 2.0,
        clock: Callable[[], float] = time.time,
        apply_workers: int = APPLY_WORKERS,
        applier: Applier | None = None,
    ) -> None:
        self.engine = ReplicationEngine(
            policy,
            clients,
            table_prefix=table_prefix,
            listeners=listeners,
            apply_workers=apply_workers,
            applier=applier,
        )
        self.faults = self.engine.faults
        self.clock = clock
        self.poll_interval = poll_interval
        self.max_idle_interval = max_idle_interval
        # A table with nothing for deep_idle_after seconds is read every
        # deep_idle_interval only: an idle cluster read each of its tables 20 times a
        # second, which cost 0.7 of a core (about 2.4 ms of client and server CPU per
        # empty GetRecords). A waiter (wait_converged) wakes every poller at once.
        self.deep_idle_interval = max(deep_idle_interval, max_idle_interval)
        self.deep_idle_after = deep_idle_after
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._idle: dict[str, bool] = {}
        # When the last poll of each region that read everything it found had started
        # (monotonic): wait_converged needs one that started after it was called.
        self._caught_up: dict[str, float] = {}
        regions = sorted({r for _, rs in self.engine.groups for r in rs})
        self.regions = [r for r in regions if self.engine.tables_in(r)]
        self._wake_polls = {r: threading.Event() for r in self.regions}

    def start(self) -> None:
        for region in self.regions:
            self._idle[region] = False
            for target, name in ((self._poll_loop, "poll"), (self._apply_loop, "apply")):
                t = threading.Thread(
                    target=target,
                    args=(region,),
                    daemon=True,
                    name=f"regionkit-repl-{name}-{region}",
                )
                t.start()
                self._threads.append(t)

    def nudge(self) -> None:
        """Have every poller read each of its tables now, however long they were quiet."""
        for wake in self._wake_polls.values():
            wake.set()

    def stop(self) -> None:
        self._stop.set()
        self.nudge()
        with self.engine._lock:
            self.engine._wake()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self.engine.close()

    def __enter__(self) -> Replicator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _poll_loop(self, region: str) -> None:
        """Read ``region``'s streams, each table at its own pace: a table that had records
        is read again at once, a quiet one less and less often (up to
        ``max_idle_interval``, then ``deep_idle_interval`` once it has been quiet for
        ``deep_idle_after``). One busy table no longer makes every quiet table of the
        region be read on every round (most of the emulator's CPU, and of the lag).
        :meth:`nudge` makes every table due at once.

        The region is caught up (for :meth:`wait_converged`) as of the earliest start
        among its tables' latest reads, when every one of them found nothing."""
        tables = self.engine.tables_in(region)
        wake = self._wake_polls[region]
        delay = dict.fromkeys(tables, self.poll_interval)
        next_at = dict.fromkeys(tables, 0.0)
        found_at = dict.fromkeys(tables, time.monotonic())  # the latest read with records
        # when the latest read of each table started, if it found nothing; else -1
        empty_since = dict.fromkeys(tables, -1.0)
        backoff = self.poll_interval
        while not self._stop.is_set():
            if wake.is_set():
                wake.clear()
                for table in tables:
                    delay[table], next_at[table] = self.poll_interval, 0.0
            read = 0
            try:
                for table in tables:
                    started = time.monotonic()
                    if next_at[table] > started:
                        continue
                    n = self.engine.poll(region, table, now=self.clock())
                    read += n
                    if n:  # read it again at once
                        delay[table], next_at[table], empty_since[table] = (
                            self.poll_interval,
                            0.0,
                            -1.0,
                        )
                        found_at[table] = started
                    else:
                        deep = started - found_at[table] >= self.deep_idle_after
                        cap = self.deep_idle_interval if deep else self.max_idle_interval
                        delay[table] = min(cap, delay[table] * 1.5)
                        next_at[table], empty_since[table] = started + delay[table], started
            except Exception as exc:  # region unreachable: keep trying, keep state
                self.engine.errors.append(f"poll {region} failed: {exc!r}")
                self._idle[region] = False
                backoff = min(1.0, backoff * 2)
                wake.wait(backoff)
                continue
            backoff = self.poll_interval
            caught_up = min(empty_since.values(), default=time.monotonic())
            self._idle[region] = read == 0 and caught_up >= 0
            if self._idle[region]:
                self._caught_up[region] = caught_up
            if read == 0:
                wait = min(next_at.values(), default=0.0) - time.monotonic()
                wake.wait(min(self.deep_idle_interval, max(wait, 0.001)))

    def _apply_loop(self, region: str) -> None:
        engine = self.engine
        while not self._stop.is_set():
            now = self.clock()
            # See the destination's own writes first (see deliver_due), in the tables with
            # changes due only: most of a region's tables are quiet, and reading every one
            # before every batch was most of the lag. Read before the changes are taken
            # off their links: a change taken is counted nowhere until it is claimed, and
            # wait_converged must never see a quiet engine with a batch in hand.
            for table in sorted(engine.due_tables(region, now)):
                try:
                    engine.poll(region, table, now=now)
                except Exception as exc:  # unreachable: the apply below fails and requeues
                    engine.errors.append(f"poll before apply {region}: {exc!r}")
            batch = engine.due(region, now)
            if batch:
                try:
                    engine.apply(region, batch, now=now)
                except Exception as exc:  # never die silently: keep the error, go on
                    engine.errors.append(f"apply loop {region}: {exc!r}")
                continue
            with engine._lock:
                nxt = engine.next_due()
                timeout = 0.05 if nxt is None else max(0.0, min(0.05, nxt - self.clock()))
                if timeout > 0:
                    engine._changed.wait(timeout)

    # the interface LocalCluster uses

    def metrics(self) -> list[LinkMetrics]:
        return self.engine.metrics()

    def region_down(self, region: str) -> None:
        self.engine.region_down(region)

    def region_up(self, region: str) -> None:
        self.engine.region_up(region)

    def busy(self, since: float | None = None) -> dict[str, Any]:
        """What keeps :meth:`wait_converged` from answering True now (empty when nothing):
        counts and region names only, for a drill's journal to say why it did not converge."""
        up = [r for r in self.regions if not self.engine.is_down(r)]
        since = time.monotonic() if since is None else since
        found: dict[str, Any] = {
            "failed": self.engine.failed_count,
            "pending": self.engine.pending(),
            "echoes": self.engine.echoes_pending(),
            "rereads": self.engine.rereads_pending(),
            "polling": sorted(r for r in up if not self._idle.get(r, True)),
            "not_read_since": sorted(r for r in up if self._caught_up.get(r, -1.0) < since),
        }
        return {k: v for k, v in found.items() if v}

    def wait_converged(self, timeout: float = 10.0, *, since: float | None = None) -> bool:
        """True once every link is empty, every echo seen and every poller idle, after
        every region's stream has been read to its end by a poll that started after this
        call, or after ``since`` (a ``time.monotonic()`` value) when given: a write made
        just before is then not missed by a poller between polls. A caller that waits in
        short slices passes the start of its wait as ``since``; otherwise a loaded
        machine, where one round of polls outlasts a slice, never converges.

        Never while a change has been given up on (``engine.failed``): the replicas
        differ for good, which is no convergence.
        """
        now = time.monotonic()
        called = now if since is None else min(since, now)
        deadline = now + timeout
        quiet_since: float | None = None
        self.nudge()  # a quiet table may be read only every deep_idle_interval
        while time.monotonic() < deadline:
            if self.engine.failed_count:
                return False
            up = [r for r in self.regions if not self.engine.is_down(r)]
            busy = (
                self.engine.pending()
                or self.engine.echoes_pending()
                or self.engine.rereads_pending()
                or not all(self._idle.get(r, True) for r in up)
                # a write made just before the call: every stream read since, to the end
                or any(self._caught_up.get(r, -1.0) < called for r in up)
            )
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 2 * self.max_idle_interval:
                return True
            time.sleep(0.01)
        return False
