"""One client-provider protocol: ``client(service, region)``, boto3's argument order.

The real pool, the local cluster's clients and the simulation's in-process clients
are all a :class:`residency.clients.ClientProvider`, and each hands out a client for
the service and region asked for (building a client sends no request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import regions
from regions.local.clients import ClusterClients
from regions.local.sim import InProcessClients
from regions.pool import ClientPool
from residency.clients import ClientProvider
from residency.settings import RouterConfig

ROOT = Path(__file__).resolve().parent.parent
EU1, US = "eu-west-1", "us-east-1"
ENDPOINTS = {EU1: "http://127.0.0.1:4000", US: "http://127.0.0.1:4001"}


def _providers() -> dict[str, Any]:
    return {
        "pool": ClientPool(RouterConfig(mode="local", endpoints=ENDPOINTS)),
        "cluster": ClusterClients(ENDPOINTS),
        "sim": InProcessClients(),
    }


@pytest.mark.parametrize("name", ["pool", "cluster", "sim"])
def test_every_provider_hands_out_the_client_asked_for(name: str) -> None:
    provider = _providers()[name]
    assert isinstance(provider, ClientProvider)
    for service in ("dynamodb", "dynamodbstreams"):
        for region in (EU1, US):
            client = provider.client(service, region)
            assert client.meta.service_model.service_name == service
            assert client.meta.region_name == region
            assert provider.client(service, region) is client  # cached: built once
    assert not hasattr(provider, "dynamodb") and not hasattr(provider, "streams")


def test_there_is_one_protocol() -> None:
    assert regions.ClientProvider is ClientProvider  # the base layer's, re-exported


def test_the_pool_and_its_router_close_and_are_context_managers() -> None:
    from regions.router import RegionRouter
    from residency.policy import load_policy

    settings = RouterConfig(mode="local", endpoints=ENDPOINTS)
    with ClientPool(settings) as pool:
        client = pool.client("dynamodb", EU1)
    assert pool.client("dynamodb", EU1) is not client  # closed: the next one is new
    pool.close()

    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    with RegionRouter(policy, config=settings.model_copy(update={"region": EU1})) as router:
        assert isinstance(router.clients, ClientPool)
        owned = router.clients
        built = owned.client("dynamodb", EU1)
    assert owned.client("dynamodb", EU1) is not built  # the router closed the pool it made
    owned.close()
