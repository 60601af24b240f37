"""How the replication emulator writes a batch of changes into one replica.

The engine (:mod:`regions.local.replication`) decides *what* to write and over what;
an applier does the writing and says, per item, how far it got. Two exist:

* :class:`ClientApplier` sends each change as a client would: a conditional
  ``PutItem`` or ``DeleteItem`` through the boto3 client of the replica. It works
  against anything that speaks DynamoDB (in-process moto in the simulation).
* :class:`ServerApplier` posts the whole batch to the replica's own local server,
  which applies each change through moto's backend with the same condition
  (:mod:`regions.local.apply_endpoint`). DynamoDB applies replicated writes
  internally, not as client requests; this is the local cluster's equivalent, and
  it costs the server about a tenth of a client request per change.

Both answer the same way, so the engine's rules (nothing lost, nothing older over
newer) do not depend on which one runs: for each group (the versions of one item,
in order), how many were written, and the error that stopped the rest, ``None``
for a lost condition. A region that does not answer is an error for every group;
the engine keeps and retries those changes.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from regions.local.apply_endpoint import TARGET, map_binary
from residency.clients import ClientProvider
from residency.settings import is_loopback_url

__all__ = [
    "Applier",
    "ClientApplier",
    "Outcome",
    "ReplicaUnreachable",
    "ServerApplier",
    "Write",
]

LOST = "ConditionalCheckFailedException"


class Write(NamedTuple):
    """One replicated change for a replica: a put of ``image`` (a delete of ``keys``
    when it is None), applied only if ``condition`` holds (a ``ConditionExpression``
    with its names and values; empty for none)."""

    table: str
    keys: dict[str, Any]
    image: dict[str, Any] | None
    condition: dict[str, Any]


Outcome = tuple[int, Exception | None]
"""Per group: changes written, and the error that stopped the rest (None: all were
written, or the next one's condition did not hold)."""


class ReplicaUnreachable(ConnectionError):
    """The replica's server did not take the batch (refused, reset, timed out)."""


class Applier(Protocol):
    """Writes groups of changes into one replica; see the module docstring."""

    def apply(self, dst: str, groups: Sequence[Sequence[Write]]) -> list[Outcome]: ...

    def close(self) -> None: ...


def _client_error(code: str, message: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class ClientApplier:
    """Each change a conditional request through the replica's boto3 client.

    Items go ``workers`` at a time (distinct items are independent); the versions of
    one item in order, each after the one before.
    """

    def __init__(self, clients: ClientProvider, *, workers: int = 1) -> None:
        self.clients = clients
        self.workers = max(1, workers)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def apply(self, dst: str, groups: Sequence[Sequence[Write]]) -> list[Outcome]:
        ddb = self.clients.client("dynamodb", dst)

        def run(group: Sequence[Write]) -> Outcome:
            for i, write in enumerate(group):
                written, exc = self._write(ddb, write)
                if not written:
                    return i, exc
            return len(group), None

        if self.workers == 1 or len(groups) == 1:
            return [run(g) for g in groups]
        return list(self._executor(dst).map(run, groups))

    @staticmethod
    def _write(ddb: Any, write: Write) -> tuple[bool, Exception | None]:
        """(written, error); not written with no error is a lost condition."""
        from botocore.exceptions import ClientError

        try:
            if write.image is not None:
                ddb.put_item(TableName=write.table, Item=write.image, **write.condition)
            else:
                ddb.delete_item(TableName=write.table, Key=write.keys, **write.condition)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            return False, None if code == LOST else exc
        except Exception as exc:
            return False, exc
        return True, None

    def _executor(self, dst: str) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(dst)
            if pool is None:
                pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"apply-{dst}")
                self._pools[dst] = pool
            return pool

    def close(self) -> None:
        """Stop the apply threads (a batch being applied finishes first)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True)


def _b64(value: bytes | bytearray) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _item(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Attribute values as DynamoDB's JSON wire format has them (botocore hands binary
    values over as bytes; the wire has them in base64)."""
    return map_binary(attrs, _b64)


def _encode(group: Sequence[Write]) -> bytes:
    """One group's part of a request body (JSON; binary values in base64)."""
    return json.dumps(
        [
            {
                "table": w.table,
                "keys": _item(w.keys),
                "image": _item(w.image),
                "condition": {
                    **w.condition,
                    **(
                        {"ExpressionAttributeValues": _item(values)}
                        if (values := w.condition.get("ExpressionAttributeValues"))
                        else {}
                    ),
                },
            }
            for w in group
        ],
        separators=(",", ":"),
    ).encode()


def _closed_by_peer(sock: Any) -> bool:
    """Whether an idle keep-alive socket has been closed by the server (it is readable:
    end of file). ``poll``, not ``select``: a descriptor over 1023 breaks ``select``."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover - not Linux


class _Connection:
    """One keep-alive connection to one replica's server."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.endpoint = (host, port)
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.used = time.monotonic()
        self.lock = threading.Lock()


class ServerApplier:
    """Each batch one request to the replica's local server (see the module docstring).

    Only a loopback endpoint is ever called: the servers of the local cluster. One
    request carries at most ``max_changes`` changes, ``max_values`` top-level attribute
    values and ``max_bytes`` of body (a group over a limit goes alone): moto's cost per
    change grows with the item's attributes (about 0.6 s for an item of 1,000), and a
    request that times out is still applied by the server, so resending work that is
    merely slow only piles more of it up. ``timeout`` is long for the same reason: a
    region that does not answer is taken out of replication by its outage
    (``region_down``) before anything more is sent to it, and a stopped server that is
    resumed answers the request it holds. A request that does time out may still have
    been applied: the engine then holds its changes in doubt
    (:meth:`regions.local.replication.ReplicationEngine.apply`).
    """

    def __init__(
        self,
        clients: ClientProvider,
        *,
        timeout: float = 60.0,
        max_changes: int = 200,
        max_values: int = 2_000,
        max_bytes: int = 256 * 1024,
        idle_reconnect: float = 60.0,
    ) -> None:
        self.clients = clients
        self.timeout = timeout
        self.max_changes = max_changes
        self.max_values = max_values
        self.max_bytes = max_bytes
        # waitress closes a connection idle for 120 s; reconnect well before.
        self.idle_reconnect = idle_reconnect
        self._conns: dict[str, _Connection] = {}
        self._lock = threading.Lock()

    def _endpoint(self, dst: str) -> tuple[str, int]:
        url = self.clients.client("dynamodb", dst).meta.endpoint_url or ""
        parts = urlsplit(url)
        if not is_loopback_url(url) or parts.hostname is None or parts.port is None:
            raise ValueError(f"region {dst!r} has no local server endpoint ({url!r})")
        return parts.hostname, parts.port

    def _connection(self, dst: str) -> _Connection:
        endpoint = self._endpoint(dst)
        with self._lock:
            conn = self._conns.get(dst)
            if conn is None or conn.endpoint != endpoint:
                if conn is not None and conn.lock.acquire(blocking=False):
                    conn.conn.close()  # the server moved; not if a request is on it
                    conn.lock.release()
                conn = _Connection(*endpoint, self.timeout)
                self._conns[dst] = conn
            return conn

    def _post(self, dst: str, body: bytes) -> list[dict[str, Any]]:
        conn = self._connection(dst)
        with conn.lock:
            sock = conn.conn.sock
            idle = time.monotonic() - conn.used > self.idle_reconnect
            if sock is not None and (idle or _closed_by_peer(sock)):
                conn.conn.close()  # http.client opens a new one
            try:
                conn.conn.request(
                    "POST",
                    "/",
                    body=body,
                    headers={
                        "Content-Type": "application/x-amz-json-1.0",
                        "X-Amz-Target": TARGET,
                    },
                )
                reply = conn.conn.getresponse()
                status, data = reply.status, reply.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.conn.close()  # reconnects on the next request
                raise ReplicaUnreachable(f"{dst}: {type(exc).__name__}") from exc
            finally:
                conn.used = time.monotonic()
        try:
            answer = json.loads(data)
            results: list[dict[str, Any]] = answer["results"] if status == 200 else []
        except (ValueError, KeyError, TypeError):  # not our endpoint's answer
            answer, status = {}, max(status, 500)
        if status != 200:
            code = "InternalServerError" if status >= 500 else answer.get("__type", str(status))
            raise _client_error(code, str(answer.get("message", "")), "ApplyChanges")
        return results

    def apply(self, dst: str, groups: Sequence[Sequence[Write]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(groups)
        encoded: list[tuple[int, bytes]] = []
        for i, group in enumerate(groups):
            try:
                encoded.append((i, _encode(group)))
            except (TypeError, ValueError) as exc:  # this group only
                outcomes[i] = (0, exc)
        chunks = self._chunks(groups, encoded)
        for k, chunk in enumerate(chunks):
            body = b'{"groups":[' + b",".join(part for _, part in chunk) + b"]}"
            try:
                results = self._post(dst, body)
            except Exception as exc:  # the whole request: every group of it, and the rest
                for later in chunks[k:]:
                    for i, _ in later:
                        outcomes[i] = (0, exc)
                break
            for (i, _), result in zip(chunk, results, strict=True):
                outcomes[i] = self._outcome(groups[i], result)
        return [o if o is not None else (0, None) for o in outcomes]

    @staticmethod
    def _outcome(group: Sequence[Write], result: dict[str, Any]) -> Outcome:
        applied, code = int(result["applied"]), result.get("code")
        if code is None or code == LOST:
            return applied, None
        operation = "PutItem" if group[applied].image is not None else "DeleteItem"
        return applied, _client_error(code, str(result.get("message") or ""), operation)

    def _chunks(
        self, groups: Sequence[Sequence[Write]], encoded: list[tuple[int, bytes]]
    ) -> list[list[tuple[int, bytes]]]:
        chunks: list[list[tuple[int, bytes]]] = []
        chunk: list[tuple[int, bytes]] = []
        changes = values = size = 0
        for i, part in encoded:
            n = len(groups[i])
            v = sum(1 + len(w.image or w.keys) for w in groups[i])
            if chunk and (
                changes + n > self.max_changes
                or values + v > self.max_values
                or size + len(part) > self.max_bytes
            ):
                chunks.append(chunk)
                chunk, changes, values, size = [], 0, 0, 0
            chunk.append((i, part))
            changes += n
            values += v
            size += len(part) + 1
        if chunk:
            chunks.append(chunk)
        return chunks

    def close(self, grace: float = 1.0) -> None:
        """Close every connection. A request still in progress after ``grace`` seconds
        (a stopped server holds it up to ``timeout``) is cut off: it fails as a fault,
        and its changes stay with the engine."""
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            if conn.lock.acquire(timeout=grace):
                try:
                    conn.conn.close()
                finally:
                    conn.lock.release()
                continue
            sock = conn.conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the request's read
