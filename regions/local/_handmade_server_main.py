"""The program of one region's moto server process (started by :mod:`regions.local.servers`).

Run as ``python -m regions.local._server_main --region eu-west-1 --port 0``. It
serves moto's WSGI app (DynamoDB, DynamoDB Streams and KMS, and anything else
moto knows, for the one region it stands for) on 127.0.0.1, and differs from the
stock ``moto_server`` in three measured ways:

* **HTTP/1.1 keep-alive.** werkzeug's development server closes the connection
  after every response ("Connection: close"), so each boto3 call paid a TCP
  handshake and a new server thread. This server keeps pooled connections open,
  as DynamoDB does.
* **direct dispatch.** Requests are routed to the DynamoDB, Streams and KMS
  handlers by their ``X-Amz-Target`` header instead of moto's per-request scan of
  every service module on disk, and called without Flask around them (moto's
  own view does nothing more); everything else still goes through moto's
  dispatcher and Flask apps.
* **no per-request logging**, a cached method table, a cheaper request ID, and
  KMS key pairs generated on first use instead of for every key (moto makes an
  RSA-2048 pair even for a symmetric key: 50 ms per table per region).

Each tweak is guarded: if a moto release renames what it patches, the server
still starts, only slower.

It talks to its parent over a line protocol on its standard input and a private
copy of its original standard output (moto's own ``print`` calls go to standard
error, which the parent keeps in a log file)::

    parent → child          child → parent
    (start-up)              {"event": "ready", "port": 41234, "pid": 123}
    "dark"                  {"ok": true, "state": "refusing"}  # listener and
                                                               # connections closed
    "light"                 {"ok": true, "state": "up"}        # listening again,
                                                               # same port, same data
    "ping"                  {"ok": true, "state": ...}

End of input means the parent is gone: the server exits at once. With the
parent's ``PR_SET_PDEATHSIG`` this is the second guarantee that no server
outlives the process that started it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TextIO

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "content-length",
    }
)


def _speedups() -> None:
    """Cheap, behaviour-preserving patches of moto's per-request overhead."""
    try:
        from moto.core import responses
        from moto.core.utils import method_names_from_class

        cached = functools.lru_cache(maxsize=None)(method_names_from_class)
        responses.method_names_from_class = cached  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # pragma: no cover - a moto upgrade renamed it
        pass
    try:
        from moto.core import responses
        from moto.utilities import aws_headers

        def gen_amzn_requestid_long(headerdict: dict[str, Any] | None = None) -> str:
            raw = base64.b64encode(os.urandom(39), altchars=b"Aa").decode("ascii")
            if isinstance(headerdict, dict):
                headerdict["x-amzn-requestid"] = raw
            return raw

        aws_headers.gen_amzn_requestid_long = gen_amzn_requestid_long
        # moto.core.responses imported it by name: patch it there too
        responses.gen_amzn_requestid_long = gen_amzn_requestid_long  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # pragma: no cover
        pass


class _LazyPrivateKey:
    """Generates moto's per-key RSA/ECC private key only when something uses it.

    moto makes an RSA-2048 key pair for every KMS key, symmetric ones included
    (about 50 ms each); provisioning creates one key per table per region and
    never signs with it.
    """

    def __init__(self, make: Callable[[str], Any], key_spec: str) -> None:
        self._make, self._spec, self._key = make, key_spec, None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            if self._key is None:
                self._key = self._make(self._spec)
        return getattr(self._key, name)


def _lazy_kms_keys() -> None:
    try:
        from moto.kms import models as kms_models
        from moto.kms.utils import generate_private_key as make

        def generate_private_key(key_spec: str) -> Any:
            return _LazyPrivateKey(make, key_spec)

        kms_models.generate_private_key = generate_private_key  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # pragma: no cover
        pass


