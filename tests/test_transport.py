"""Issue 15 items 2 and 3: the router's one retry policy, and hedged reads.

No sleeps: the transport's backoff sleep is injected, and hedging is driven by events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from regions.health import BreakerState, RegionHealth
from regions.pool import ClientPool
from regions.routing import Route
from regions.transport import HedgePolicy, RetryPolicy, Transport, classify, region_of
from residency.errors import BackendError, RegionUnavailable, Throttled
from residency.settings import RouterConfig

A, B, C = "eu-west-1", "eu-central-1", "us-east-1"


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetItem",
    )


def decider(*regions: str, data_class: str = "content") -> Callable[[tuple[str, ...]], Route]:
    chain = [Route(r, "content", "test", i > 0, data_class) for i, r in enumerate(regions)]

    def decide(exclude: tuple[str, ...]) -> Route:
        for r in chain:
            if r.region not in exclude:
                return r
        raise RegionUnavailable(data_class=data_class, scope="any replica", reason="none left")

    return decide


class Clients:
    def client(self, service: str, region: str) -> str:
        return region


class Script:
    """fn(route, client): answers per region from a list of outcomes, recording each call."""

    def __init__(self, **per_region: list[Any]) -> None:
        self.todo = {k.replace("_", "-"): list(v) for k, v in per_region.items()}
        self.calls: list[str] = []

    def __call__(self, route: Route, client: Any) -> Any:
        self.calls.append(route.region)
        out = self.todo[route.region].pop(0)
        if isinstance(out, BaseException):
            raise out
        return out


def transport(**kw: Any) -> tuple[Transport, RegionHealth, list[float]]:
    health = RegionHealth([A, B, C], failures=2, reset_seconds=5, clock=lambda: 0.0)
    slept: list[float] = []
    t = Transport(Clients(), health, sleep=slept.append, **kw)
    return t, health, slept


def test_classification() -> None:
    assert classify(client_error("ProvisionedThroughputExceededException")) == "throttle"
    assert classify(client_error("ThrottlingException")) == "throttle"
    assert classify(client_error("InternalServerError", 500)) == "failover"
    assert classify(client_error("SomethingNew", 503)) == "failover"  # any 5xx
    assert classify(ReadTimeoutError(endpoint_url="https://x")) == "failover"
    assert classify(EndpointConnectionError(endpoint_url="https://x")) == "failover"
    assert classify(client_error("ConditionalCheckFailedException")) == "answer"
    assert classify(ValueError("bug")) == "other"


def test_throttling_is_retried_in_the_same_region_with_backoff() -> None:
    t, health, slept = transport(policy=RetryPolicy(throttle_attempts=3))
    fn = Script(eu_west_1=[client_error("ThrottlingException")] * 2 + ["ok"])
    assert t.call(decider(A, B), "read", fn) == ("ok", decider(A)(()))
    assert fn.calls == [A, A, A]
    assert len(slept) == 2 and all(0 <= s <= 1.0 for s in slept)
    assert t.throttle_retries == 2 and t.failovers == 0
    assert health.status(A).consecutive_failures == 0


def test_throttling_that_persists_is_the_callers_not_a_failover() -> None:
    t, health, _ = transport(policy=RetryPolicy(throttle_attempts=2))
    fn = Script(eu_west_1=[client_error("ThrottlingException")] * 2)
    with pytest.raises(Throttled) as info:  # typed, reads as writes, DynamoDB's as the cause
        t.call(decider(A, B), "read", fn)
    assert fn.calls == [A, A]
    assert (info.value.region, info.value.code) == (A, "ThrottlingException")
    assert isinstance(info.value.__cause__, ClientError)
    assert health.status(A).breaker is BreakerState.CLOSED  # throttling proves it alive
    fn = Script(eu_west_1=[client_error("ThrottlingException")] * 2)
    with pytest.raises(Throttled):  # one named region, no failover: the same
        t.call_at(decider(A, B)(()), fn)


def test_an_answer_after_throttling_carries_no_chained_throttle() -> None:
    """The retries run outside the first attempt's handler: what the caller gets is the
    answer that ended them, with no earlier exception chained to it."""
    t, _, _ = transport(policy=RetryPolicy(throttle_attempts=3))
    fn = Script(
        eu_west_1=[client_error("ThrottlingException"), client_error("ValidationException")]
    )
    with pytest.raises(ClientError) as info:
        t.call(decider(A, B), "read", fn)
    assert fn.calls == [A, A]
    assert info.value.__context__ is None and info.value.__cause__ is None


@pytest.mark.parametrize(
    "fault",
    [
        ReadTimeoutError(endpoint_url="https://x"),
        EndpointConnectionError(endpoint_url="https://x"),
        client_error("InternalServerError", 500),
    ],
    ids=["read-timeout", "refused", "5xx"],
)
def test_no_answer_fails_over_at_once(fault: BaseException) -> None:
    t, health, slept = transport()
    fn = Script(eu_west_1=[fault], eu_central_1=["ok"])
    result, route = t.call(decider(A, B), "write", fn)
    assert (result, route.region, fn.calls) == ("ok", B, [A, B])
    assert health.status(A).consecutive_failures == 1 and t.failovers == 1
    assert all(s <= 0.05 for s in slept)


def test_every_region_failing_is_one_backend_error() -> None:
    t, _, _ = transport(policy=RetryPolicy(failover_attempts=3))
    down = EndpointConnectionError(endpoint_url="https://x")
    fn = Script(eu_west_1=[down], eu_central_1=[down], us_east_1=[down])
    with pytest.raises(BackendError, match="every region tried failed"):
        t.call(decider(A, B, C), "write", fn)
    assert fn.calls == [A, B, C]


def test_a_failed_condition_is_returned_untouched_and_counts_as_life() -> None:
    t, health, _ = transport()
    health.record_failure(A)
    fn = Script(eu_west_1=[client_error("ConditionalCheckFailedException")])
    with pytest.raises(ClientError) as info:
        t.call(decider(A, B), "write", fn)
    assert fn.calls == [A] and region_of(info.value, "?") == A
    assert health.status(A).consecutive_failures == 0


def test_router_pool_makes_botocore_try_once() -> None:
    s = RouterConfig(mode="aws", region=A)
    router_pool = ClientPool(s)
    other = ClientPool(s, retries="botocore")
    try:
        assert router_pool.client("dynamodb", A).meta.config.retries["total_max_attempts"] == 1
        cfg = other.client("dynamodb", A).meta.config
        assert cfg.retries["total_max_attempts"] == s.max_attempts
        c = router_pool.client("dynamodb", A).meta.config
        assert (c.connect_timeout, c.read_timeout) == (0.5, 1.0)
    finally:
        router_pool.close()
        other.close()


# --- hedged reads ------------------------------------------------------------------------


def _hedging(**kw: Any) -> HedgePolicy:
    return HedgePolicy(classes=frozenset({"content"}), **kw)


def test_a_slow_read_is_hedged_and_the_first_answer_wins() -> None:
    t, _, _ = transport(hedge=_hedging(cold_delay_s=0.0, min_delay_s=0.0))
    release = threading.Event()

    def fn(route: Route, client: Any) -> str:
        if route.region == A:
            release.wait(30)  # a slow region; released by the test, not by time
            return "slow"
        return "fast"

    try:
        result, route = t.call(decider(A, B), "read", fn, hedge=True)
        assert (result, route.region) == ("fast", B)
        assert (t.hedges_sent, t.hedges_won) == (1, 1)
    finally:
        release.set()
        t.close()
    assert t.latency.count(A) == 0  # the loser's latency never raises the p95 of A
    assert t.latency.count(B) == 1


def test_a_fast_read_is_not_hedged() -> None:
    t, _, _ = transport(hedge=_hedging(cold_delay_s=30.0))
    fn = Script(eu_west_1=["ok"])
    try:
        assert t.call(decider(A, B), "read", fn, hedge=True)[0] == "ok"
    finally:
        t.close()
    assert fn.calls == [A] and t.hedges_sent == 0


@pytest.mark.parametrize(
    ("op", "hedge", "data_class"),
    [("write", True, "content"), ("read", False, "content"), ("read", True, "profile")],
    ids=["writes", "consistent-reads", "other-classes"],
)
def test_only_eventually_consistent_reads_of_hedged_classes_hedge(
    op: Any, hedge: bool, data_class: str
) -> None:
    t, _, _ = transport(hedge=_hedging(cold_delay_s=0.0, min_delay_s=0.0))
    fn = Script(eu_west_1=["ok"])
    t.call(decider(A, B, data_class=data_class), op, fn, hedge=hedge)
    assert fn.calls == [A] and t.hedges_sent == 0 and t._pool is None


def test_both_hedges_failing_fail_over_to_a_third_region() -> None:
    t, health, _ = transport(hedge=_hedging(cold_delay_s=0.0, min_delay_s=0.0))
    gate = threading.Event()
    calls: list[str] = []

    def fn(route: Route, client: Any) -> str:
        calls.append(route.region)
        if route.region == A:
            gate.wait(30)
            raise ReadTimeoutError(endpoint_url="https://a")
        if route.region == B:
            gate.set()
            raise EndpointConnectionError(endpoint_url="https://b")
        return "third"

    try:
        result, route = t.call(decider(A, B, C), "read", fn, hedge=True)
    finally:
        gate.set()
        t.close()
    assert (result, route.region) == ("third", C)
    assert health.status(A).consecutive_failures == 1
    assert health.status(B).consecutive_failures == 1


def test_hedge_delay_follows_the_observed_p95() -> None:
    t, _, _ = transport(hedge=_hedging(cold_delay_s=0.02, min_samples=20, max_delay_s=0.25))
    assert t.hedge_delay(A) == 0.02  # cold
    for _ in range(20):
        t.latency.record(B, 0.004)
    assert t.hedge_delay(A) == pytest.approx(0.004)  # A unknown: every region's p95
    for i in range(100):
        t.latency.record(A, 0.001 * (i + 1))  # 1 .. 100 ms
    assert t.hedge_delay(A) == pytest.approx(0.095, abs=0.005)  # recomputed every 16
    assert t.hedge_delay(B) == 0.004  # B's own
    for _ in range(256):
        t.latency.record(A, 5.0)
    assert t.hedge_delay(A) == 0.25  # capped


# --- through the router ------------------------------------------------------------------


class _SlowFirst:
    """Clients whose eu-central-1 GetItem waits for the test; every other region answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str, bool]] = []

    def client(self, service: str, region: str) -> Any:
        assert service == "dynamodb"
        outer = self

        class Client:
            def get_item(self, **kw: Any) -> dict[str, Any]:
                outer.calls.append((region, bool(kw.get("ConsistentRead"))))
                if region == "eu-central-1":
                    outer.release.wait(30)
                return {}

        return Client()


