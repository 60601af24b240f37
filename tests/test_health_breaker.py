"""Issue 15 item 4: a breaker that cannot leak its half-open probe (injected clock, no sleeps).

Each leak path the review found is replayed: ``route()`` alone, a non-retryable answer
(a failed condition proves the region alive), a caller that took the probe and died,
and an interrupt in the middle of the call.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from regions.health import BreakerState, RegionHealth
from regions.router import RegionRouter
from residency.policy import Policy, load_policy
from residency.settings import RouterConfig

ROOT = Path(__file__).resolve().parent.parent
EU1, EU2 = "eu-central-1", "eu-west-1"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeClient:
    """A DynamoDB client whose next answer per region the test chooses."""

    def __init__(self, region: str, script: dict[str, Any]) -> None:
        self.region, self.script = region, script

    def _answer(self, op: str) -> dict[str, Any]:
        todo = self.script.get(self.region)
        if isinstance(todo, BaseException):
            raise todo
        if callable(todo):
            todo()
        return {}

    def get_item(self, **_: Any) -> dict[str, Any]:
        return self._answer("GetItem")

    def put_item(self, **_: Any) -> dict[str, Any]:
        return self._answer("PutItem")


class FakeClients:
    def __init__(self) -> None:
        self.script: dict[str, Any] = {}
        self.calls: list[str] = []

    def client(self, service: str, region: str) -> FakeClient:
        assert service == "dynamodb"
        self.calls.append(region)
        return FakeClient(region, self.script)


def refused(region: str) -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url=f"https://dynamodb.{region}.amazonaws.com")


def condition_failed() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ConditionalCheckFailedException", "Message": "failed"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutItem",
    )


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(ROOT / "policies" / "social-network.yaml")


def _router(policy: Policy, clock: Clock) -> tuple[RegionRouter, FakeClients]:
    clients = FakeClients()
    health = RegionHealth(
        policy.regions, failures=1, reset_seconds=5, probe_lease_seconds=3, clock=clock
    )
    router = RegionRouter(
        policy,
        region=EU2,
        clients=clients,
        health=health,
        config=RouterConfig(mode="aws", region=EU2, failover_attempts=3),
    )
    return router, clients


def _open(router: RegionRouter, clients: FakeClients, clock: Clock) -> None:
    clients.script[EU2] = refused(EU2)
    router.get("content", {"pk": "post-1"})  # fails over to the next replica
    assert router.health.status(EU2).breaker is BreakerState.OPEN
    clients.script.pop(EU2)
    clock.t += 5  # reset period over: the next call may probe


def test_route_alone_never_takes_the_probe(policy: Policy) -> None:
    clock = Clock()
    router, clients = _router(policy, clock)
    _open(router, clients, clock)
    for _ in range(10):  # the `route` CLI, dashboards, callers that only look
        assert router.route("content").region == EU2  # the route the next call would probe
    assert router.health.status(EU2).breaker is BreakerState.HALF_OPEN
    clients.calls.clear()
    router.get("content", {"pk": "post-1"})
    assert clients.calls == [EU2]  # the probe was still there for a real call
    assert router.health.status(EU2).breaker is BreakerState.CLOSED


def test_minting_a_user_id_never_takes_the_probe(policy: Policy) -> None:
    """new_user_id only looks at the breaker to pick a home; a real call keeps the probe."""
    clock = Clock()
    router, clients = _router(policy, clock)
    _open(router, clients, clock)
    router.health.record_failure(EU1, "refused")  # the first EU home is out: EU2 is looked at
    for _ in range(10):
        assert router.new_user_id(country="IE")  # IE: EU, homes eu-central-1, eu-west-1
    clients.calls.clear()
    router.get("content", {"pk": "post-1"})
    assert clients.calls == [EU2]
    assert router.health.status(EU2).breaker is BreakerState.CLOSED


def test_a_failed_condition_is_proof_of_life(policy: Policy) -> None:
    clock = Clock()
    router, clients = _router(policy, clock)
    _open(router, clients, clock)
    clients.script[EU2] = condition_failed()
    with pytest.raises(ClientError):
        router.transport.call(router.store.decider("content", None, "write"), "write", _put)
    assert router.health.status(EU2).breaker is BreakerState.CLOSED
    assert router.health.available(EU2)


def _put(route: Any, client: Any) -> Any:
    return client.put_item(TableName=route.table_name, Item={})


def test_a_caller_that_took_the_probe_and_died_blocks_for_one_lease_only(
    policy: Policy,
) -> None:
    clock = Clock()
    router, clients = _router(policy, clock)
    _open(router, clients, clock)

    def die() -> None:  # a thread that decides (takes the lease) and ends before calling
        router.store.decider("content", None, "read")(())

    t = threading.Thread(target=die)
    t.start()
    t.join()
    assert not router.health.available(EU2)  # the lease is out
    clock.t += 2.9
    assert not router.health.available(EU2)
    clock.t += 0.1  # the lease lapsed: the next caller probes
    clients.calls.clear()
    router.get("content", {"pk": "post-1"})
    assert clients.calls == [EU2]
    assert router.health.status(EU2).breaker is BreakerState.CLOSED


def test_the_review_reproduction_no_longer_locks_a_region_out(policy: Policy) -> None:
    """Available at t=5; before the fix, unavailable forever at t=500."""
    clock = Clock()
    router, clients = _router(policy, clock)
    _open(router, clients, clock)
    assert router.health.would_admit(EU2)
    router.route("content")
    router.store.decider("content", None, "read")(())  # a leak of the old kind
    clock.t = 500
    assert router.health.available(EU2)


def test_an_interrupt_mid_call_gives_the_probe_back(policy: Policy) -> None:
    clock = Clock()
    router, clients = _router(policy, clock)
    _open(router, clients, clock)

    def interrupt() -> None:
        raise KeyboardInterrupt

    clients.script[EU2] = interrupt
    with pytest.raises(KeyboardInterrupt):
        router.get("content", {"pk": "post-1"})
    clients.script.pop(EU2)
    assert router.health.status(EU2).breaker is BreakerState.HALF_OPEN
    assert router.health.available(EU2)  # no lease held: the next caller probes at once


def test_a_failed_probe_reopens_for_a_full_reset_period() -> None:
    clock = Clock()
    h = RegionHealth([EU1], failures=1, reset_seconds=5, probe_lease_seconds=3, clock=clock)
    h.record_failure(EU1)
    clock.t = 5
    assert h.available(EU1)
    h.record_failure(EU1)
    assert h.status(EU1).breaker is BreakerState.OPEN
    clock.t = 9.9
    assert not h.available(EU1) and not h.would_admit(EU1)
    clock.t = 10
    assert h.would_admit(EU1) and h.would_admit(EU1)  # looking takes nothing
    assert h.available(EU1) and not h.available(EU1)  # one probe at a time


def test_peeking_is_per_thread() -> None:
    clock = Clock()
    h = RegionHealth([EU1], failures=1, reset_seconds=0, clock=clock)
    h.record_failure(EU1)
    seen: list[bool] = []
    with h.peeking():
        assert h.available(EU1)
        t = threading.Thread(target=lambda: seen.append(h.available(EU1)))
        t.start()
        t.join()  # the other thread was not peeking: it took the lease
        assert not h.available(EU1)
    assert seen == [True]
