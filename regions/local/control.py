"""The control endpoint of a running local cluster, and its client.

``regionkit local up`` serves a small JSON-over-HTTP API on 127.0.0.1 (stdlib
``http.server`` in a thread) so that other processes (``regionkit local
status|fault|down``, drills, notebooks) can inject faults into the running
cluster. Every request carries the token from the state file in the
``X-Regionkit-Token`` header::

    GET  /status                                  -> cluster status and link metrics
    POST /lag        {"src"?, "dst"?, "ms", "jitter_ms"?}   ms null clears the lag
    POST /pause      {"src"?, "dst"?, "region"?}  region = every link into and out of it
    POST /resume     {"src"?, "dst"?, "region"?}
    POST /partition  {"groups": [["a", "b"], ["c"]]}
    POST /heal       {}
    POST /outage     {"region", "mode"?: "stop" | "refuse"}
    POST /restore    {"region"}
    POST /skew       {"region", "ms"}
    POST /stop       {}

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": ..., "kind":
"config" | "operation"}`` (HTTP 400 or 409). :class:`ControlClient` turns the
latter back into :class:`~residency.errors.ConfigError` or
:class:`~residency.errors.ClusterError`.
"""

from __future__ import annotations

import hmac
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from residency.errors import ClusterError, ConfigError, RegionkitError
from residency.logs import get_logger
from residency.settings import is_loopback_url


