"""moto server processes: one per region, on 127.0.0.1, that never outlive their parent.

:func:`start_servers` starts one process per region, in parallel, and returns when
every one answers a DynamoDB call (or raises :class:`~residency.errors.ClusterError`
with the failing server's standard-error tail). Each :class:`MotoServer` can then
be put through the outages a real region suffers:

=================  ==========================================  =====================
method             what happens                                what a boto3 client sees
=================  ==========================================  =====================
``pause()``        ``SIGSTOP``: the process is frozen          connects succeed (the
                                                               kernel's backlog), reads
                                                               time out
``refuse()``       the server closes its listening socket      ``EndpointConnectionError``
                   and every open connection; the process      (connection refused) or
                   and its data stay                           ``ConnectionClosedError``
``resume()`` /     ``SIGCONT`` / listening again on the        normal service, with the
``accept()``       same port                                   same data
=================  ==========================================  =====================

No server is left behind, whatever happens to the parent:

* each child gets ``PR_SET_PDEATHSIG(SIGKILL)`` (Linux, via ``prctl`` in a
  ``preexec_fn``), so the kernel kills it when the parent dies, even by SIGKILL.
  The signal fires when the *thread* that forked the child ends, so every child
  is forked from one long-lived spawner thread, never from a short-lived worker;
* each child reads its standard input from the parent and exits on end of input
  (the same guarantee where ``prctl`` does not exist);
* each child runs in its own session (``start_new_session``): a Ctrl-C in the
  terminal reaches only the parent, which then stops the servers in order;
* an ``atexit`` hook stops every server still running when the interpreter exits;
* :meth:`MotoServer.stop` sends SIGCONT, closes the pipe, SIGTERMs the process
  group, and SIGKILLs it if it has not gone within the grace period.

Two server kinds exist. ``fast`` (the default) is :mod:`regions.local._server_main`:
moto's WSGI app under a keep-alive HTTP/1.1 server, measured faster than the
stock one (see ``benchmarks/bench_replication.py``), and the only kind that can
``refuse()``. ``stock`` is ``python -m moto.server``, moto's own werkzeug server,
kept as the benchmark baseline and as a fallback.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from residency.errors import ClusterError, ConfigError
from residency.logs import get_logger

__all__ = [
    "LOOPBACK",
    "MotoServer",
    "ServerKind",
    "ServerState",
    "free_port",
    "probe",
    "start_server",
    "start_servers",
    "stop_all",
]

log = get_logger("regionkit.local.servers")

LOOPBACK = "127.0.0.1"
ServerKind = Literal["fast", "stock"]
ServerState = Literal["up", "paused", "refusing", "stopped"]

_PR_SET_PDEATHSIG = 1
_SERVER_MAIN = Path(__file__).resolve().with_name("_server_main.py")
_live: weakref.WeakSet[MotoServer] = weakref.WeakSet()
_live_lock = threading.Lock()


# --- the parent-death signal --------------------------------------------------------


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        return None
    return prctl


_prctl = _load_prctl()  # loaded before any fork: the child must not dlopen


def _child_preexec(parent_pid: int) -> Callable[[], None]:
    """Runs in the forked child before exec: die with the parent, no matter how it dies."""

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


class _Spawner:
    """Forks every child from one long-lived thread (see the PDEATHSIG note above)."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="regionkit-spawner"
                )
            pool = self._pool
        kwargs["preexec_fn"] = _child_preexec(os.getpid())
        return pool.submit(_popen, args, kwargs).result()


def _popen(args: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, **kwargs)


_spawner = _Spawner()


# --- helpers ------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (only the stock server needs one chosen for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_loopback(host: str) -> str:
    if host not in {LOOPBACK, "localhost"}:
        raise ConfigError(
            message=f"the local cluster listens on loopback only, not {host!r}; use 127.0.0.1"
        )
    return host


def probe(url: str, region: str, *, timeout: float = 1.0) -> bool:
    """True when the server at ``url`` answers a DynamoDB ``ListTables`` with 200."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(
            "POST",
            "/",
            body=b"{}",
            headers={
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=regionkit/20200101/"
                f"{region}/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            },
        )
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace").strip()


def _wait_stopped(pid: int, timeout: float = 2.0) -> None:
    """Wait until every thread of ``pid`` is stopped: SIGSTOP is delivered asynchronously."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():  # not Linux: nothing to look at
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = [
                (t / "stat").read_text().rpartition(")")[2].split()[0] for t in tasks.iterdir()
            ]
        except (OSError, IndexError):
            states = []
        if states and all(s in {"T", "t"} for s in states):
            return
        time.sleep(0.002)


