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

How the processes are made. Each server is its own ``python`` process running
:mod:`regions.local._server_main` (moto's own WSGI app under cheroot); all of a
cluster's servers are started at once and start-up waits for the slowest.

No server is left behind, whatever happens to the parent:

* every process we start gets ``PR_SET_PDEATHSIG(SIGKILL)`` (Linux, via ``prctl``
  in a ``preexec_fn``), so the kernel kills it when its parent dies, even by
  SIGKILL, and even while it is SIGSTOPped (a paused region cannot notice
  anything itself). The signal fires when the *thread* that forked the child
  ends, so every child is forked from one long-lived spawner thread, never from
  a short-lived worker. (No well-kept package wraps ``prctl``; the three on PyPI
  were last released in 2010, 2020 and 2021, so it is one ``ctypes`` call here.);
* each server reads commands on a pipe from the parent and exits on end of
  input (the same guarantee where ``prctl`` does not exist);
* each process runs in its own session (``start_new_session`` / ``setsid``): a
  Ctrl-C in the terminal reaches only the parent, which then stops the servers
  in order;
* an ``atexit`` hook stops every server still running when the interpreter exits;
* :meth:`MotoServer.stop` sends SIGCONT and SIGTERM to the server's process
  group, closes its pipe, and SIGKILLs it if it has not gone within the grace
  period;
* log files (and a cluster's run directory) carry the owner's PID in their
  names, so :func:`sweep_stale` removes what a SIGKILLed owner could not.

Two server kinds exist. ``fast`` (the default) is :mod:`regions.local._server_main`:
moto's own WSGI app under cheroot's keep-alive HTTP/1.1 server (measured against
the stock server in ``benchmarks/bench_replication.py``), and the only kind that
can ``refuse()``. ``stock`` is ``python -m moto.server``, moto's own werkzeug
server, kept as the benchmark baseline.
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
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from residency.errors import ClusterError, ConfigError
from residency.logs import get_logger

__all__ = [
    "LOOPBACK",
    "MotoServer",
    "ServerKind",
    "ServerState",
    "free_port",
    "probe",
    "run_dir_prefix",
    "start_server",
    "start_servers",
    "stop_all",
    "sweep_stale",
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
    """Forks every child from one long-lived daemon thread (see the PDEATHSIG note above).

    A daemon thread, not an executor: executors' threads are joined early at
    interpreter exit, and their end would fire PDEATHSIG while other threads of
    the program may still be using the servers.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:  # a forked child of ours has no spawner thread
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            make, future = self._queue.get()
            try:
                future.set_result(make())
            except BaseException as exc:
                future.set_exception(exc)

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="regionkit-spawner"
                )
                self._thread.start()
        kwargs["preexec_fn"] = _child_preexec(os.getpid())
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((lambda: subprocess.Popen(args, **kwargs), future))
        popen: subprocess.Popen[bytes] = future.result()
        return popen


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

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    def read(self, timeout: float) -> str | None:
        """The next line, or None after ``timeout``; EOFError when the child is gone."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise EOFError("the child closed its end")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")


def _killpg(pid: int, sig: signal.Signals) -> None:
    if pid > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


# --- processes ------------------------------------------------------------------------


class _Proc:
    """A server process (``popen``), with its command channel for the fast kind."""

    def __init__(
        self,
        log_path: Path,
        popen: subprocess.Popen[bytes],
        *,
        command_fd: int | None = None,
        reply_fd: int | None = None,
    ) -> None:
        self.log_path = log_path
        self.popen = popen
        self.pid = popen.pid
        self._writer = os.fdopen(command_fd, "wb", buffering=0) if command_fd is not None else None
        self.lines = _Lines(reply_fd) if reply_fd is not None else None

    def poll(self) -> int | None:
        """None while running, else the exit code."""
        return self.popen.poll()

    def wait(self, timeout: float) -> bool:
        """True once the process has exited (within ``timeout``)."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def send(self, data: bytes) -> None:
        if self._writer is None:
            raise OSError("no command channel")
        self._writer.write(data)

    @property
    def commandable(self) -> bool:
        return self._writer is not None and self.lines is not None

    def close_commands(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()

    def close(self) -> None:
        self.close_commands()
        if self.lines is not None:
            with contextlib.suppress(OSError):
                os.close(self.lines.fd)
            self.lines = None


# --- one server -----------------------------------------------------------------------


class MotoServer:
    """One region's moto server process. Create with :func:`start_servers`."""

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
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self._proc.log_path

    @property
    def state(self) -> ServerState:
        if self._state != "stopped" and not self.alive():
            return "stopped"
        return self._state

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        return _tail(self.log_path, limit)

    def _lost(self, doing: str) -> ClusterError:
        code = self._proc.poll()
        how = "is gone" if code in (None, -1) else f"exited with code {code}"
        return ClusterError(
            message=f"the {self.region} server (pid {self.pid}) {how} while {doing}; "
            f"its stderr ends with: {self.stderr_tail(800) or '(nothing)'}"
        )

    def _command(self, command: str, timeout: float = 5.0) -> dict[str, Any]:
        if not self._proc.commandable:
            raise ClusterError(
                message=f"the {self.region} server is a {self.kind!r} server, which takes no "
                f"commands; start the cluster with server_kind='fast' for {command!r}"
            )
        if self._state == "paused":
            raise ClusterError(
                message=f"the {self.region} server is paused (SIGSTOP); resume it first"
            )
        try:
            self._proc.send(command.encode() + b"\n")
        except OSError:
            raise self._lost(f"sending {command!r}") from None
        assert self._proc.lines is not None
        try:
            line = self._proc.lines.read(timeout)
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

    def expire(self, now: float) -> dict[str, int]:
        """Run DynamoDB's TTL process in this region now (:mod:`regions.local.expiry`):
        delete every item whose TTL attribute is before ``now``. Returns the count
        deleted per table."""
        with self._lock:
            reply = self._command(f"expire {now!r}", timeout=30.0)
        return {str(e["table"]): int(e["count"]) for e in reply.get("expired", [])}

    def ping(self) -> bool:
        """True when the process is alive and answers HTTP (False while paused or refusing)."""
        return self.alive() and self._state == "up" and probe(self.url, self.region)

    # --- stopping ---

    def stop(self, grace: float = 3.0) -> None:
        """Stop the process and its group; idempotent; nothing is left behind."""
        with self._lock:
            proc = self._proc
            if self._state != "stopped":
                if proc.poll() is None:
                    _killpg(proc.pid, signal.SIGCONT)
                    _killpg(proc.pid, signal.SIGTERM)
                    proc.close_commands()
                    if not proc.wait(grace):
                        _killpg(proc.pid, signal.SIGKILL)
                        proc.wait(grace)
                else:  # gone already: take anything left in its group with it
                    _killpg(proc.pid, signal.SIGKILL)
                log.info("server_stopped", region=self.region, pid=proc.pid)
            self._state = "stopped"
            proc.close()
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            for stream in (proc.popen.stdin, proc.popen.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
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


def _log_file(log_dir: Path, name: str) -> tuple[int, Path]:
    # The owner's PID in the name lets sweep_stale() find what a SIGKILLed owner left.
    fd, path = tempfile.mkstemp(
        prefix=f"regionkit-{os.getpid()}-{name}-", suffix=".log", dir=log_dir
    )
    return fd, Path(path)


_STALE = re.compile(r"^regionkit-(?:cluster-)?(\d+)-")


def run_dir_prefix() -> str:
    """The ``tempfile`` prefix of a cluster's run directory (owner PID included)."""
    return f"regionkit-cluster-{os.getpid()}-"


def sweep_stale(directory: Path | None = None) -> int:
    """Remove run directories and log files whose owner died without cleaning up.

    A process killed by SIGKILL cannot remove its files; its servers die with it
    (PDEATHSIG), and the next cluster started on the machine removes what is left.
    Only names carrying a PID that no longer exists are touched.
    """
    directory = Path(tempfile.gettempdir()) if directory is None else directory
    removed = 0
    try:
        entries = [e for e in directory.iterdir() if e.name.startswith("regionkit-")]
    except OSError:
        return 0
    for entry in entries:
        m = _STALE.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # alive (or not ours to judge)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def _spawn_one(region: str, kind: ServerKind, log_dir: Path) -> tuple[_Proc, int]:
    """Start one region's server process; its port is known once it reports ready."""
    fd, log_path = _log_file(log_dir, region)
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
    if kind == "fast":
        assert popen.stdin is not None and popen.stdout is not None
        proc = _Proc(
            log_path,
            popen,
            command_fd=os.dup(popen.stdin.fileno()),
            reply_fd=os.dup(popen.stdout.fileno()),
        )
        popen.stdin.close()  # the dup'ed fds are the channel now
        popen.stdout.close()
        popen.stdin = popen.stdout = None
        return proc, port
    return _Proc(log_path, popen), port


def _await_ready(
    region: str, kind: ServerKind, proc: _Proc, port: int, deadline: float
) -> MotoServer:
    def failure(why: str) -> ClusterError:
        tail = _tail(proc.log_path)
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait(2)
        return ClusterError(
            message=f"the moto server for {region} {why}; its stderr ends with:\n"
            f"{tail or '(nothing on stderr)'}"
        )

    def exit_text() -> str:
        code = proc.poll()
        return "exited" if code is None else f"exited with code {code}"

    if proc.lines is not None:
        try:
            line = proc.lines.read(max(0.0, deadline - time.monotonic()))
        except EOFError:
            proc.wait(2)
            raise failure(f"{exit_text()} during start-up") from None
        if line is None:
            raise failure("did not report ready in time")
        try:
            port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            raise failure(f"sent an unexpected start-up line {line[:200]!r}") from None
    server = MotoServer(region, kind, port, proc)
    while not probe(server.url, region, timeout=0.5):
        if proc.poll() is not None:
            raise failure(f"{exit_text()} during start-up")
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
    if log_dir is None:
        log_dir = Path(tempfile.gettempdir())
        sweep_stale(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    spawned: dict[str, tuple[_Proc, int]] = {}
    servers: dict[str, MotoServer] = {}
    try:
        for region in regions:
            spawned[region] = _spawn_one(region, kind, log_dir)
        for region, (proc, port) in spawned.items():
            servers[region] = _await_ready(region, kind, proc, port, deadline)
    except BaseException:
        for region, (proc, _) in spawned.items():
            if region in servers:
                servers[region].stop(grace=1.0)
            else:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(2)
                proc.close()
                with contextlib.suppress(OSError):
                    proc.log_path.unlink()
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
