"""pytest fixtures for the embedded local cluster (a plugin; tests/conftest.py registers it).

* ``cluster``: the minimal policy's 3-region cluster with replication, started once
  per session. After each test it is put back: outages restored, replication
  links healed and resumed, clock skew zeroed. Data written by a test stays, so
  use unique keys.
* ``isolated_cluster``: the same without replication (regions never see each
  other's writes), once per session, put back the same way.
* ``cluster_factory``: ``cluster_factory(policy, **LocalCluster kwargs)`` starts a
  cluster for a custom policy; every one is stopped at the end of the test.
* ``session_cluster`` / ``session_isolated_cluster``: the same two shared clusters
  for module- or session-scoped fixtures; nothing resets them between tests.

Tests that use any of them get the ``cluster`` marker automatically
(``pytest -m "not cluster"`` skips them).

:func:`processes_tagged` and :func:`assert_no_process_left` find every process
that inherited a tag in its environment (``LEAK_TAG_VAR``): give a command that
starts servers a fresh tag, and after it ends, no process may carry it.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from residency.policy import Policy, load_policy

_ROOT = Path(__file__).resolve().parent.parent
_FIXTURES = {
    "cluster",
    "isolated_cluster",
    "cluster_factory",
    "session_cluster",
    "session_isolated_cluster",
}


LEAK_TAG_VAR = "REGIONKIT_TEST_LEAK_TAG"


def new_leak_tag() -> str:
    return f"leak-{uuid.uuid4().hex}"


def processes_tagged(tag: str) -> dict[int, str]:
    """Every live process whose environment has ``LEAK_TAG_VAR=tag``: PID → command line.

    Every process a command starts inherits its environment (moto servers, load
    workers, anything they start), whatever its command line or working directory.
    """
    needle = f"{LEAK_TAG_VAR}={tag}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cmd:  # a zombie has no command line: it is dead, only not reaped yet
            found[int(entry.name)] = cmd.strip()
    return found


def assert_no_process_left(tag: str, timeout: float = 30.0) -> None:
    """Fail, naming them, if processes carrying ``tag`` are still alive after ``timeout``
    (a bound for processes that are exiting, generous for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while (left := processes_tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"


def _reset(c: Any) -> None:
    """Undo every fault a test may have left on a shared cluster."""
    for region in list(c.outages):
        with contextlib.suppress(Exception):
            c.restore(region)
    for region in c.policy.regions:
        if c.clock_skew.get(region):
            c.set_clock_skew(region, 0)
    if c.replicator is not None:
        c.heal()
        c.resume_replication()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
        # a real CDK synth takes 5-60 s, a browser as long: the second tier (make test-slow)
        if any(item.get_closest_marker(m) for m in ("cdk", "browser", "wallclock")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def cluster_policy() -> Policy:
    """The minimal policy (3 regions, 2 jurisdictions) the shared clusters run."""
    return load_policy(_ROOT / "policies" / "minimal.yaml")


@pytest.fixture(scope="session")
def session_cluster(cluster_policy: Policy) -> Iterator[Any]:
    """The shared replicated cluster itself (not reset between tests)."""
    from regions.local.cluster import LocalCluster

    with LocalCluster(cluster_policy, replicate=True) as c:
        yield c


@pytest.fixture(scope="session")
def session_isolated_cluster(cluster_policy: Policy) -> Iterator[Any]:
    """The shared cluster without replication itself (not reset between tests)."""
    from regions.local.cluster import LocalCluster

    with LocalCluster(cluster_policy, replicate=False) as c:
        yield c


@pytest.fixture
def cluster(session_cluster: Any) -> Iterator[Any]:
    """The shared replicated 3-region cluster, reset after the test."""
    yield session_cluster
    _reset(session_cluster)


@pytest.fixture
def isolated_cluster(session_isolated_cluster: Any) -> Iterator[Any]:
    """The shared 3-region cluster without replication, reset after the test."""
    yield session_isolated_cluster
    _reset(session_isolated_cluster)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Any]]:
    """Start clusters for custom policies; all are stopped when the test ends."""
    from regions.local.cluster import LocalCluster

    started: list[LocalCluster] = []

    def make(policy: Policy | str | Path, **kwargs: Any) -> LocalCluster:
        if not isinstance(policy, Policy):
            policy = load_policy(policy)
        c = LocalCluster(policy, **kwargs)
        started.append(c)
        return c.start()

    yield make
    errors = []
    for c in reversed(started):
        try:
            c.stop()
        except Exception as exc:  # stop them all, then fail
            errors.append(exc)
    if errors:
        raise errors[0]


def stream_records(cluster: Any, region: str, table: str, key: str) -> list[dict[str, Any]]:
    """Every record of ``table``'s stream in ``region`` for partition key ``key``, in order,
    read with raw boto3 (the ground truth of what a stream shows)."""
    client, streams = cluster.client(region), cluster.client(region, "dynamodbstreams")
    arn = client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    out: list[dict[str, Any]] = []
    while it:
        page = streams.get_records(ShardIterator=it, Limit=1000)
        out += page["Records"]
        if not page["Records"]:
            break
        it = page.get("NextShardIterator")
    return [r for r in out if r["dynamodb"]["Keys"]["pk"]["S"] == key]