class _Lines:
    """Reads newline-terminated messages from a pipe with a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""

    def read(self, timeout: float) -> str | None:
        """The next line, or None after ``timeout``; EOFError when the child is gone."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
                raise EOFError("the child closed its end")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")


# --- one server -----------------------------------------------------------------------


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    lines: _Lines | None


class MotoServer:
    """One region's moto server process. Create with :func:`start_server`."""

    def __init__(self, region: str, kind: ServerKind, port: int, proc: _Proc) -> None:
        self.region = region
        self.kind: ServerKind = kind
        self.port = port
        self._proc = proc
        self._state: ServerState = "up"
        self._lock = threading.RLock()
        self.started_at = time.time()

    def __repr__(self) -> str:
        return f"MotoServer({self.region!r}, {self.url}, pid={self.pid}, {self._state})"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.popen.pid

    @property
    def log_path(self) -> Path:
        return self._proc.log_path

    @property
    def state(self) -> ServerState:
        if self._state != "stopped" and not self.alive():
            return "stopped"
        return self._state

    def alive(self) -> bool:
        return self._proc.popen.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        return _tail(self.log_path, limit)

    def _lost(self, doing: str) -> ClusterError:
        return ClusterError(
            message=f"the {self.region} server (pid {self.pid}) is gone while {doing}; "
            f"exit code {self._proc.popen.poll()}; its stderr ends with: "
            f"{self.stderr_tail(800) or '(nothing)'}"
        )

    def _command(self, command: str, timeout: float = 5.0) -> dict[str, Any]:
        stdin, lines = self._proc.popen.stdin, self._proc.lines
        if stdin is None or lines is None:
            raise ClusterError(
                message=f"the {self.region} server is a {self.kind!r} server, which takes no "
                f"commands; start the cluster with server_kind='fast' for {command!r}"
            )
        if self._state == "paused":
            raise ClusterError(
                message=f"the {self.region} server is paused (SIGSTOP); resume it first"
            )
        try:
            stdin.write(command.encode() + b"\n")
            stdin.flush()
        except OSError:
            raise self._lost(f"sending {command!r}") from None
        try:
            line = lines.read(timeout)
        except EOFError:
            line = None
        if line is None:
            raise self._lost(f"waiting for the answer to {command!r}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise ClusterError(message=f"{self.region}: {reply.get('error', reply)}")
        return reply

    # --- outages ---

    def pause(self) -> None:
        """SIGSTOP: the region stops answering; clients time out."""
        with self._lock:
            if self._state == "paused":
                return
            if not self.alive():
                raise self._lost("pausing it")
            os.kill(self.pid, signal.SIGSTOP)
            _wait_stopped(self.pid)
            self._state = "paused"
            log.info("region_paused", region=self.region, pid=self.pid)

    def resume(self) -> None:
        """SIGCONT: the region answers again, with everything it held."""
        with self._lock:
            if self._state != "paused":
                return
            if not self.alive():
                raise self._lost("resuming it")
            os.kill(self.pid, signal.SIGCONT)
            self._state = "up"
            log.info("region_resumed", region=self.region, pid=self.pid)

    def refuse(self) -> None:
        """Close the listener and every connection: clients get 'connection refused'."""
        with self._lock:
            if self._state == "refusing":
                return
            self._command("dark")
            self._state = "refusing"
            log.info("region_refusing", region=self.region, pid=self.pid)

    def accept(self) -> None:
        """Listen again on the same port; the data is as it was."""
        with self._lock:
            if self._state != "refusing":
                return
            self._command("light")
            self._state = "up"
            log.info("region_accepting", region=self.region, pid=self.pid)

    def ping(self) -> bool:
        """True when the process is alive and answers HTTP (False while paused or refusing)."""
        return self.alive() and self._state == "up" and probe(self.url, self.region)

    # --- stopping ---

    def stop(self, grace: float = 3.0) -> None:
        """Stop the process and its group; idempotent; nothing is left behind."""
        with self._lock:
            popen = self._proc.popen
            if popen.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGTERM):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(popen.pid, sig)
                if popen.stdin is not None:
                    with contextlib.suppress(OSError):
                        popen.stdin.close()
                try:
                    popen.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(popen.pid, signal.SIGKILL)
                    popen.wait(grace)
            else:  # reap anything it may have left in its group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
            for stream in (popen.stdin, popen.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            if self._state != "stopped":
                log.info("server_stopped", region=self.region, pid=popen.pid)
            self._state = "stopped"
        with _live_lock:
            _live.discard(self)


# --- starting -------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # moto's request recorder appends every request to a file (any non-empty value,
    # even "false", turns it on): never in the cluster.
    env.pop("MOTO_ENABLE_RECORDING", None)
    return env


def _spawn(region: str, kind: ServerKind, log_dir: Path) -> tuple[_Proc, int]:
    fd, name = tempfile.mkstemp(prefix=f"regionkit-{region}-", suffix=".log", dir=log_dir)
    log_path = Path(name)
    with os.fdopen(fd, "wb") as err:
        if kind == "fast":
            # -P and a path, not -m: the child must not import the regions package
            # (the router, boto3 ...), only moto. It imports nothing from regionkit.
            args = [sys.executable, "-P", str(_SERVER_MAIN), "--region", region]
            port = 0
        else:
            port = free_port()
            args = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
        popen = _spawner.popen(
            args,
            stdin=subprocess.PIPE if kind == "fast" else subprocess.DEVNULL,
            stdout=subprocess.PIPE if kind == "fast" else subprocess.DEVNULL,
            stderr=err,
            env=_child_env(),
            cwd=str(log_dir),
            start_new_session=True,
            close_fds=True,
        )
    lines = _Lines(popen.stdout) if popen.stdout is not None else None
    return _Proc(popen, log_path, lines), port


def _await_ready(
    region: str, kind: ServerKind, proc: _Proc, port: int, deadline: float
) -> MotoServer:
    def failure(why: str) -> ClusterError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(2)
        tail = _tail(proc.log_path) or "(nothing on stderr)"
        return ClusterError(
            message=f"the moto server for {region} {why}; its stderr ends with:\n{tail}"
        )

    if proc.lines is not None:
        try:
            line = proc.lines.read(max(0.0, deadline - time.monotonic()))
        except EOFError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(2)
            raise failure(f"exited with code {proc.popen.poll()} during start-up") from None
        if line is None:
            raise failure("did not report ready in time")
        try:
            port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            raise failure(f"sent an unexpected start-up line {line[:200]!r}") from None
    server = MotoServer(region, kind, port, proc)
    while not probe(server.url, region, timeout=0.5):
        if proc.popen.poll() is not None:
            raise failure(f"exited with code {proc.popen.returncode} during start-up")
        if time.monotonic() > deadline:
            raise failure(f"did not answer on {server.url} in time")
        time.sleep(0.02)
    with _live_lock:
        _live.add(server)
    return server


def start_server(
    region: str, *, kind: ServerKind = "fast", timeout: float = 30.0, log_dir: Path | None = None
) -> MotoServer:
    """Start one region's server and wait until it answers."""
    return start_servers([region], kind=kind, timeout=timeout, log_dir=log_dir)[region]


def start_servers(
    regions: Iterable[str],
    *,
    kind: ServerKind = "fast",
    timeout: float = 30.0,
    log_dir: Path | None = None,
    host: str = LOOPBACK,
) -> dict[str, MotoServer]:
    """Start one server per region, all at once; wait (bounded) until every one answers.

    On any failure every server already started is stopped and a
    :class:`ClusterError` names the region and quotes its standard error.
    """
    _check_loopback(host)
    if kind not in ("fast", "stock"):
        raise ConfigError(message=f"unknown server kind {kind!r}; use 'fast' or 'stock'")
    regions = list(dict.fromkeys(regions))
    log_dir = Path(tempfile.gettempdir()) if log_dir is None else log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    spawned: dict[str, tuple[_Proc, int]] = {}
    servers: dict[str, MotoServer] = {}
    try:
        for region in regions:
            spawned[region] = _spawn(region, kind, log_dir)
        for region, (proc, port) in spawned.items():
            servers[region] = _await_ready(region, kind, proc, port, deadline)
    except BaseException:
        for region, (proc, _) in spawned.items():
            if region in servers:
                servers[region].stop(grace=1.0)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(2)
                for stream in (proc.popen.stdin, proc.popen.stdout):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
        raise
    log.info(
        "servers_started",
        kind=kind,
        servers={r: {"url": s.url, "pid": s.pid} for r, s in servers.items()},
    )
    return servers


def stop_all() -> None:
    """Stop every server this process started and has not stopped (the atexit hook)."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(grace=1.0)


atexit.register(stop_all)
