"""Time to Live in the emulator: expired items go, the deletion streams as DynamoDB's
TTL deletion and replicates; reads hide what has expired but is not gone yet.

Ground truth is raw boto3: scans of every region and the streams' own records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from cluster_fixtures import stream_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regions.local.expiry import FIVE_YEARS_S, TTL_IDENTITY, is_expired
from regions.local.sim import Simulation, simulation
from regions.tombstones import is_live
from residency.policy import load_policy
from residency.tables import TTL_ATTRIBUTE

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"
NOW = 1_800_000_000.0
DAY = 86_400


@pytest.fixture(scope="module")
def sim(minimal_policy_path: Any) -> Iterator[Simulation]:
    with simulation(load_policy(minimal_policy_path), seed=11, detect=False) as s:
        yield s


class Recorder:
    """A stream listener of the replication engine: every record, by region."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, region: str, table: str, record: dict[str, Any]) -> None:
        self.records.append((region, table, record))

    def removes(self, key: str) -> dict[str, dict[str, Any]]:
        return {
            region: rec
            for region, _table, rec in self.records
            if rec["eventName"] == "REMOVE" and rec["dynamodb"]["Keys"]["pk"]["S"] == key
        }


@pytest.fixture
def recorder(sim: Simulation) -> Iterator[Recorder]:
    rec = Recorder()
    sim.engine.listeners.append(rec)
    try:
        yield rec
    finally:
        sim.engine.listeners.remove(rec)


# --- the rule ---


@pytest.mark.parametrize(
    ("value", "expired"),
    [
        ({"N": str(int(NOW) - 1)}, True),
        ({"N": f"{NOW - 0.5}"}, True),
        ({"N": str(int(NOW))}, False),  # "less than the current time"
        ({"N": str(int(NOW) + 60)}, False),
        ({"N": str(int(NOW) - FIVE_YEARS_S - 1)}, False),  # older than five years: skipped
        ({"S": str(int(NOW) - 1)}, False),  # not a Number: never expires
        ({"N": "NaN"}, False),
        ({"N": "not a number"}, False),
        (None, False),
        ({"N": "1", "S": "x"}, False),
    ],
)
def test_what_expires(value: Any, expired: bool) -> None:
    assert is_expired(value, NOW) is expired


@given(at=st.integers(min_value=int(NOW) - 2 * FIVE_YEARS_S, max_value=int(NOW) + DAY))
def test_expiry_is_the_documented_window(at: int) -> None:
    assert is_expired({"N": str(at)}, NOW) is (NOW - FIVE_YEARS_S <= at < NOW)


def test_reads_hide_expired_items_tombstones_and_nothing_else() -> None:
    assert is_live({"pk": "a"}, NOW)
    assert is_live({"pk": "a", TTL_ATTRIBUTE: Decimal(int(NOW) + 1)}, NOW)
    assert not is_live({"pk": "a", TTL_ATTRIBUTE: Decimal(int(NOW) - 1)}, NOW)
    assert is_live({"pk": "a", TTL_ATTRIBUTE: "yesterday"}, NOW)  # not a Number
    assert not is_live({"pk": "a", "rk_del": "deleted", TTL_ATTRIBUTE: NOW + DAY}, NOW)
    assert not is_live(None, NOW)


# --- the emulator ---


def _everywhere(sim: Simulation, table: str, key: str) -> dict[str, dict[str, Any] | None]:
    return {r: sim.items(r, table).get(key) for r in sim.policy.regions}


def test_an_expired_item_is_deleted_and_the_deletion_replicates(
    sim: Simulation, recorder: Recorder
) -> None:
    key = "ttl-post-1"
    sim.routers[EU1].put("content", {"pk": key, "body": "x"}, expires_at=int(sim.now) + 60)
    sim.settle()
    assert all(_everywhere(sim, "content", key).values())
    assert sim.routers[US].get("content", {"pk": key}) is not None

    sim.advance(120)  # expired, not yet deleted: still stored, no longer read
    assert all(_everywhere(sim, "content", key).values())
    assert sim.routers[US].get("content", {"pk": key}) is None

    swept = sim.expire()  # DynamoDB's TTL process runs in every region
    sim.settle()
    assert _everywhere(sim, "content", key) == dict.fromkeys(sim.policy.regions)
    assert sum(swept[r].get("content", 0) for r in sim.policy.regions) >= 1
    assert len(recorder.removes(key)) == len(sim.policy.regions)


def test_the_stream_marks_the_deletion_as_ttl_only_where_it_happened(
    sim: Simulation, recorder: Recorder
) -> None:
    key = "ttl-post-2"
    sim.routers[US].put("content", {"pk": key, "body": "x"}, expires_at=int(sim.now) + 60)
    sim.settle()
    sim.faults.pause(None, None)  # only us-east-1 gets to expire it; the rest by replication
    sim.advance(120)
    sim.outage(EU1)
    sim.outage(EU2)
    try:
        assert sim.expire() == {US: {"content": 1}}
    finally:
        sim.restore(EU1)
        sim.restore(EU2)
        sim.faults.resume(None, None)
    sim.settle()
    removes = recorder.removes(key)
    assert set(removes) == set(sim.policy.regions)
    assert removes[US]["userIdentity"] == TTL_IDENTITY
    assert removes[US]["dynamodb"]["OldImage"]["pk"] == {"S": key}  # the old image, as in AWS
    for region in (EU1, EU2):  # replicated TTL deletions are not identifiable (AWS docs)
        assert "userIdentity" not in removes[region]
    assert _everywhere(sim, "content", key) == dict.fromkeys(sim.policy.regions)


