"""boto3 clients for the local cluster: loopback only, fake credentials, bounded waits.

:func:`make_client` is the one factory (the cluster, the fixtures, the benchmark
and anyone else who needs a client to a local region use it), and
:class:`ClusterClients` caches one client per (service, region): it is a
:class:`residency.clients.ClientProvider` (``client(service, region)``), so the
router, the replication emulator and the audit take it as they take a
:class:`regions.pool.ClientPool`.

Two profiles exist because the two users fail differently:

* ``CONTROL``: provisioning, tests, fault checks. Short timeouts and a single
  attempt, so a region outage shows at once instead of being retried away
  (moto answers an unimplemented call with HTTP 500, which boto3 would retry).
* ``REPLICATION``: the emulator's pollers and appliers. A longer read timeout and
  a larger connection pool; still a single attempt, as the emulator keeps its
  own backlog and retries on its next pass.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from residency.errors import SettingsError
from residency.settings import is_loopback_url

__all__ = ["CONTROL", "REPLICATION", "ClientProfile", "ClusterClients", "make_client"]

FAKE_ACCESS_KEY = "regionkit-local"
FAKE_SECRET_KEY = "regionkit-local"  # the local cluster accepts any credentials


@dataclass(frozen=True)
class ClientProfile:
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    max_attempts: int = 1
    max_pool_connections: int = 10


CONTROL = ClientProfile(connect_timeout=1.0, read_timeout=2.0, max_pool_connections=10)
REPLICATION = ClientProfile(connect_timeout=1.0, read_timeout=5.0, max_pool_connections=16)

_session_lock = threading.Lock()
_session: Any = None


def _boto_session() -> Any:
    """One botocore-backed session for all local clients (its loaders cache the models)."""
    global _session
    with _session_lock:
        if _session is None:
            import boto3

            _session = boto3.session.Session(
                aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY
            )
        return _session


def make_client(
    service: str,
    region: str,
    endpoint_url: str,
    *,
    profile: ClientProfile = CONTROL,
) -> Any:
    """A boto3 client for ``service`` in a local region, refusing non-loopback endpoints."""
    if not is_loopback_url(endpoint_url):
        raise SettingsError(
            setting="endpoint",
            value=endpoint_url,
            reason="the local cluster is reached on loopback only",
            fix="use the http://127.0.0.1:PORT endpoint the cluster reports",
        )
    from botocore.config import Config

    config = Config(
        region_name=region,
        connect_timeout=profile.connect_timeout,
        read_timeout=profile.read_timeout,
        retries={"max_attempts": profile.max_attempts, "mode": "standard"},
        max_pool_connections=profile.max_pool_connections,
        tcp_keepalive=True,
    )
    session = _boto_session()
    with _session_lock:  # creating clients from one session is not thread-safe
        return session.client(
            service,
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=FAKE_ACCESS_KEY,
            aws_secret_access_key=FAKE_SECRET_KEY,
            config=config,
        )


class ClusterClients:
    """Cached clients per (service, region) over a fixed endpoint map.

    A :class:`residency.clients.ClientProvider`.
    """

    def __init__(self, endpoints: Mapping[str, str], profile: ClientProfile = CONTROL) -> None:
        for url in endpoints.values():
            if not is_loopback_url(url):
                raise SettingsError(
                    setting="endpoints",
                    value=url,
                    reason="the local cluster is reached on loopback only",
                    fix="use the http://127.0.0.1:PORT endpoints the cluster reports",
                )
        self.endpoints = dict(endpoints)
        self.profile = profile
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str) -> Any:
        client = self._clients.get((service, region))
        if client is not None:
            return client
        try:
            endpoint = self.endpoints[region]
        except KeyError:
            from residency.errors import UnknownRegion

            raise UnknownRegion(
                region=region,
                reason="the local cluster runs no server for it",
                known=", ".join(self.endpoints),
            ) from None
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                client = make_client(service, region, endpoint, profile=self.profile)
                self._clients[(service, region)] = client
            return client

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            close = getattr(client, "close", None)
            if close is not None:
                close()