class FaultTarget(Protocol):
    """What the control API drives: :class:`regions.local.cluster.LocalCluster` is one.

    (A protocol, not the class, so this module and the cluster's do not import each other.)
    """

    def outage(self, region: str, mode: Any = ...) -> None: ...

    def restore(self, region: str) -> None: ...

    def set_clock_skew(self, region: str, ms: int) -> None: ...

    def set_lag(
        self, src: str | None, dst: str | None, ms: float | None, *, jitter_ms: float = 0.0
    ) -> None: ...

    def pause_replication(
        self, src: str | None = None, dst: str | None = None, *, region: str | None = None
    ) -> None: ...

    def resume_replication(
        self, src: str | None = None, dst: str | None = None, *, region: str | None = None
    ) -> None: ...

    def partition(self, groups: list[list[str]]) -> None: ...

    def heal(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def unreplicated_ages(self, region: str, *, fresh: bool = True) -> list[float]: ...


__all__ = ["TOKEN_HEADER", "ControlClient", "ControlServer"]

log = get_logger("regionkit.local.control")

TOKEN_HEADER = "X-Regionkit-Token"
_MAX_BODY = 64 * 1024


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(message=f"{name!r} must be a region code, not {value!r}")
    return value


def _number(body: dict[str, Any], name: str, *, required: bool = True) -> float | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(message=f"{name!r} must be a number, not {value!r}")
    return float(value)


class ControlServer:
    """Serves the control API for one :class:`LocalCluster` on 127.0.0.1."""

    def __init__(
        self,
        cluster: FaultTarget,
        *,
        token: str,
        on_stop: Callable[[], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not is_loopback_url(f"http://{host}"):
            raise ConfigError(message=f"the control endpoint binds loopback only, not {host!r}")
        self.cluster = cluster
        self.token = token
        self.on_stop = on_stop
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ControlServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name="regionkit-control",
        )
        self._thread.start()
        log.info("control_listening", url=self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    # --- dispatch ---

    def handle(self, method: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "GET" and op == "status":
            return self.cluster.status()
        if method == "POST" and op == "unreplicated":  # a read, but it takes a body
            region = _required(body, "region")
            return {"region": region, "ages_s": self.cluster.unreplicated_ages(region)}
        if method != "POST":
            raise ConfigError(message=f"unknown control request {method} /{op}")
        ops: dict[str, Callable[[dict[str, Any]], None]] = {
            "lag": self._lag,
            "pause": self._pause,
            "resume": self._resume,
            "partition": self._partition,
            "heal": lambda _body: self.cluster.heal(),
            "outage": self._outage,
            "restore": lambda body: self.cluster.restore(_required(body, "region")),
            "skew": self._skew,
            "stop": self._stop_cluster,
        }
        run = ops.get(op)
        if run is None:
            raise ConfigError(message=f"unknown control operation {op!r}")
        run(body)
        log.info("control_request", op=op, body=body)
        return {}

    def _lag(self, body: dict[str, Any]) -> None:
        ms = _number(body, "ms", required=False)
        jitter = _number(body, "jitter_ms", required=False) or 0.0
        self.cluster.set_lag(_opt_str(body, "src"), _opt_str(body, "dst"), ms, jitter_ms=jitter)

    def _pause(self, body: dict[str, Any]) -> None:
        self.cluster.pause_replication(
            src=_opt_str(body, "src"), dst=_opt_str(body, "dst"), region=_opt_str(body, "region")
        )

    def _resume(self, body: dict[str, Any]) -> None:
        self.cluster.resume_replication(
            src=_opt_str(body, "src"), dst=_opt_str(body, "dst"), region=_opt_str(body, "region")
        )

    def _partition(self, body: dict[str, Any]) -> None:
        groups = body.get("groups")
        if not isinstance(groups, list) or not all(
            isinstance(g, list) and all(isinstance(r, str) for r in g) for g in groups
        ):
            raise ConfigError(message="'groups' must be a list of lists of region codes")
        self.cluster.partition(groups)

    def _outage(self, body: dict[str, Any]) -> None:
        mode = body.get("mode", "stop")
        if mode not in {"stop", "refuse"}:
            raise ConfigError(message=f"outage mode must be 'stop' or 'refuse', not {mode!r}")
        self.cluster.outage(_required(body, "region"), mode=mode)

    def _skew(self, body: dict[str, Any]) -> None:
        ms = _number(body, "ms")
        assert ms is not None
        self.cluster.set_clock_skew(_required(body, "region"), int(ms))

    def _stop_cluster(self, body: dict[str, Any]) -> None:
        if self.on_stop is None:
            raise ClusterError(message="this cluster is not stoppable over its control API")
        self.on_stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "regionkit-control"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                token = self.headers.get(TOKEN_HEADER, "")
                if not hmac.compare_digest(token.encode(), server.token.encode()):
                    self._answer(
                        403,
                        {"ok": False, "kind": "config", "error": "missing or wrong control token"},
                    )
                    return
                try:
                    body = _request_body(self)
                    result = server.handle(method, self.path.strip("/"), body)
                except Exception as exc:
                    self._answer(*_failure(exc, self.path))
                else:
                    self._answer(200, {"ok": True, **result})

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler


def _request_body(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    """A control request's JSON object (``{}`` when it has no body)."""
    length = int(handler.headers.get("Content-Length") or 0)
    if length > _MAX_BODY:
        raise ConfigError(message="control request body too large")
    raw = handler.rfile.read(length) if length else b"{}"
    body = json.loads(raw or b"{}")
    if not isinstance(body, dict):
        raise ConfigError(message="a control request body is a JSON object")
    return body


def _failure(exc: Exception, path: str) -> tuple[int, dict[str, Any]]:
    """The status and payload answering a failed control request (called while handling
    ``exc``: a bug is logged with its traceback)."""
    if isinstance(exc, ValueError):
        return 400, {"ok": False, "kind": "config", "error": f"bad JSON: {exc}"}
    if isinstance(exc, ConfigError):
        return 400, {"ok": False, "kind": "config", "error": str(exc)}
    if isinstance(exc, RegionkitError):
        return 409, {"ok": False, "kind": "operation", "error": str(getattr(exc, "message", exc))}
    log.exception("control_request_failed", path=path)
    return 500, {"ok": False, "kind": "operation", "error": repr(exc)}


def _required(body: dict[str, Any], name: str) -> str:
    value = _opt_str(body, name)
    if value is None:
        raise ConfigError(message=f"{name!r} is required")
    return value


class ControlClient:
    """Talks to the control endpoint of a running cluster (loopback only)."""

    def __init__(self, url: str, token: str = "", *, timeout: float = 10.0) -> None:
        if not is_loopback_url(url):
            raise ConfigError(
                message=f"the control endpoint must be on loopback, not {url!r}; "
                "check the cluster state file"
            )
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_state(cls, state: dict[str, Any], *, timeout: float = 10.0) -> ControlClient:
        url = state.get("control")
        if not isinstance(url, str):
            raise ConfigError(message="the cluster state file names no control endpoint")
        return cls(url, str(state.get("control_token", "")), timeout=timeout)

    @classmethod
    def from_state_file(cls, path: Path, *, timeout: float = 10.0) -> ControlClient:
        from regions.local.state import read_state

        state = read_state(path)
        if state is None:
            raise ClusterError(
                message=f"no cluster state file at {path}: is `regionkit local up` running?"
            )
        return cls.from_state(state, timeout=timeout)

    def _call(self, method: str, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if method == "GET" else json.dumps(body or {}).encode()
        req = urllib.request.Request(
            f"{self.url}/{op}",
            data=data,
            method=method,
            headers={TOKEN_HEADER: self.token, "Content-Type": "application/json"},
        )
        # Never through a proxy: the endpoint is loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {"error": f"HTTP {exc.code}"}
            message = str(payload.get("error", f"HTTP {exc.code}"))
            if payload.get("kind") == "config":
                raise ConfigError(message=message) from None
            raise ClusterError(message=message) from None
        except (OSError, ValueError) as exc:
            raise ClusterError(
                message=f"no cluster answers at {self.url} ({exc}); is `regionkit local up` "
                "running?"
            ) from None
        if not isinstance(payload, dict):
            raise ClusterError(message=f"unexpected answer from {self.url}: {payload!r}")
        payload.pop("ok", None)
        return payload

    def status(self) -> dict[str, Any]:
        return self._call("GET", "status")

    def unreplicated_ages(self, region: str) -> list[float]:
        """Ages (s) of the writes made in ``region`` not yet on every replica, one per
        write, measured by the cluster's replication engine."""
        return [float(a) for a in self._call("POST", "unreplicated", {"region": region})["ages_s"]]

    def lag(
        self,
        src: str | None = None,
        dst: str | None = None,
        ms: float | None = None,
        *,
        jitter_ms: float = 0.0,
    ) -> None:
        self._call("POST", "lag", {"src": src, "dst": dst, "ms": ms, "jitter_ms": jitter_ms})

    def pause(
        self, src: str | None = None, dst: str | None = None, *, region: str | None = None
    ) -> None:
        self._call("POST", "pause", {"src": src, "dst": dst, "region": region})

    def resume(
        self, src: str | None = None, dst: str | None = None, *, region: str | None = None
    ) -> None:
        self._call("POST", "resume", {"src": src, "dst": dst, "region": region})

    def partition(self, groups: list[list[str]]) -> None:
        self._call("POST", "partition", {"groups": groups})

    def heal(self) -> None:
        self._call("POST", "heal")

    def outage(self, region: str, mode: str = "stop") -> None:
        self._call("POST", "outage", {"region": region, "mode": mode})

    def restore(self, region: str) -> None:
        self._call("POST", "restore", {"region": region})

    def skew(self, region: str, ms: int) -> None:
        self._call("POST", "skew", {"region": region, "ms": ms})

    def stop(self) -> None:
        self._call("POST", "stop")
