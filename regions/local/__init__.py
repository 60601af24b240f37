"""The embedded local cluster: one moto server per region, provisioned from the policy,
with the global-table replication emulator and fault injection.

Importing this package is cheap and imports neither moto nor boto3; the names
below load their modules on first use::

    from regions.local import LocalCluster
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regions.local.clients import ClusterClients, make_client
    from regions.local.cluster import LocalCluster
    from regions.local.control import ControlClient
    from regions.local.provision import provision
    from regions.local.servers import MotoServer, start_servers

__all__ = [
    "ClusterClients",
    "ControlClient",
    "LocalCluster",
    "MotoServer",
    "make_client",
    "provision",
    "start_servers",
]

_WHERE = {
    "ClusterClients": "regions.local.clients",
    "make_client": "regions.local.clients",
    "LocalCluster": "regions.local.cluster",
    "ControlClient": "regions.local.control",
    "provision": "regions.local.provision",
    "MotoServer": "regions.local.servers",
    "start_servers": "regions.local.servers",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'regions.local' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
