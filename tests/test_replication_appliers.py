"""The two ways the emulator writes into a replica give the same answers (regions.local.appliers).

The local cluster applies replicated changes inside each region's server
(``ServerApplier``), the simulation through a boto3 client (``ClientApplier``, a
conditional PutItem/DeleteItem per change, the way it always did). The engine's
guarantees (nothing lost, nothing older over newer) rest on the outcome of each
change, so the two must agree on every outcome and leave the same item behind.
The comparison runs on the real servers of an unreplicated cluster: one region
takes the client path, another the server path, with the same changes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regions.local.appliers import ClientApplier, ReplicaUnreachable, ServerApplier, Write
from regions.local.replication import _condition, _is_fault

CLIENT_REGION, SERVER_REGION = "eu-west-1", "eu-central-1"
TABLE = "content"

scalars = st.one_of(
    st.text(max_size=6).map(lambda s: {"S": s}),
    st.integers(-(10**6), 10**6).map(lambda n: {"N": str(n)}),
    st.sampled_from([{"N": "1.0"}, {"N": "1"}, {"N": "-0"}, {"N": "1E+2"}, {"N": "100"}]),
    st.binary(max_size=4).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(st.text(min_size=1, max_size=3), min_size=1, max_size=3).map(
        lambda s: {"SS": sorted(s)}
    ),
    st.sets(st.binary(min_size=1, max_size=3), min_size=1, max_size=3).map(
        lambda s: {"BS": sorted(s)}
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(st.text(min_size=1, max_size=3), inner, max_size=3).map(lambda v: {"M": v}),
    ),
    max_leaves=6,
)
# a few attribute names, so that conditions on scalars meet stored attributes
attributes = st.dictionaries(st.sampled_from(["a", "b", "c", "rk_v"]), values, max_size=3)
versions = st.sampled_from(["v1", "v2", "v3"]).map(lambda v: {"S": v})


@st.composite
def changes(draw: st.DrawFn) -> tuple[int, dict[str, Any] | None, str, dict[str, Any] | None]:
    """(key index, image attributes or None for a delete, what it goes over, a guess)."""
    key = draw(st.integers(0, 1))
    image = draw(st.none() | attributes.map(dict))
    if image is not None and draw(st.booleans()):
        image["rk_v"] = draw(versions)
    over = draw(st.sampled_from(["stored", "absent", "guess"]))
    guess = draw(attributes.map(dict))
    return key, image, over, guess


@pytest.fixture
def appliers(isolated_cluster: Any) -> Iterator[tuple[Any, ClientApplier, ServerApplier]]:
    clients = isolated_cluster.replication_clients
    client, server = ClientApplier(clients), ServerApplier(clients)
    yield isolated_cluster, client, server
    client.close()
    server.close()


def _stored(cluster: Any, region: str, keys: dict[str, Any]) -> dict[str, Any] | None:
    item = cluster.client(region).get_item(TableName=TABLE, Key=keys, ConsistentRead=True)
    return item.get("Item")


def _code(exc: Exception | None) -> str | None:
    if exc is None:
        return None
    response = getattr(exc, "response", None)
    return response["Error"]["Code"] if response else type(exc).__name__


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.lists(changes(), min_size=1, max_size=3), min_size=1, max_size=4))
def test_the_server_path_answers_and_stores_as_the_client_path_does(
    appliers: tuple[Any, ClientApplier, ServerApplier],
    steps: list[list[tuple[int, dict[str, Any] | None, str, dict[str, Any] | None]]],
) -> None:
    """Random batches of conditional puts and deletes, in groups of one item's versions:
    every outcome (written, lost condition, refusal and its code) and every stored
    item is the same on both paths."""
    cluster, client, server = appliers
    run = uuid.uuid4().hex[:8]
    keys = [{"pk": {"S": f"appliers-{run}-{i}"}} for i in range(2)]
    for batch in steps:
        groups: dict[int, list[Write]] = {}
        for key, image, over, guess in batch:
            k = keys[key]
            held = {
                "stored": _stored(cluster, CLIENT_REGION, k),
                "absent": None,
                "guess": {**guess, **k},
            }[over]
            item = None if image is None else {**image, **k}
            groups.setdefault(key, []).append(Write(TABLE, k, item, _condition(k, held)))
        plan = list(groups.values())
        by_client = [(n, _code(e)) for n, e in client.apply(CLIENT_REGION, plan)]
        by_server = [(n, _code(e)) for n, e in server.apply(SERVER_REGION, plan)]
        assert by_server == by_client
        for k in keys:
            assert _stored(cluster, SERVER_REGION, k) == _stored(cluster, CLIENT_REGION, k)


def test_refusals_are_moto_s_and_are_not_faults(
    appliers: tuple[Any, ClientApplier, ServerApplier],
) -> None:
    """A change DynamoDB refuses (no such table, an empty key) stops its own group only,
    with the code the client path gets; the engine counts it, it does not wait it out."""
    _cluster, client, server = appliers
    run = uuid.uuid4().hex[:8]
    ok = Write(TABLE, {"pk": {"S": f"r-{run}"}}, {"pk": {"S": f"r-{run}"}, "x": {"N": "1"}}, {})
    plan = [
        [Write("no-such-table", ok.keys, ok.image, {}), ok],
        [Write(TABLE, {"pk": {"S": ""}}, {"pk": {"S": ""}}, {})],
        [ok],
    ]
    by_client = client.apply(CLIENT_REGION, plan)
    by_server = server.apply(SERVER_REGION, plan)
    assert [(n, _code(e)) for n, e in by_server] == [(n, _code(e)) for n, e in by_client]
    assert [n for n, _ in by_server] == [0, 0, 1]
    assert _code(by_server[0][1]) == "ResourceNotFoundException"
    assert _code(by_server[1][1]) == "ValidationException"
    assert not any(_is_fault(e) for _, e in by_server if e is not None)


@pytest.mark.parametrize("mode", ["refuse", "stop"])
def test_a_region_that_does_not_answer_is_a_fault_and_is_written_once_back(
    isolated_cluster: Any, mode: str
) -> None:
    """Refused connections and a stopped server fail the whole batch as a fault (the
    engine keeps it and retries), and the applier writes again after the outage,
    without a failed attempt on the connection the outage closed."""
    server = ServerApplier(isolated_cluster.replication_clients, timeout=0.5)
    run = uuid.uuid4().hex[:8]
    writes = [
        [Write(TABLE, k, {**k, "x": {"N": "1"}}, {})]
        for k in ({"pk": {"S": f"out-{run}-{i}"}} for i in range(3))
    ]
    try:
        assert server.apply(SERVER_REGION, writes[:1]) == [(1, None)]  # a connection is open
        isolated_cluster.outage(SERVER_REGION, mode)
        try:
            outcomes = server.apply(SERVER_REGION, writes[1:])
        finally:
            isolated_cluster.restore(SERVER_REGION)
        assert [n for n, _ in outcomes] == [0, 0]
        assert all(isinstance(e, ReplicaUnreachable) and _is_fault(e) for _, e in outcomes)
        if mode == "refuse":  # nothing reached the region
            for w in writes[1:]:
                assert _stored(isolated_cluster, SERVER_REGION, w[0].keys) is None
        assert server.apply(SERVER_REGION, writes[1:]) == [(1, None), (1, None)]
    finally:
        server.close()


def test_a_large_batch_goes_in_several_requests_in_order(
    appliers: tuple[Any, ClientApplier, ServerApplier],
) -> None:
    """Groups are never split across requests, and results keep the batch's order."""
    cluster, _client, _ = appliers
    server = ServerApplier(cluster.replication_clients, max_changes=3)
    run = uuid.uuid4().hex[:8]
    k = [{"pk": {"S": f"big-{run}-{i}"}} for i in range(5)]
    plan = [
        [Write(TABLE, k[0], {**k[0], "rk_v": {"S": "v1"}}, _condition(k[0], None))],
        [
            Write(TABLE, k[1], {**k[1], "rk_v": {"S": "v1"}}, _condition(k[1], None)),
            Write(
                TABLE, k[1], {**k[1], "rk_v": {"S": "v2"}}, _condition(k[1], {"rk_v": {"S": "x"}})
            ),
        ],
        [Write(TABLE, k[2], {**k[2], "rk_v": {"S": "v1"}}, _condition(k[2], None))] * 2,
        [Write(TABLE, k[3], None, _condition(k[3], None))],
        [Write(TABLE, k[4], {**k[4]}, {})],
    ]
    bodies: list[bytes] = []
    post = server._post

    def counted(dst: str, body: bytes) -> list[dict[str, Any]]:
        bodies.append(body)
        return post(dst, body)

    server._post = counted  # type: ignore[method-assign]
    try:
        assert server.apply(SERVER_REGION, plan) == [(1, None)] * 5
        assert [len(json.loads(b)["groups"]) for b in bodies] == [2, 2, 1]
        assert _stored(cluster, SERVER_REGION, k[1]) == {**k[1], "rk_v": {"S": "v1"}}
        bodies.clear()
        server.max_changes, server.max_bytes = 100, 1  # every group alone
        assert server.apply(SERVER_REGION, plan) == [(0, None)] * 3 + [(1, None)] * 2
        assert len(bodies) == 5
    finally:
        server.close()


