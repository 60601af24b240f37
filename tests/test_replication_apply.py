"""The emulator never applies an older replicated write over a newer one, and drops nothing.

DynamoDB decides last-writer-wins when it applies a replicated write, atomically:
a region never serves, or streams, a version older than one it already held. The
emulator applies each change conditionally on what the destination is known to
hold, so a local write it has not read yet makes the apply fail and the change go
back on its link; once read, the local (newer) write wins and the old change is
skipped. Checked on the step-driven engine over in-process moto, with raw boto3
reads and the destination's own stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from regions.codec import from_ddb, to_ddb
from regions.local.sim import Simulation, simulation
from residency.policy import Policy, load_policy

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"


@pytest.fixture(scope="module")
def policy(minimal_policy_path: Any) -> Policy:
    return load_policy(minimal_policy_path)


@pytest.fixture
def sim(policy: Policy) -> Iterator[Simulation]:
    with simulation(policy, seed=5, detect=False) as s:
        yield s


def _stream(sim: Simulation, region: str, table: str, key: str) -> list[str | None]:
    """Every NewImage body of ``key`` in ``region``'s stream, in order (raw boto3)."""
    streams = sim.clients.client("dynamodbstreams", region)
    arn = sim.clients.raw(region).describe_table(TableName=table)["Table"]["LatestStreamArn"]
    out: list[str | None] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            for rec in page["Records"]:
                if from_ddb(rec["dynamodb"]["Keys"]) == {"pk": key}:
                    image = from_ddb(rec["dynamodb"].get("NewImage"))
                    out.append(None if image is None else str(image.get("body")))
            it = page.get("NextShardIterator") if page["Records"] else None
    return out


def _raw(sim: Simulation, region: str, key: str) -> dict[str, Any] | None:
    got = sim.clients.raw(region).get_item(
        TableName="content", Key=to_ddb({"pk": key}), ConsistentRead=True
    )
    return from_ddb(got.get("Item"))


def test_an_older_replicated_write_never_lands_on_a_newer_local_one(sim: Simulation) -> None:
    eng = sim.engine
    sim.routers[EU1].put("content", {"pk": "race", "body": "older"})
    sim.poll(EU1)  # queued for the other regions, with EU1's (earlier) write time
    sim.now += 0.5
    sim.routers[US].put("content", {"pk": "race", "body": "newer"})  # US not read yet
    # The race: the older change is applied to US before US's stream is read.
    batch = eng.due(US, sim.now + 10)
    assert batch
    assert eng.apply(US, batch, now=sim.now) == 0  # refused by the condition, requeued
    assert (_raw(sim, US, "race") or {})["body"] == "newer"
    sim.settle()
    for region in (EU1, EU2, US):
        assert (_raw(sim, region, "race") or {})["body"] == "newer"
    # US's stream never showed the older version after its own write
    assert _stream(sim, US, "content", "race") == ["newer"]


def test_no_replica_streams_a_version_older_than_one_it_held(sim: Simulation) -> None:
    """Many racing writes: in each region's stream the write times never go back.

    (The simulation's private write time is the instant its streams are read;
    ``advance`` reads them before moving time on.)"""
    import random

    rng = random.Random(11)
    order: dict[str, int] = {}
    for i in range(60):
        region = rng.choice((EU1, EU2, US))
        body = f"w{i}"
        order[body] = i  # later in real time = later write time (no skew)
        sim.routers[region].put("content", {"pk": "hot", "body": body})
        if rng.random() < 0.5:
            for ln_region in (EU1, EU2, US):
                # apply what is due without reading the destination's stream first: the
                # write just made there is not known to the emulator yet
                batch = sim.engine.due(ln_region, sim.now + 1)
                if batch:
                    sim.engine.apply(ln_region, batch, now=sim.now)
        sim.advance(rng.choice((0.0005, 0.002, 0.01)))  # reads the streams: write times
    sim.settle()
    finals = {str((_raw(sim, r, "hot") or {}).get("body")) for r in (EU1, EU2, US)}
    assert finals == {"w59"}
    for region in (EU1, EU2, US):
        seen = [order[b] for b in _stream(sim, region, "content", "hot") if b is not None]
        assert seen == sorted(seen), region