def test_a_tombstone_outlives_its_retention_only(sim: Simulation) -> None:
    key = "ttl-post-3"
    sim.routers[EU2].put("content", {"pk": key, "body": "x"})
    sim.routers[EU2].delete("content", {"pk": key})
    sim.settle()
    tomb = sim.items(EU2, "content")[key]
    assert tomb["rk_del"] == "deleted"
    retention = sim.policy.system.tombstone_retention_days * DAY
    assert int(tomb[TTL_ATTRIBUTE]) == pytest.approx(sim.now + retention, abs=2)

    sim.expire(now=sim.now + retention - 60)  # not yet: a stale write is still refused
    sim.settle()
    assert all(v is not None for v in _everywhere(sim, "content", key).values())

    sim.expire(now=sim.now + retention + 60)
    sim.settle()
    assert _everywhere(sim, "content", key) == dict.fromkeys(sim.policy.regions)


def test_an_item_rewritten_without_ttl_is_not_expired(sim: Simulation) -> None:
    key = "ttl-post-4"
    router = sim.routers[EU1]
    router.put("content", {"pk": key, "body": "x"}, expires_at=int(sim.now) + 60)
    router.put("content", {"pk": key, "body": "kept"})  # a put replaces the whole item
    sim.settle()
    sim.expire(now=sim.now + 3600)
    sim.settle()
    assert {v["body"] for v in _everywhere(sim, "content", key).values() if v} == {"kept"}
    assert all(_everywhere(sim, "content", key).values())


def test_query_pages_skip_expired_items(sim: Simulation) -> None:
    router = sim.routers[EU1]
    for i in range(4):
        ttl = int(sim.now) + (60 if i % 2 else 10 * DAY)
        router.put("content", {"pk": f"ttl-q-{i}", "body": str(i)}, expires_at=ttl)
    sim.settle()
    sim.advance(120)
    got = router.batch_get("content", [{"pk": f"ttl-q-{i}"} for i in range(4)])
    assert sorted(i["pk"] for i in got.items) == ["ttl-q-0", "ttl-q-2"]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "put_ttl", "delete", "pause", "resume", "step", "expire"]),
            st.sampled_from([EU1, EU2, US]),
        ),
        min_size=1,
        max_size=14,
    )
)
def test_expiry_racing_writes_deletes_and_pauses_still_converges(
    sim: Simulation, ops: list[tuple[str, str]]
) -> None:
    """TTL deletions in any region, at any moment of a history of writes, deletes and
    replication pauses: the replicas end identical, and nothing expired is left."""
    key = f"ttl-race-{sim.rng.random()}"
    for op, region in ops:
        sim.advance(0.5)
        r = sim.routers[region]
        if op in ("put", "put_ttl"):
            ttl = int(sim.now) + 1 if op == "put_ttl" else None
            r.put("content", {"pk": key, "body": op}, expires_at=ttl)
        elif op == "delete":
            r.delete("content", {"pk": key})
        elif op == "pause":
            sim.faults.pause(region, None)
        elif op == "resume":
            sim.faults.resume(region, None)
        elif op == "step":
            sim.step(0.05)
        else:
            sim.advance(2)
            sim.expire()
    sim.faults.resume(None, None)
    sim.settle()
    swept_at = sim.now
    sim.expire()
    sim.settle()  # moves time on: an item may expire meanwhile, after the sweep
    states = [sim.items(r, "content").get(key) for r in sim.policy.regions]
    assert all(s == states[0] for s in states), "replicas diverged"
    final = states[0]
    if final is not None and TTL_ATTRIBUTE in final and "rk_del" not in final:
        assert int(final[TTL_ATTRIBUTE]) >= swept_at  # an item expired at the sweep was left
    visible = sim.routers[US].get("content", {"pk": key})
    assert visible is None or is_live(visible, sim.now)


# --- on the real server processes ---


@pytest.mark.cluster
def test_the_local_cluster_expires_over_its_servers_and_streams_a_ttl_delete(
    cluster: Any,
) -> None:
    """Raw boto3 only: an item put in one region, replicated, expired by the server
    process of that region (the others are in an outage), gone everywhere after."""
    key = f"ttl-cluster-{time.monotonic_ns()}"
    table = cluster.table_name("content")
    ddb = cluster.client(US)
    ddb.put_item(
        TableName=table,
        Item={"pk": {"S": key}, TTL_ATTRIBUTE: {"N": str(int(time.time()) - 30)}},
    )
    assert cluster.replicator.wait_converged(30)
    for region in cluster.policy.regions:
        got = cluster.client(region).get_item(TableName=table, Key={"pk": {"S": key}})
        assert "Item" in got, region
    cluster.outage(EU1, "refuse")
    cluster.outage(EU2, "refuse")
    try:
        swept = cluster.expire()
    finally:
        cluster.restore(EU1)
        cluster.restore(EU2)
    assert set(swept) == {US}
    assert swept[US].get(table, 0) >= 1
    rep = cluster.replicator
    assert rep.wait_converged(30), (
        rep.busy(),
        list(rep.engine.failed)[-3:],
        list(rep.engine.errors)[-3:],
    )
    for region in cluster.policy.regions:
        got = cluster.client(region).get_item(
            TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True
        )
        assert "Item" not in got, region

    mine = stream_records(cluster, US, table, key)
    assert [r["eventName"] for r in mine][-1] == "REMOVE"
    assert mine[-1]["userIdentity"] == TTL_IDENTITY
