"""The router's request metrics: counted per call, published as CloudWatch EMF lines.

The stop alarm of an FIS drill (``residency.fis_template.customer_harm_alarm``) reads
these counts, so what counts as an error decides when a drill stops: only a call no
region served. Virtual time throughout (an injected clock), no sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from regions.local.sim import Simulation, simulation
from regions.metrics import METRICS, NAMESPACE, RequestMetrics, emf_document, sink
from regions.router import RegionRouter
from residency.deployment import plan_deployment
from residency.errors import RegionUnavailable, StaleWrite
from residency.fis_template import HARM_METRICS, HARM_NAMESPACE, customer_harm_alarm
from residency.policy import load_policy
from residency.settings import RouterConfig

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_emf_document_is_what_cloudwatch_extracts() -> None:
    doc = emf_document("p", EU1, 7, 2, timestamp_ms=1_800_000_000_000)
    directive = doc["_aws"]["CloudWatchMetrics"][0]  # type: ignore[index]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["Policy", "Region"]]
    # every dimension and metric named in the directive is a top-level member (the spec)
    for name in [*directive["Dimensions"][0], *(m["Name"] for m in directive["Metrics"])]:
        assert name in doc
    assert (doc["RoutedRequests"], doc["RoutedRequestErrors"]) == (7, 2)


def test_the_alarm_reads_what_the_router_publishes(minimal_policy_path: Any) -> None:
    """The customer-harm alarm's metrics are the router's, in its namespace, by the
    same dimensions: a rename on either side fails here."""
    plan = plan_deployment(load_policy(minimal_policy_path))
    alarm = customer_harm_alarm(plan, EU1)
    stats = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert {m["Namespace"] for m in stats} == {NAMESPACE} == {HARM_NAMESPACE}
    assert {m["MetricName"] for m in stats} == set(METRICS) == set(HARM_METRICS)
    doc = emf_document(plan.policy_name, EU1, 1, 0, timestamp_ms=0)
    for m in stats:
        assert {d["Name"]: d["Value"] for d in m["Dimensions"]} == {
            "Policy": doc["Policy"],
            "Region": doc["Region"],
        }


def test_one_line_per_interval_and_nothing_when_idle() -> None:
    lines: list[str] = []
    clock = Clock()
    m = RequestMetrics("p", EU1, lines.append, interval_s=60, clock=clock)
    m.flush()
    assert lines == []  # nothing counted, nothing emitted
    for i in range(5):
        m.record(failed=i == 0)
    clock.now += 59
    m.record(failed=False)
    assert lines == []
    clock.now += 2
    m.record(failed=True)  # opens the next minute: the last one goes out
    assert [json.loads(x)["RoutedRequests"] for x in lines] == [6]
    assert json.loads(lines[0])["RoutedRequestErrors"] == 1
    m.flush()
    assert [(json.loads(x)["RoutedRequests"], json.loads(x)["RoutedRequestErrors"]) for x in lines][
        1
    ] == (1, 1)


def test_settings_choose_the_sink() -> None:
    assert sink("off") is None
    assert callable(sink("emf-stdout")) and callable(sink("emf-log"))
    assert RouterConfig(mode="aws", region=EU1, endpoints={}).metrics == "off"


@pytest.fixture
def sim(minimal_policy_path: Any) -> Iterator[Simulation]:
    with simulation(load_policy(minimal_policy_path), seed=3, detect=False) as s:
        yield s


def test_only_a_call_no_region_served_is_an_error(sim: Simulation) -> None:
    lines: list[str] = []
    clock = Clock()
    metrics = RequestMetrics(sim.policy.name, EU1, lines.append, clock=clock)
    router = RegionRouter(
        sim.policy,
        region=EU1,
        clients=sim.clients,
        config=RouterConfig(mode="aws", region=EU1, endpoints={}, failover_attempts=3),
        metrics=metrics,
        wall_clock=lambda: sim.now,
    )
    uid = router.new_user_id(country="DE")
    router.assign_home(uid, country="DE")  # 1 request (the directory put) and its reads
    router.put("profile", {"pk": uid, "email": "x@example.de"})
    router.put("content", {"pk": "m-1", "body": "hi"})
    assert router.get("content", {"pk": "m-1"}) is not None
    with pytest.raises(StaleWrite):
        router.put("content", {"pk": "m-1", "body": "again"}, create_only=True)  # an answer
    served = metrics.requests
    assert served >= 5 and metrics.errors == 0
    sim.outage(EU1)
    sim.outage(EU2)
    try:
        with pytest.raises(RegionUnavailable):  # no region of the EU jurisdiction answers
            router.get("profile", {"pk": uid})
    finally:
        sim.restore(EU1)
        sim.restore(EU2)
    assert metrics.errors == 1 and metrics.requests == served + 1
    router.close()  # flushes
    doc = json.loads(lines[-1])
    assert (doc["RoutedRequests"], doc["RoutedRequestErrors"]) == (served + 1, 1)
    assert "example" not in "".join(lines)  # counts only: no key, no value
