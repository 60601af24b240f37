"""The program of one region's moto server process (started by :mod:`regions.local.servers`).

Run as ``python -P regions/local/_server_main.py --region eu-west-1 [--port 0]``.

It serves **moto's own WSGI apps**: the Flask app ``create_backend_app`` builds
for each service, with moto's own view (``convert_to_flask_response``: request
normalisation, the request recorder, error mapping), and
``DomainDispatcherApplication``, the object ``moto_server`` serves, for anything
else. Nothing of moto is copied. Two things differ from ``moto_server``, each
measured (``benchmarks/bench_replication.py``):

* **the HTTP server is waitress**, a production WSGI server: HTTP/1.1 keep-alive,
  one event loop for the connections and a thread pool for the app. moto_server
  runs werkzeug's development server, which answers every request with
  ``Connection: close``, so each boto3 call paid a TCP handshake and a thread.
* **five costs of moto are skipped**: the dispatcher's scan of every service
  module on disk, per request (the cluster's calls name their service in
  ``X-Amz-Target``, so they go straight to that service's app, the one the
  dispatcher would have picked); ``inspect.getmembers`` on the response class,
  per request (``fastjson.memoise_method_names``); an RSA key pair per KMS key,
  made only when used (:func:`defer_kms_key_pairs`); and moto's shape-walking
  serializer for results that carry items, written as the same JSON directly
  (:mod:`regions.local.fastjson`); and the re-casting of every value in every
  comparison and table sort (:mod:`regions.local.fastvalues`).

Two things are added. The replication emulator's changes are applied by moto's own
backend inside this process (:mod:`regions.local.apply_endpoint`), as DynamoDB applies
replicated writes internally. And moto's DynamoDB writes run one at a time
(:mod:`regions.local.atomic`): moto takes no lock, and under this server's threads a
stream handed out one sequence number twice and a conditional write could race another.

``tests/test_local_server_contract.py`` fails loudly if either stops working
(moto renames or changes what is used here, or a request falls back to the
dispatcher, or the server stops keeping connections alive); pyproject.toml pins
moto to the range that test was run against.

The process talks to its parent over a line protocol on its standard input and
a private copy of its original standard output (anything moto prints goes to
standard error, which the parent keeps in a log file)::

    parent → child          child → parent
    (start-up)              {"event": "ready", "port": 41234, "pid": 123, ...}
    "dark"                  {"ok": true, "state": "refusing"}  # listener and every
                                                               # connection closed
    "light"                 {"ok": true, "state": "up"}        # listening again,
                                                               # same port, same data
    "ping"                  {"ok": true, "state": ...}
    "expire 1767225600.5"   {"ok": true, "state": ..., "expired": [{"table": "content",
                                                                   "count": 3}, ...]}
                            # DynamoDB's TTL process, run now: regions.local.expiry

End of input means the parent is gone (or wants us gone): the process exits at
once. With the parent's ``PR_SET_PDEATHSIG`` (which also reaches a SIGSTOPped
process) it is the second guarantee that no server outlives its owner.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

THREADS = 8
"""waitress worker threads per server: requests in progress at once (idle keep-alive
connections wait in waitress's event loop and hold none)."""

IDLE_TIMEOUT = 120
"""Seconds an idle keep-alive connection stays open (urllib3 reconnects after)."""

ROUTES = {
    "DynamoDB_20120810.": "dynamodb",
    "DynamoDBStreams_20120810.": "dynamodbstreams",
    "TrentService.": "kms",
}
"""``X-Amz-Target`` prefix → moto service, for the three services the cluster calls."""


class _LazyPrivateKey:
    """moto's private key for one KMS key, generated the first time something uses it."""

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


def defer_kms_key_pairs() -> Callable[[str], Any]:
    """moto makes an RSA-2048 key pair for every KMS key, symmetric ones included
    (about 55 ms of CPU each); provisioning creates one key per table per region
    and never signs with it. Make the pair on first use instead. Returns the
    replacement of ``moto.kms.models.generate_private_key`` (the contract test
    checks moto still calls it, and that signing still works)."""
    from moto.kms import models as kms_models
    from moto.kms.utils import generate_private_key

    def lazy_private_key(key_spec: str) -> Any:
        return _LazyPrivateKey(generate_private_key, key_spec)

    kms_models.generate_private_key = lazy_private_key  # type: ignore[attr-defined]
    return lazy_private_key


def build_app(region: str) -> WsgiApp:
    """moto's own WSGI apps, as ``moto_server`` serves them (``moto/server.py``), and the
    replica side of the replication emulator (:mod:`regions.local.apply_endpoint`).

    ``DomainDispatcherApplication`` finds a request's service by scanning every
    moto service module on disk, per request (a fifth of a put's CPU). The
    cluster's own calls name their service in ``X-Amz-Target``, so they go
    straight to moto's app for that service, the one ``create_backend_app``
    builds and the dispatcher would have picked; everything else goes through
    the dispatcher.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    _sibling("fastjson").install()  # item results as JSON, method listing memoised
    _sibling("atomic").install()  # writes and stream appends one at a time, as in DynamoDB
    _sibling("fastvalues").install()  # values cast once, tables sorted on cast keys
    defer_kms_key_pairs()
    dispatcher: WsgiApp = DomainDispatcherApplication(create_backend_app)
    apps: dict[str, WsgiApp] = {
        prefix: create_backend_app(service)  # type: ignore[arg-type]
        for prefix, service in ROUTES.items()
    }
    replication = _sibling("apply_endpoint")
    apps[replication.PREFIX] = replication.make_app(region)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        prefix = target[: target.find(".") + 1]
        return apps.get(prefix, dispatcher)(environ, start_response)

    return app


class Listener:
    """Owns the HTTP server; can close it (refuse) and open it again on the same port.

    The server is waitress: HTTP/1.1 keep-alive, one event loop for the
    connections and a pool of threads for the app.
    """

    def __init__(self, host: str, port: int, app: WsgiApp) -> None:
        self.host, self.port, self.app = host, port, app
        self.server: Any = None
        self._sockets: dict[int, Any] = {}
        self._loop: threading.Thread | None = None
        self.light()

    @property
    def state(self) -> str:
        return "up" if self.server is not None else "refusing"

    def light(self) -> None:
        if self.server is not None:
            return
        from waitress.server import create_server

        # "Task queue depth is N" for every request that waits for a thread: noise.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        sockets: dict[int, Any] = {}  # waitress's socket map: listener, trigger, connections
        server = create_server(
            self.app,
            map=sockets,
            host=self.host,
            port=self.port,
            threads=THREADS,
            channel_timeout=IDLE_TIMEOUT,
            connection_limit=1000,
            asyncore_use_poll=True,
            ident="regionkit-moto",
        )
        self.port = int(server.effective_port)  # the same port from the second time on
        self._loop = threading.Thread(target=server.run, daemon=True, name="http")
        self._loop.start()
        self.server, self._sockets = server, sockets

    def dark(self) -> None:
        """Close the listening socket and every open connection."""
        if self.server is None:
            return
        from waitress import wasyncore

        server, self.server, sockets = self.server, None, self._sockets
        # In the event loop's own thread: close everything in its map, which ends it.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets, ignore_all=True))
        if self._loop is not None:
            self._loop.join(5)
        server.task_dispatcher.shutdown(timeout=1)


def _reply(out: TextIO, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def _sibling(name: str) -> Any:
    """A module of this package loaded by path, once: this process imports nothing of
    regionkit's packages (see servers.py); the siblings it loads need only the standard
    library and moto."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        f"regionkit_{name}", Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def _expire(now: float) -> list[dict[str, Any]]:
    """DynamoDB's TTL process over everything this region's process holds."""
    return [{"table": e.table, "count": e.count} for e in _sibling("expiry").expire_backends(now)]


def serve(region: str, host: str, port: int, proto: TextIO, commands: TextIO) -> None:
    """Serve one region until ``commands`` ends; never returns."""
    listener = Listener(host, port, build_app(region))
    _reply(proto, event="ready", port=listener.port, pid=os.getpid(), region=region)
    for line in commands:
        command, _, arg = line.strip().partition(" ")
        extra: dict[str, Any] = {}
        try:
            if command == "dark":
                listener.dark()
            elif command == "light":
                listener.light()
            elif command == "expire":
                extra["expired"] = _expire(float(arg))
            elif command != "ping":
                _reply(proto, ok=False, error=f"unknown command {command!r}")
                continue
        except (OSError, ValueError) as exc:
            _reply(proto, ok=False, error=f"{command} failed: {exc}", state=listener.state)
            continue
        _reply(proto, ok=True, state=listener.state, **extra)
    # End of input: the parent is gone (or asked us to go). Leave at once, without
    # the interpreter's tear-down of moto's module graph.
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regionkit-moto-server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", required=True, help="the region this process stands for")
    args = parser.parse_args(argv)
    if args.host not in {"127.0.0.1", "localhost"}:
        sys.stderr.write(f"refusing to listen on non-loopback address {args.host!r}\n")
        return 2
    # The protocol channel is a private copy of stdout; stdout itself becomes stderr,
    # so a stray print() inside moto can never corrupt the protocol.
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(args.region, args.host, args.port, proto, sys.stdin)
    return 0  # pragma: no cover - serve() never returns


if __name__ == "__main__":
    sys.exit(main())