def test_an_unreadable_change_is_retried_then_counted_as_failed(sim: Simulation) -> None:
    eng = sim.engine
    calls = {"n": 0}
    real = eng._ingest

    def flaky(region: str, table: str, rec: dict[str, Any], now: float | None) -> None:
        if table == "content" and calls["n"] < 2:
            calls["n"] += 1
            raise TypeError("cannot read this record")
        real(region, table, rec, now)

    eng._ingest = flaky  # type: ignore[method-assign]
    sim.routers[EU1].put("content", {"pk": "f1", "body": "a"})
    sim.routers[EU1].put("content", {"pk": "f2", "body": "b"})
    for _ in range(3):
        sim.poll(EU1)
    sim.settle()
    for region in (EU2, US):  # the failing poll advanced past nothing
        assert (_raw(sim, region, "f1") or {}).get("body") == "a"
        assert (_raw(sim, region, "f2") or {}).get("body") == "b"
    assert eng.failed_count == 0 and any("cannot read" in e for e in eng.errors)

    def broken(region: str, table: str, rec: dict[str, Any], now: float | None) -> None:
        if table == "content" and from_ddb(rec["dynamodb"]["Keys"]) == {"pk": "f3"}:
            raise TypeError("never readable")
        real(region, table, rec, now)

    eng._ingest = broken  # type: ignore[method-assign]
    sim.routers[EU1].put("content", {"pk": "f3", "body": "c"})
    sim.routers[EU1].put("content", {"pk": "f4", "body": "d"})
    for _ in range(25):
        sim.poll(EU1)
    sim.settle()
    assert eng.failed_count == 1 and "never readable" in eng.failed[-1]
    assert (_raw(sim, US, "f4") or {}).get("body") == "d"  # the change after it still arrives


def test_a_record_read_again_is_not_a_new_write(sim: Simulation) -> None:
    """Streams are read at least once (a re-read after a failure, a Lambda retry, a
    moto that re-sent its last record on every read): a record seen again is skipped,
    not sent round the regions as a new write, which never ends."""
    eng = sim.engine
    for i in range(3):
        sim.routers[EU1].put("content", {"pk": f"again{i}", "body": "x"})
    sim.settle()
    before = {r: _stream(sim, r, "content", "again0") for r in (EU2, US)}
    streams = sim.clients.client("dynamodbstreams", EU1)
    arn = sim.clients.raw(EU1).describe_table(TableName="content")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    eng._iterators[(EU1, "content")] = [  # read EU1's stream again from its start
        streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
    ]
    eng._repoll.add((EU1, "content"))  # read it although nothing was written since
    assert sim.engine.poll(EU1) == 0  # nothing new
    assert eng.redelivered >= 3 and eng.pending() == 0
    sim.settle()
    assert {r: _stream(sim, r, "content", "again0") for r in (EU2, US)} == before


def test_an_applier_that_raises_drops_nothing(sim: Simulation) -> None:
    """Whatever an applier does wrong, the changes it was handed go back on their links:
    the engine counts the failure and the replicas converge once it works again."""
    eng = sim.engine
    real = eng.applier

    class Broken:
        def apply(self, dst: str, groups: Any) -> Any:
            raise RuntimeError("applier broke")

        def close(self) -> None:
            pass

    sim.routers[EU1].put("content", {"pk": "ab1", "body": "a"})
    sim.poll(EU1)
    pending = eng.pending()
    assert pending
    eng.applier = Broken()
    try:
        batch = eng.due(US, sim.now + 10)
        assert batch
        assert eng.apply(US, batch, now=sim.now) == 0
    finally:
        eng.applier = real
    assert eng.pending() == pending and any("applier broke" in e for e in eng.errors)
    sim.settle()
    for region in (EU2, US):
        assert (_raw(sim, region, "ab1") or {}).get("body") == "a"