def test_router_hedges_eventual_reads_of_global_data_only() -> None:
    from pathlib import Path

    from regions.router import RegionRouter
    from residency.policy import load_policy

    policy = load_policy(Path(__file__).resolve().parent.parent / "policies" / "minimal.yaml")
    clients = _SlowFirst()
    settings = RouterConfig(mode="aws", region="eu-central-1", hedge_reads=True)
    router = RegionRouter(policy, region="eu-central-1", clients=clients, config=settings)
    try:
        assert router.get("content", {"pk": "p1"}) is None
        assert ("eu-west-1", False) in clients.calls  # the hedge answered
        assert router.transport.hedges_won == 1
        clients.release.set()
        clients.calls.clear()
        router.get("content", {"pk": "p1"}, consistent=True)
        assert clients.calls == [("eu-central-1", True)]  # never hedged
    finally:
        clients.release.set()
        router.close()
    plain = RegionRouter(
        policy,
        region="eu-central-1",
        clients=_SlowFirst(),
        config=RouterConfig(mode="aws", region="eu-central-1"),
    )
    assert plain.transport.hedging is None  # opt-in
    plain.close()


def test_latency_samples_recorded_from_many_threads_are_all_counted() -> None:
    """Recording takes no lock once a region's window exists: threads that start a new
    region at once, then record into it, lose nothing and break nothing."""
    from concurrent.futures import ThreadPoolExecutor

    from regions.hedging import LatencyTracker

    tracker = LatencyTracker(window=10_000, every=16)
    start = threading.Barrier(8)

    def record(i: int) -> None:
        start.wait()
        for n in range(500):
            tracker.record(f"r{n % 4}", (i * 500 + n) / 1e6)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, range(8)))  # re-raises any thread's error
    assert [tracker.count(f"r{k}") for k in range(4)] == [1000] * 4
    assert tracker.count(LatencyTracker.ALL) == 4000
    p95 = tracker.p95(LatencyTracker.ALL)
    assert p95 is not None and 0.0035 < p95 < 0.0040  # the 95th of 0 .. 3,999 us