def _direct(service: str, flask_app: WsgiApp) -> WsgiApp:
    """Call moto's handler for ``POST /`` of ``service`` without Flask around it.

    This is what moto's Flask view does (``moto.core.utils.convert_to_flask_response``):
    build moto's request object, call the service's ``dispatch``, turn a
    ``ClientError`` into a 400, and return the status, headers and body, plus the
    CORS header Flask-CORS adds. Flask's request context, URL routing and response
    object cost 30 % of a put; these three services have the one route. Anything
    else (another path or method), or a moto release that changed these
    internals, goes through the Flask app as before.
    """
    try:
        from botocore.exceptions import ClientError
        from moto import backends
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.moto_server.werkzeug_app import BackendRequest

        backend_dict: Any = backends.get_backend(service)  # type: ignore[call-overload]
        handler = backend_dict[DEFAULT_ACCOUNT_ID]["us-east-1"].flask_paths["/"]
    except Exception:  # pragma: no cover - moto's internals moved: keep Flask
        return flask_app

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != "/":
            return flask_app(environ, start_response)
        request = BackendRequest(environ)
        try:
            result = handler(request, request.raw_url, dict(request.headers))
        except ClientError as exc:
            result = 400, {}, exc.response["Error"]["Message"]
        if isinstance(result, tuple) and len(result) == 3:
            status, headers, content = result
        else:
            status, headers, content = 200, {}, result
        code = int(status)
        try:
            phrase = HTTPStatus(code).phrase.upper()
        except ValueError:
            phrase = "UNKNOWN"
        out = [(str(k), str(v)) for k, v in dict(headers).items()]
        if not any(k.lower() == "content-type" for k, _ in out):
            out.append(("Content-Type", "text/html; charset=utf-8"))  # as Flask does
        out.append(("Access-Control-Allow-Origin", "*"))  # as Flask-CORS does
        body = content.encode("utf-8") if isinstance(content, str) else bytes(content or b"")
        start_response(f"{code} {phrase}", out)
        return [body]

    return app


def build_app() -> WsgiApp:
    """moto's WSGI app, with the three services the cluster uses dispatched directly."""
    _speedups()
    _lazy_kms_keys()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    fallback = DomainDispatcherApplication(create_backend_app)
    dynamodb = _direct("dynamodb", create_backend_app("dynamodb"))
    streams = _direct("dynamodbstreams", create_backend_app("dynamodbstreams"))
    kms = _direct("kms", create_backend_app("kms"))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_2012"):
            return dynamodb(environ, start_response)
        if target.startswith("DynamoDBStreams_"):
            return streams(environ, start_response)
        if target.startswith("TrentService."):
            return kms(environ, start_response)
        result: Iterable[bytes] = fallback(environ, start_response)
        return result

    _warm_up(app)
    return app


def _warm_up(app: WsgiApp) -> None:
    """One read-only call per service, so that moto's lazy first-request work (model
    loading, the region list, backend set-up) happens once, before any fork."""
    for service, target, content_type in (
        ("dynamodb", "DynamoDB_20120810.ListTables", "application/x-amz-json-1.0"),
        ("dynamodb", "DynamoDBStreams_20120810.ListStreams", "application/x-amz-json-1.0"),
        ("kms", "TrentService.ListKeys", "application/x-amz-json-1.1"),
    ):
        environ = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "0",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": "2",
            "HTTP_X_AMZ_TARGET": target,
            "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=regionkit/20200101/"
            f"us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b"{}"),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        try:
            result = app(environ, lambda status, headers, exc_info=None: lambda data: None)
            b"".join(result)
        except Exception as exc:  # only a warm-up: the real request will say what is wrong
            sys.stderr.write(f"regionkit moto server: warm-up {target} failed: {exc!r}\n")