def test_a_write_that_timed_out_but_landed_is_not_taken_for_a_new_local_write(
    sim: Simulation,
) -> None:
    """A timed-out apply may still land. Its record, read later, is that change arriving
    late: it keeps its own write time and is not sent on, so a newer write made before
    the record was read still wins everywhere. (Taken for a local write, the late record
    got the time it was read at and overwrote the newer write in every region.)"""
    from regions.local.appliers import ReplicaUnreachable

    eng = sim.engine
    real = eng.applier

    class LandedButTimedOut:
        def apply(self, dst: str, groups: Any) -> Any:
            real.apply(dst, groups)  # the replica takes the batch...
            raise ReplicaUnreachable(f"{dst}: TimeoutError")  # ...the answer is lost

        def close(self) -> None:
            pass

    sim.routers[EU1].put("content", {"pk": "late", "body": "older"})
    sim.poll(EU1)
    eng.applier = LandedButTimedOut()
    try:
        batch = [(ln, c) for ln, c in eng.due(US, sim.now + 10) if c.keys == {"pk": {"S": "late"}}]
        assert batch
        assert eng.apply(US, batch, now=sim.now) == 0  # reported as failed
    finally:
        eng.applier = real
    assert (_raw(sim, US, "late") or {}).get("body") == "older"  # yet it landed
    sim.routers[EU2].put("content", {"pk": "late", "body": "newer"})
    sim.poll(EU2)
    sim.poll(US)  # the late record is read after the newer write was
    from_us = [
        ln.applied + ln.skipped + len(ln.queue)
        for (table, src, _dst), ln in eng._links.items()
        if table == "content" and src == US
    ]
    assert from_us == [0, 0], "the late arrival was sent on as a new write"
    sim.settle()
    for region in (EU1, EU2, US):
        assert (_raw(sim, region, "late") or {}).get("body") == "newer", region


def test_a_stream_answer_cut_short_loses_no_record(sim: Simulation) -> None:
    """A GetRecords answer whose body was cut off (a server closing its connections
    mid-response; Streams answers carry no checksum) parses as ``{}``: the read fails
    and is retried from where it was, instead of dropping the shard's iterator."""
    eng = sim.engine
    clients = eng.clients
    real_client = clients.client
    cut = {"left": 1}

    class CutShort:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def get_records(self, **kwargs: Any) -> dict[str, Any]:
            if cut["left"]:
                cut["left"] -= 1
                return {"ResponseMetadata": {"HTTPStatusCode": 200}}
            return dict(self.inner.get_records(**kwargs))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    def client(service: str, region: str) -> Any:
        inner = real_client(service, region)
        return CutShort(inner) if service == "dynamodbstreams" and region == EU1 else inner

    sim.routers[EU1].put("content", {"pk": "cut", "body": "a"})
    eng.clients = type("Clients", (), {"client": staticmethod(client)})()
    try:
        with pytest.raises(ConnectionError, match="cut short"):
            eng.poll(EU1, "content", now=sim.now)
        assert eng.poll(EU1, "content", now=sim.now) >= 1  # read again, from the same place
    finally:
        eng.clients = clients
    sim.settle()
    for region in (EU2, US):
        assert (_raw(sim, region, "cut") or {}).get("body") == "a"


def test_a_refusal_is_recorded_by_its_code_without_dynamodb_s_message(sim: Simulation) -> None:
    """``local status`` prints the engine's errors: DynamoDB's message may quote a value."""
    from botocore.exceptions import ClientError

    eng = sim.engine
    real = eng.applier
    message = "One or more parameter values were invalid: pii-value@example.com"

    class Refusing:
        def apply(self, dst: str, groups: Any) -> Any:
            error = {"Error": {"Code": "ValidationException", "Message": message}}
            return [(0, ClientError(error, "PutItem")) for _ in groups]

        def close(self) -> None:
            pass

    sim.routers[EU1].put("content", {"pk": "refused", "body": "a"})
    sim.poll(EU1)
    eng.applier = Refusing()
    try:
        batch = eng.due(US, sim.now + 10)
        assert batch and eng.apply(US, batch, now=sim.now) == 0
    finally:
        eng.applier = real
    recorded = " ".join([*eng.errors, *eng.failed])
    assert "ValidationException" in recorded and "pii-value" not in recorded
    sim.settle()
