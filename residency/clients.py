"""The one way regionkit gets an AWS client: ``provider.client(service, region)``.

Nothing in regionkit builds a boto3 client where it uses one. The router, the
conflict log, the replication emulator, the drills and the audit are all handed a
:class:`ClientProvider` and ask it for ``client("dynamodb", region)``,
``client("dynamodbstreams", region)``, ``client("sts", region)`` and so on, in
boto3's own argument order (service first).

:class:`regions.pool.ClientPool` is the real one (lazy boto3 clients, one per
service and region); the local cluster's :class:`regions.local.clients.ClusterClients`
and the simulation's :class:`regions.local.sim.InProcessClients` plug in the same
way, and a test passes its own fake. Nothing patches boto3 by import path.

The protocol lives in the base layer so the audit (``residency.audit``) can take
its clients without importing ``regions``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["ClientProvider", "error_code"]


@runtime_checkable
class ClientProvider(Protocol):
    """Hands out a boto3-compatible client for a service in a region."""

    def client(self, service: str, region: str) -> Any: ...


def error_code(exc: BaseException) -> str:
    """The AWS error code of a client's error (``ThrottlingException``), else the
    exception's class name: what regionkit reports instead of the service's message,
    which may quote a value it was sent."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__