class _Handler(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 WSGI handler: buffered bodies, Content-Length framing."""

    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "regionkit-moto"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    return None
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _refuse(self, code: int, reason: str) -> None:
        self.close_connection = True
        body = reason.encode()
        self.wfile.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode("latin-1")
            + body
        )

    def _read_head(self) -> list[tuple[str, str]] | None:
        """Request line and headers, parsed plainly (http.server's email parser costs
        a sixth of a put). None when the connection is done or the request refused."""
        line = self.rfile.readline(65537)
        if not line:
            self.close_connection = True
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._refuse(400, "Bad Request")
            return None
        self.command, self.path, self.request_version = parts
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        fields: list[tuple[str, str]] = []
        while True:
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n"):
                return fields
            if not raw:
                self.close_connection = True
                return None
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or len(fields) >= 200:
                self._refuse(400 if not sep else 431, "Bad Request Header")
                return None
            fields.append((name.strip(), value.strip()))

    def handle_one_request(self) -> None:
        fields = self._read_head()
        if fields is None:
            return
        headers = {name.lower(): value for name, value in fields}
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = self._read_body(headers)
        except ValueError:
            self._refuse(400, "Bad Chunked Body")
            return
        if body is None:
            self.close_connection = True
            return
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in fields:
            key = name.upper().replace("-", "_")
            if key in {"CONTENT_LENGTH", "TRANSFER_ENCODING"}:
                continue
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value

        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return lambda data: None

        try:
            result = self.server.app(environ, start_response)
            try:
                data = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            status, reply_headers = started
        except Exception as exc:  # a moto bug: answer 500 like moto_server does
            sys.stderr.write(f"regionkit moto server: {exc!r}\n")
            status, reply_headers, data = "500 Internal Server Error", [], repr(exc).encode()
        if self.command == "HEAD":
            data = b""
        out = [f"HTTP/1.1 {status}\r\n"]
        out.extend(f"{k}: {v}\r\n" for k, v in reply_headers if k.lower() not in _HOP_BY_HOP)
        if not any(k.lower() == "date" for k, _ in reply_headers):
            out.append(f"Date: {formatdate(usegmt=True)}\r\n")
        out.append(f"Content-Length: {len(data)}\r\n")
        if self.close_connection:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        self.wfile.write("".join(out).encode("latin-1") + data)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: WsgiApp) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # client went away, or we dropped it going dark
            return
        super().handle_error(request, client_address)


class _Runner:
    """Owns the listening server; can close it (refuse) and reopen it on the same port."""

    def __init__(self, host: str, port: int, app: WsgiApp) -> None:
        self.host, self.app = host, app
        self.server: _Server | None = _Server((host, port), app)
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None
        self._serve()

    def _serve(self) -> None:
        assert self.server is not None
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def state(self) -> str:
        return "up" if self.server is not None else "refusing"

    def dark(self) -> None:
        if self.server is None:
            return
        server, self.server = self.server, None
        server.shutdown()
        server.server_close()
        server.drop_connections()

    def light(self) -> None:
        if self.server is not None:
            return
        self.server = _Server((self.host, self.port), self.app)
        self._serve()


def _reply(out: TextIO, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def serve(region: str, host: str, port: int, app: WsgiApp, proto: TextIO, commands: TextIO) -> None:
    """Serve one region until ``commands`` ends; never returns."""
    runner = _Runner(host, port, app)
    _reply(proto, event="ready", port=runner.port, pid=os.getpid(), region=region)
    for line in commands:
        command = line.strip()
        try:
            if command == "dark":
                runner.dark()
            elif command == "light":
                runner.light()
            elif command != "ping":
                _reply(proto, ok=False, error=f"unknown command {command!r}")
                continue
        except OSError as exc:
            _reply(proto, ok=False, error=f"{command} failed: {exc}", state=runner.state)
            continue
        _reply(proto, ok=True, state=runner.state)
    # End of input: the parent is gone (or asked us to go). Leave at once.
    os._exit(0)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the forking process dies (and check it has not already)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util
        import signal

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _zygote(host: str, specs: list[str]) -> int:
    """Import moto and build the app once, then fork one server per region.

    Each spec is ``region:command_fd:reply_fd:log_path``; the fds were passed
    down by the parent (:mod:`regions.local.servers`). The forked children start
    in milliseconds and share the imported code copy-on-write. This process only
    reaps them, and exits when the last one has.
    """
    children: list[tuple[str, int, int, str]] = []
    for spec in specs:
        name, cmd_text, reply_text, log_name = spec.split(":", 3)
        children.append((name, int(cmd_text), int(reply_text), log_name))
    app = build_app()
    me = os.getpid()
    for region, cmd_fd, reply_fd, log_path in children:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the region's server
            try:
                os.setsid()  # its own process group: stopped and killed on its own
                _die_with_parent(me)
                for _, c, r, _ in children:  # the other regions' pipes are not ours
                    if c != cmd_fd:
                        os.close(c)
                    if r != reply_fd:
                        os.close(r)
                log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.dup2(log_fd, 2)
                os.dup2(log_fd, 1)
                os.close(log_fd)
                import random

                random.seed()  # forked children must not share moto's random streams
                try:
                    from moto.moto_api._internal import mock_random

                    mock_random.seed()
                except (ImportError, AttributeError):  # pragma: no cover
                    pass
                proto = os.fdopen(reply_fd, "w", buffering=1, encoding="utf-8")
                commands = os.fdopen(cmd_fd, "r", encoding="utf-8")
                serve(region, host, 0, app, proto, commands)
            except BaseException as exc:  # never return into the zygote's loop
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"regionkit moto server {region}: {exc!r}\n")
                    sys.stderr.flush()
                os._exit(70)
    for _, cmd_fd, reply_fd, _ in children:
        os.close(cmd_fd)
        os.close(reply_fd)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)  # no interpreter tear-down: moto's module graph takes 0.3 s to free
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regionkit-moto-server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", help="serve this region in this process")
    parser.add_argument(
        "--zygote",
        action="append",
        metavar="REGION:CMD_FD:REPLY_FD:LOG",
        help="fork a server per spec instead (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.host not in {"127.0.0.1", "localhost", "::1"}:
        sys.stderr.write(f"refusing to listen on non-loopback address {args.host!r}\n")
        return 2
    if args.zygote:
        return _zygote(args.host, args.zygote)
    if not args.region:
        parser.error("give --region, or --zygote specs")

    # The protocol channel is a private copy of stdout; stdout itself becomes stderr,
    # so a stray print() inside moto can never corrupt the protocol.
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(args.region, args.host, args.port, build_app(), proto, sys.stdin)
    return 0  # pragma: no cover - serve() never returns


if __name__ == "__main__":
    sys.exit(main())