def test_a_group_that_cannot_be_sent_fails_alone(
    appliers: tuple[Any, ClientApplier, ServerApplier],
) -> None:
    _cluster, _client, server = appliers
    run = uuid.uuid4().hex[:8]
    ok = {"pk": {"S": f"enc-{run}"}}
    bad = {"pk": {"S": f"enc-{run}-bad"}, "x": {"N": object()}}
    outcomes = server.apply(
        SERVER_REGION, [[Write(TABLE, ok, ok, {})], [Write(TABLE, bad, bad, {})]]
    )
    assert outcomes[0] == (1, None)
    assert outcomes[1][0] == 0 and isinstance(outcomes[1][1], TypeError)


class _Remote:
    """A client provider whose DynamoDB endpoint is AWS's."""

    def client(self, service: str, region: str) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def close(self) -> None:
        pass


def test_only_a_local_server_is_ever_posted_to(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.client

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a request was sent")

    monkeypatch.setattr(http.client.HTTPConnection, "request", no_network)
    server = ServerApplier(_Remote())
    k = {"pk": {"S": "x"}}
    [(n, exc)] = server.apply("eu-west-1", [[Write(TABLE, k, k, {})]])
    assert n == 0 and isinstance(exc, ValueError) and "no local server endpoint" in str(exc)
    assert not _is_fault(exc)


def test_binary_values_are_stored_as_a_client_s_write_stores_them(
    appliers: tuple[Any, ClientApplier, ServerApplier],
) -> None:
    """Binary values travel base64 on the wire and are stored as bytes on both paths:
    a condition, a filter or a set update written by a client matches them alike (they
    were once stored as base64 text on the server path, which GetItem could not show)."""
    cluster, client, server = appliers
    run = uuid.uuid4().hex[:8]
    blob, other = b"\x00\xffbin", b"\x01"
    image = {
        "bl": {"B": blob},
        "bs": {"BS": [blob, other]},
        "mp": {"M": {"deep": {"B": blob}}},
        "ls": {"L": [{"B": blob}]},
    }
    checks = [
        ("bl = :b", {":b": {"B": blob}}),
        ("contains(bs, :b)", {":b": {"B": other}}),
        ("mp.deep = :b", {":b": {"B": blob}}),
        ("ls[0] = :b", {":b": {"B": blob}}),
    ]
    for region, applier in ((CLIENT_REGION, client), (SERVER_REGION, server)):
        k = {"pk": {"S": f"bin-{run}"}}
        assert applier.apply(region, [[Write(TABLE, k, {**k, **image}, {})]]) == [(1, None)]
        ddb = cluster.client(region)
        for expression, values in checks:
            ddb.put_item(  # raises ConditionalCheckFailedException if stored otherwise
                TableName=TABLE,
                Item={**k, **image},
                ConditionExpression=expression,
                ExpressionAttributeValues=values,
            )
        ddb.update_item(
            TableName=TABLE,
            Key=k,
            UpdateExpression="ADD bs :s",
            ExpressionAttributeValues={":s": {"BS": [blob]}},
        )
        assert sorted(_stored(cluster, region, k)["bs"]["BS"]) == sorted([blob, other])


def test_a_connection_on_a_descriptor_over_1023_is_checked_and_reused(
    appliers: tuple[Any, ClientApplier, ServerApplier],
) -> None:
    """The idle connection's liveness check works whatever its descriptor (``select``
    refuses descriptors over 1023: every batch after the first failed)."""
    import os
    import resource

    cluster, _client, _ = appliers
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the open-file limit ({soft}) is too low to reach descriptor 1024")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    server = ServerApplier(cluster.replication_clients)
    try:
        k = {"pk": {"S": f"fd-{uuid.uuid4().hex[:8]}"}}
        for _ in range(3):
            assert server.apply(SERVER_REGION, [[Write(TABLE, k, k, {})]]) == [(1, None)]
        sock = server._conns[SERVER_REGION].conn.sock
        assert sock is not None and sock.fileno() > 1023
    finally:
        server.close()
        for fd in filler:
            os.close(fd)


def test_closing_cuts_off_a_request_a_stopped_server_holds(isolated_cluster: Any) -> None:
    """Stopping the emulator must not wait out the long request timeout on a stopped
    server: ``close`` cuts the request off, and it fails as a fault (kept, retried)."""
    import threading
    import time

    server = ServerApplier(isolated_cluster.replication_clients, timeout=60)
    k = {"pk": {"S": f"cut-{uuid.uuid4().hex[:8]}"}}
    assert server.apply(SERVER_REGION, [[Write(TABLE, k, k, {})]]) == [(1, None)]
    outcome: list[Any] = []
    isolated_cluster.outage(SERVER_REGION, "stop")
    try:
        worker = threading.Thread(
            target=lambda: outcome.extend(server.apply(SERVER_REGION, [[Write(TABLE, k, k, {})]]))
        )
        worker.start()
        conn = server._conns[SERVER_REGION]
        deadline = time.monotonic() + 10
        while not conn.lock.locked() and time.monotonic() < deadline:  # the request is on
            time.sleep(0.005)
        closer = threading.Thread(target=server.close, kwargs={"grace": 0.2})
        closer.start()
        closer.join(10)  # against the request's 60 s timeout
        worker.join(10)
        assert not closer.is_alive(), "close() waited for the request's timeout"
        assert not worker.is_alive(), "close() left the request waiting on its timeout"
    finally:
        isolated_cluster.restore(SERVER_REGION)
    [(n, exc)] = outcome
    assert n == 0 and isinstance(exc, ReplicaUnreachable) and _is_fault(exc)
