"""The client pool: one boto3 client per (service, region, endpoint) per process.

Clients are created lazily, once, under a lock, and then read without one:
after warm-up no client is ever built on the hot path. Callers may pass their
own :class:`~residency.clients.ClientProvider` (a pool over in-process moto, a
stub in tests), which is how the local cluster plugs in; nothing patches boto3 by
import path. ``client(service, region)`` is the one method: a dict lookup on
``(service, region)`` once the client exists.

Retries: a pool built for the router (the default, ``retries="router"``) makes
botocore try **once** (``total_max_attempts=1``); the router's transport owns the
one retry policy (throttling in place, failover on no answer). A pool used outside
the router (the audit's scans, the conflict log's admin calls) passes
``retries="botocore"`` and gets botocore's ``standard`` mode with
``RouterConfig.max_attempts``.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from residency.errors import SettingsError
from residency.settings import RouterConfig, is_loopback_url

__all__ = ["ClientPool", "control_plane_pool"]


class ClientPool:
    """Thread-safe lazy boto3 clients configured by a :class:`RouterConfig`."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        session: Any = None,
        max_pool_connections: int = 32,
        retries: Literal["router", "botocore"] = "router",
    ) -> None:
        self.config = config
        self.retries = retries
        self._session = session
        self._max_pool = max_pool_connections
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.created = 0  # how many clients were built (the benchmark checks it stays flat)

    def client(self, service: str, region: str) -> Any:
        c = self._clients.get((service, region))
        return c if c is not None else self._create(service, region)

    def close(self) -> None:
        """Close every client this pool built (their HTTP connection pools)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            closer = getattr(c, "close", None)
            if callable(closer):
                closer()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _endpoint(self, region: str) -> str | None:
        url = self.config.endpoint_for(region)
        if self.config.mode == "local":
            if url is None:
                raise SettingsError(
                    setting="endpoints",
                    value=region,
                    reason=f"local mode has no endpoint for {region}",
                    fix="pass RouterConfig(endpoints={...}) (or build the router with "
                    "RegionRouter.from_env() after `regionkit local up`), or use mode='aws' "
                    "for real AWS",
                )
            if not is_loopback_url(url):  # settings validate this too; never trust twice-removed
                raise SettingsError(
                    setting="endpoints",
                    value=url,
                    reason="local mode refuses non-loopback endpoints",
                    fix="use 127.0.0.1",
                )
        return url

    def _create(self, service: str, region: str) -> Any:
        with self._lock:
            existing = self._clients.get((service, region))
            if existing is not None:
                return existing
            import boto3
            from botocore.config import Config

            s = self.config
            config = Config(
                region_name=region,
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                retries={"mode": "standard", "total_max_attempts": 1}
                if self.retries == "router"
                else {"mode": "standard", "total_max_attempts": s.max_attempts},
                max_pool_connections=self._max_pool,
                tcp_keepalive=True,
            )
            if self._session is None:
                # One session per pool, built once: a session per client would load the
                # service models again for every region (hundreds of ms on a busy host,
                # paid on the failover path when the next region's client is first used).
                self._session = boto3.session.Session()
            session: Any = self._session
            kwargs: dict[str, Any] = {"config": config, "region_name": region}
            endpoint = self._endpoint(region)
            if endpoint:
                kwargs["endpoint_url"] = endpoint
            if s.mode == "local":  # the local cluster accepts any credentials
                kwargs.update(
                    aws_access_key_id="regionkit-local", aws_secret_access_key="regionkit-local"
                )
            client = session.client(service, **kwargs)
            self._clients[(service, region)] = client
            self.created += 1
            return client


def control_plane_pool(config: RouterConfig) -> ClientPool:
    """A pool for control-plane calls (STS, FIS, CloudWatch, KMS, resource policies):
    seconds-long timeouts and botocore's retries, not the router's fail-fast ones.
    Such a call comes once, often after all the work (``kms:Sign`` of a report)."""
    timeouts = {"connect_timeout": 5.0, "read_timeout": 30.0}
    return ClientPool(config.model_copy(update=timeouts), retries="botocore")
