"""The embedded local cluster against real moto server processes on 127.0.0.1.

Processes: start/stop leaves nothing, servers die with a SIGKILLed parent, start-up
failures quote the server's stderr. Provisioning: every table exactly where the
policy places it, with stream, KMS, PITR, deletion protection, TTL and tags, and
idempotent. Faults: outages that boto3 clients really see, clock skew, the state
file and the control endpoint. The CLI flow is in test_local_cluster_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from regions.local.clients import ClientProfile, make_client
from regions.local.cluster import LocalCluster
from regions.local.control import ControlClient
from regions.local.provision import plan_tables, provision
from regions.local.servers import start_servers
from regions.local.state import pid_alive, read_state
from residency.errors import ClusterError, ConfigError, SettingsError, UnknownRegion
from residency.policy import Policy, parse_policy_text

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
FAST = ClientProfile(connect_timeout=0.3, read_timeout=0.3, max_attempts=1)

# Three regions, where not every table is everywhere: 'eu_feed' is global but only
# in the EU, 'profile' is pinned (and has a sort key), 'content' is everywhere.
PLACEMENT_POLICY = textwrap.dedent(
    """
    version: 1
    name: placement
    regions: [eu-central-1, eu-west-1, us-east-1]
    default_jurisdiction: US
    jurisdictions:
      EU: {law: GDPR, countries: [DE, IE], regions: [eu-central-1, eu-west-1],
           home_regions: [eu-central-1, eu-west-1]}
      US: {law: CCPA, countries: [US], regions: [us-east-1], home_regions: [us-east-1]}
    data_classes:
      profile: {kind: pinned, table: profiles, sort_key: sk, pii_attributes: [email]}
      content: {kind: global, table: content, replicas: [eu-central-1, eu-west-1, us-east-1]}
      eu_feed: {kind: global, table: eu-feed, replicas: [eu-central-1, eu-west-1]}
      directory: {kind: global, table: directory,
                  replicas: [eu-central-1, eu-west-1, us-east-1]}
    system: {conflict_log_table: conflicts}
    targets:
      drills: {rto_seconds: 30, rpo_seconds: 5, convergence_seconds: 10, max_age_days: 30}
    """
)
PREFIX = "t1-"


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds; the timeout is only a bound for a broken run,
    generous so that a loaded machine does not fail a correct one."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    _wait_until(lambda: not any(pid_alive(p) for p in pids), timeout)
    return [p for p in pids if pid_alive(p)]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def placement_policy() -> Policy:
    return parse_policy_text(PLACEMENT_POLICY, source="placement.yaml")


@pytest.fixture(scope="module")
def placed(placement_policy: Policy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A non-replicating cluster of the placement policy, with a state file and control."""
    state = tmp_path_factory.mktemp("state") / "cluster.json"
    with LocalCluster(
        placement_policy, table_prefix=PREFIX, replicate=False, state_file=state, control=True
    ) as c:
        yield c


# --- processes --------------------------------------------------------------------------


def test_start_stop_leaves_no_process_and_no_file(tmp_path: Path) -> None:
    servers = start_servers(["eu-west-1", "us-east-1"], log_dir=tmp_path)
    pids = [s.pid for s in servers.values()]
    assert all(pid_alive(p) for p in pids)
    assert all(s.ping() for s in servers.values())
    for s in servers.values():
        s.stop()
        s.stop()  # idempotent
    assert _wait_gone(pids) == []
    assert list(tmp_path.iterdir()) == []  # the log files went with them
    assert all(s.state == "stopped" for s in servers.values())


def test_cluster_stop_leaves_no_process(cluster_policy: Policy) -> None:
    c = LocalCluster(cluster_policy, replicate=False)
    with c:
        pids = list(c.pids.values())
        assert len(pids) == 3
        assert all(pid_alive(p) for p in pids)
    assert _wait_gone(pids) == []
    assert not c.running
    c.stop()  # idempotent
    with pytest.raises(ClusterError, match="already started"):
        c.start()


@pytest.mark.timeout(60)
def test_servers_die_when_the_parent_is_sigkilled() -> None:
    code = textwrap.dedent(
        """
        import json, time
        from regions.local.servers import start_servers
        s = start_servers(["eu-west-1", "us-east-1"])
        print(json.dumps({r: v.pid for r, v in s.items()}), flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_child_env()
    )
    try:
        assert child.stdout is not None
        pids = list(json.loads(child.stdout.readline()).values())
        assert len(pids) == 2
        assert all(pid_alive(p) for p in pids)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        assert _wait_gone(pids) == [], "servers outlived their SIGKILLed parent"
    finally:
        child.kill()
        child.wait()


@pytest.mark.timeout(60)
def test_a_paused_cluster_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    """A LocalCluster in a child process, one region SIGSTOPped: SIGKILL the child."""
    state = tmp_path / "cluster.json"
    code = textwrap.dedent(
        f"""
        import json, time
        from regions.local.cluster import LocalCluster
        from residency.policy import load_policy
        c = LocalCluster(load_policy({str(ROOT / "policies/minimal.yaml")!r}),
                         replicate=False, state_file={str(state)!r}).start()
        c.outage("eu-west-1")
        print(json.dumps(c.pids), flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_child_env()
    )
    try:
        assert child.stdout is not None
        pids = list(json.loads(child.stdout.readline()).values())
        assert read_state(state) is not None
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        assert _wait_gone(pids) == []
    finally:
        child.kill()
        child.wait()
    tmp = Path(tempfile.gettempdir())
    left = list(tmp.glob(f"regionkit-cluster-{child.pid}-*"))
    assert left, "the SIGKILLed owner could not remove its run directory"
    # The stale state file (its owner is dead) does not block a new cluster, and the
    # new cluster sweeps away what the dead one left in the temporary directory.
    policy = parse_policy_text((ROOT / "policies/minimal.yaml").read_text())
    with LocalCluster(policy, replicate=False, state_file=state) as c:
        state_now = read_state(state)
        assert state_now is not None and state_now["pids"]["owner"] == os.getpid()
        assert c.running
        assert not any(p.exists() for p in left)
    assert not state.exists()


def test_servers_started_from_a_short_lived_thread_survive_it() -> None:
    """PR_SET_PDEATHSIG follows the forking *thread*: the spawner thread must outlive it."""
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(start_servers(["eu-west-1"])))
    t.start()
    t.join()
    server = box["eu-west-1"]
    try:
        # The parent-death signal is sent while the thread exits in the kernel, before
        # its /proc entry goes: once that has gone, a wrongly armed server is dead.
        task = Path(f"/proc/self/task/{t.native_id}")
        assert _wait_until(lambda: not task.exists())
        assert server.alive()
        assert server.ping()
    finally:
        server.stop()


def test_start_failure_quotes_the_server_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regions.local import servers

    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nsys.stderr.write('boom: no moto here\\n')\nsys.exit(3)\n")
    monkeypatch.setattr(servers, "_SERVER_MAIN", broken)
    with pytest.raises(ClusterError) as err:
        start_servers(["eu-west-1", "us-east-1"], log_dir=tmp_path, timeout=10)
    assert "eu-west-1" in str(err.value)
    assert "exited with code 3" in str(err.value)
    assert "boom: no moto here" in str(err.value)
    assert list(tmp_path.iterdir()) == [broken]  # no log file left behind


@pytest.mark.timeout(30)
def test_start_timeout_is_bounded_and_kills_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regions.local import servers

    hung = tmp_path / "hung.py"
    pid_file = tmp_path / "pid"
    hung.write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    monkeypatch.setattr(servers, "_SERVER_MAIN", hung)
    # Bounded: the hung program sleeps 60 s, the test's own timeout is 30 s.
    with pytest.raises(ClusterError, match="did not report ready in time"):
        start_servers(["eu-west-1"], log_dir=tmp_path, timeout=1.0)
    assert _wait_gone([int(pid_file.read_text())]) == []


def _raw(url: str, data: bytes) -> bytes:
    """Send raw bytes; read until the server closes (every request here ends with a close)."""
    import socket

    host, _, port = url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_keep_alive_server_speaks_plain_http(isolated_cluster: Any) -> None:
    url = isolated_cluster.endpoints["eu-west-1"]
    auth = (
        "Authorization: AWS4-HMAC-SHA256 Credential=x/20200101/eu-west-1/dynamodb/"
        "aws4_request, SignedHeaders=host, Signature=0\r\n"
    )
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n"
        "Content-Type: application/x-amz-json-1.0\r\n" + auth
    )
    # two requests on one connection (keep-alive), the second one chunked, then close
    two = (
        head
        + "Content-Length: 2\r\n\r\n{}"
        + head
        + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ).encode()
    reply = _raw(url, two)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert b"TableNames" in reply and reply.count(b"Connection: close") == 1
    # HTTP/1.0 closes after one answer
    reply = _raw(
        url, (head.replace("HTTP/1.1", "HTTP/1.0") + "Content-Length: 2\r\n\r\n{}").encode()
    )
    assert reply.split(b" ", 2)[1] == b"200" and b"Connection: close" in reply
    # garbage is refused, and the server keeps serving
    assert _raw(url, b"NONSENSE\r\n\r\n").split(b" ", 2)[1] == b"400"
    assert isolated_cluster.servers["eu-west-1"].ping()
    # an unknown target is moto's answer, not a crash
    reply = _raw(
        url,
        (
            head.replace("ListTables", "NoSuchCall") + "Content-Length: 2\r\n"
            "Connection: close\r\n\r\n{}"
        ).encode(),
    )
    assert reply.split(b" ", 2)[1] in {b"400", b"404", b"500"}


def test_loopback_only() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        start_servers(["eu-west-1"], host="0.0.0.0")
    with pytest.raises(SettingsError, match="loopback"):
        make_client("dynamodb", "eu-west-1", "http://10.1.2.3:4566")
    with pytest.raises(ConfigError, match="loopback"):
        ControlClient("http://example.com:8080")


# --- provisioning -----------------------------------------------------------------------


def test_every_table_is_exactly_where_the_policy_places_it(
    placed: Any, placement_policy: Policy
) -> None:
    expected: dict[str, set[str]] = {r: set() for r in placement_policy.regions}
    for table, regions in placement_policy.table_placements().items():
        for r in regions:
            expected[r].add(PREFIX + table)
    for region in placement_policy.regions:
        assert set(placed.client(region).list_tables()["TableNames"]) == expected[region]
    # The EU-only global table is not in the US; the pinned table and the system
    # tables are in every region.
    assert PREFIX + "eu-feed" not in expected["us-east-1"]
    assert all(PREFIX + "profiles" in expected[r] for r in placement_policy.regions)
    assert all(PREFIX + "conflicts" in expected[r] for r in placement_policy.regions)
    assert all(PREFIX + "directory" in expected[r] for r in placement_policy.regions)


def test_tables_have_what_the_audit_asks_for(placed: Any, placement_policy: Policy) -> None:
    for plan in plan_tables(placement_policy, PREFIX):
        for region in plan.regions:
            ddb, kms = placed.client(region), placed.client(region, "kms")
            t = ddb.describe_table(TableName=plan.table)["Table"]
            keys = {k["AttributeName"]: k["KeyType"] for k in t["KeySchema"]}
            want = {plan.partition_key: "HASH"} | (
                {plan.sort_key: "RANGE"} if plan.sort_key else {}
            )
            assert keys == want
            assert t["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
            assert t["StreamSpecification"] == {
                "StreamEnabled": True,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            }
            assert t["DeletionProtectionEnabled"] is True
            sse = t["SSEDescription"]
            assert sse["Status"] == "ENABLED" and sse["SSEType"] == "KMS"
            assert f":kms:{region}:" in sse["KMSMasterKeyArn"]  # a key of this region
            key = kms.describe_key(KeyId=f"alias/regionkit-{plan.table}")["KeyMetadata"]
            assert key["Arn"] == sse["KMSMasterKeyArn"]
            assert key["KeyManager"] == "CUSTOMER"
            pitr = ddb.describe_continuous_backups(TableName=plan.table)
            assert (
                pitr["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
                    "PointInTimeRecoveryStatus"
                ]
                == "ENABLED"
            )
            ttl = ddb.describe_time_to_live(TableName=plan.table)["TimeToLiveDescription"]
            assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
            tags = {
                x["Key"]: x["Value"]
                for x in ddb.list_tags_of_resource(ResourceArn=t["TableArn"])["Tags"]
            }
            jurisdiction = (
                placement_policy.jurisdiction_of_region(region)
                if plan.kind == "pinned"
                else "global"
            )
            assert tags["regionkit:data-class"] == plan.data_class
            assert tags["regionkit:jurisdiction"] == jurisdiction
            assert tags["regionkit:policy"] == "placement"
            assert tags["DisruptDynamoDb"] == "Allowed"


def test_pinned_tables_are_tagged_with_their_regions_jurisdiction(placed: Any) -> None:
    def jurisdiction(region: str) -> str:
        ddb = placed.client(region)
        arn = ddb.describe_table(TableName=PREFIX + "profiles")["Table"]["TableArn"]
        tags = ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]
        return str(next(t["Value"] for t in tags if t["Key"] == "regionkit:jurisdiction"))

    assert jurisdiction("eu-west-1") == "EU"
    assert jurisdiction("eu-central-1") == "EU"
    assert jurisdiction("us-east-1") == "US"


def test_provisioning_is_idempotent(placed: Any, placement_policy: Policy) -> None:
    before = placed.client("eu-west-1").describe_table(TableName=PREFIX + "content")["Table"]
    report = provision(placement_policy, placed.clients, table_prefix=PREFIX)
    total = sum(len(p.regions) for p in plan_tables(placement_policy, PREFIX))
    assert report.created == 0
    assert report.existing == total
    after = placed.client("eu-west-1").describe_table(TableName=PREFIX + "content")["Table"]
    assert after["SSEDescription"] == before["SSEDescription"]  # same key, not a new one
    assert after["CreationDateTime"] == before["CreationDateTime"]
    aliases = placed.client("eu-west-1", "kms").list_aliases()["Aliases"]
    assert sum(a["AliasName"] == f"alias/regionkit-{PREFIX}content" for a in aliases) == 1


def test_provisioning_converges_a_drifted_table(placed: Any, placement_policy: Policy) -> None:
    ddb = placed.client("us-east-1")
    table = PREFIX + "directory"
    ddb.update_table(TableName=table, DeletionProtectionEnabled=False)
    ddb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )
    provision(placement_policy, placed.clients, table_prefix=PREFIX, regions=["us-east-1"])
    assert ddb.describe_table(TableName=table)["Table"]["DeletionProtectionEnabled"] is True
    status = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert status["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


# --- isolation, replication, outages ----------------------------------------------------


def test_regions_are_isolated_without_replication(isolated_cluster: Any) -> None:
    isolated_cluster.client("eu-west-1").put_item(
        TableName="content", Item={"pk": {"S": "isolated-1"}, "v": {"S": "eu"}}
    )
    got = isolated_cluster.client("eu-west-1").get_item(
        TableName="content", Key={"pk": {"S": "isolated-1"}}
    )
    assert got["Item"]["v"] == {"S": "eu"}
    for region in ("eu-central-1", "us-east-1"):
        other = isolated_cluster.client(region).get_item(
            TableName="content", Key={"pk": {"S": "isolated-1"}}
        )
        assert "Item" not in other


def test_a_write_replicates_to_every_replica(cluster: Any) -> None:
    cluster.client("us-east-1").put_item(
        TableName="content", Item={"pk": {"S": "repl-1"}, "v": {"S": "us"}}
    )
    assert cluster.replicator.wait_converged(10)
    for region in cluster.policy.regions:
        item = cluster.client(region).get_item(TableName="content", Key={"pk": {"S": "repl-1"}})
        assert item["Item"]["v"] == {"S": "us"}, region


def test_the_rpo_exposure_over_the_control_endpoint_counts_writes(cluster: Any) -> None:
    """What a drill against ``local up`` reads as RPO exposure: one age per write made in
    the region that a replica lacks, from the replication engine (a review found the
    remote backend counted missing copies, two per write here, aged by the last lag)."""
    from regions.local.control import ControlServer

    server = ControlServer(cluster, token="t").start()
    try:
        client = ControlClient(server.url, "t")
        cluster.pause_replication(region="us-east-1")
        for i in range(3):
            cluster.client("us-east-1").put_item(
                TableName="content", Item={"pk": {"S": f"rpo-{i}"}, "v": {"S": "x"}}
            )
        ages = client.unreplicated_ages("us-east-1")
        assert len(ages) == 3 and all(a >= 0 for a in ages)  # 3 writes, 2 peers each
        assert ages == sorted(ages)
        assert client.unreplicated_ages("eu-west-1") == []
        cluster.resume_replication(region="us-east-1")
        assert cluster.replicator.wait_converged(10)
        assert client.unreplicated_ages("us-east-1") == []
    finally:
        cluster.resume_replication()
        server.stop()


def _short_client(c: Any, region: str) -> Any:
    return make_client("dynamodb", region, c.endpoints[region], profile=FAST)


def test_stop_outage_makes_clients_time_out_and_restore_brings_the_data_back(
    isolated_cluster: Any,
) -> None:
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    c = isolated_cluster
    c.client("eu-central-1").put_item(TableName="content", Item={"pk": {"S": "outage-1"}})
    client = _short_client(c, "eu-central-1")
    c.outage("eu-central-1")
    assert c.outages == {"eu-central-1": "stop"}
    assert c.status()["servers"]["eu-central-1"]["state"] == "paused"
    # One attempt with 0.3 s timeouts (FAST): a timeout error, not a hang, not an answer.
    with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
        client.get_item(TableName="content", Key={"pk": {"S": "outage-1"}})
    # the other regions are unaffected
    c.client("eu-west-1").list_tables()
    c.restore("eu-central-1")
    item = client.get_item(TableName="content", Key={"pk": {"S": "outage-1"}})
    assert item["Item"]["pk"] == {"S": "outage-1"}


def test_refuse_outage_refuses_connections_and_keeps_the_data(isolated_cluster: Any) -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    c = isolated_cluster
    c.client("us-east-1").put_item(TableName="content", Item={"pk": {"S": "outage-2"}})
    client = _short_client(c, "us-east-1")
    client.list_tables()  # a pooled keep-alive connection exists now
    c.outage("us-east-1", mode="refuse")
    for _ in range(2):  # the pooled connection is dropped; a new one is refused
        with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
            client.get_item(TableName="content", Key={"pk": {"S": "outage-2"}})
    fresh = _short_client(c, "us-east-1")
    with pytest.raises(EndpointConnectionError):
        fresh.list_tables()
    c.restore("us-east-1")
    c.restore("us-east-1")  # idempotent
    item = client.get_item(TableName="content", Key={"pk": {"S": "outage-2"}})
    assert item["Item"]["pk"] == {"S": "outage-2"}


def test_writes_during_an_outage_reach_the_region_after_restore(cluster: Any) -> None:
    cluster.outage("eu-west-1", mode="refuse")
    cluster.client("eu-central-1").put_item(
        TableName="content", Item={"pk": {"S": "repl-outage"}, "v": {"S": "1"}}
    )

    def held_for_eu_west_1() -> bool:  # read from the stream, not deliverable yet
        return any(
            m.src == "eu-central-1" and m.dst == "eu-west-1" and m.pending > 0
            for m in cluster.replicator.metrics()
        )

    assert _wait_until(held_for_eu_west_1)
    cluster.restore("eu-west-1")
    assert cluster.replicator.wait_converged(10)
    got = cluster.client("eu-west-1").get_item(
        TableName="content", Key={"pk": {"S": "repl-outage"}}
    )
    assert got["Item"]["v"] == {"S": "1"}


def test_outage_validates_its_input(isolated_cluster: Any) -> None:
    with pytest.raises(UnknownRegion):
        isolated_cluster.outage("mars-north-1")
    with pytest.raises(ConfigError, match="mode"):
        isolated_cluster.outage("eu-west-1", mode="explode")
    with pytest.raises(ClusterError, match="replication is off"):
        isolated_cluster.pause_replication(region="eu-west-1")


# --- skew, state file, settings, control ------------------------------------------------


def test_clock_skew_is_live_and_in_the_state_file(placed: Any) -> None:
    view = placed.clock_skew
    clock = placed.physical_clock("eu-west-1")
    placed.set_clock_skew("eu-west-1", 5_000)
    try:
        assert view["eu-west-1"] == 5_000  # a live view
        before = time.time_ns() // 1_000_000
        assert clock() - before >= 5_000
        state = read_state(placed.state_file)
        assert state is not None and state["clock_skew_ms"]["eu-west-1"] == 5_000
        with pytest.raises(TypeError):
            view["eu-west-1"] = 1
        with pytest.raises(ConfigError):
            placed.set_clock_skew("eu-west-1", 1.5)
    finally:
        placed.set_clock_skew("eu-west-1", 0)


def test_state_file_and_settings(placed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    state = read_state(placed.state_file)
    assert state is not None
    assert state["policy"] == "placement"
    assert state["endpoints"] == placed.endpoints
    assert state["control"] == placed.control_url
    assert state["pids"]["owner"] == os.getpid()
    assert state["pids"]["servers"] == placed.pids
    assert {"started_at", "clock_skew_ms"} <= set(state)
    assert (placed.state_file.stat().st_mode & 0o777) == 0o600
    from residency.settings import Settings

    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(placed.state_file))
    assert Settings().endpoints == placed.endpoints
    assert placed.config(region="eu-west-1").endpoints == placed.endpoints


def test_a_running_cluster_blocks_a_second_one_on_its_state_file(
    placed: Any, placement_policy: Policy, tmp_path: Path
) -> None:
    # The owner recorded in the state file is this (live) process, so fake another one.
    other = tmp_path / "cluster.json"
    data = json.loads(placed.state_file.read_text())
    data["pids"]["owner"] = os.getppid()
    other.write_text(json.dumps(data))
    with pytest.raises(ClusterError, match="already running"):
        LocalCluster(placement_policy, state_file=other).start()


def test_control_endpoint(placed: Any) -> None:
    client = ControlClient(placed.control_url, placed.control_token)
    status = client.status()
    assert status["policy"] == "placement"
    assert set(status["servers"]) == set(placed.policy.regions)
    assert all(s["alive"] and s["state"] == "up" for s in status["servers"].values())
    client.skew("us-east-1", -250)
    assert placed.clock_skew["us-east-1"] == -250
    client.skew("us-east-1", 0)
    client.outage("us-east-1", "refuse")
    assert client.status()["servers"]["us-east-1"]["state"] == "refusing"
    client.restore("us-east-1")
    assert client.status()["outages"] == {}
    with pytest.raises(ConfigError, match="unknown region"):
        client.outage("mars-north-1")
    with pytest.raises(ConfigError, match="number"):
        client.skew("us-east-1", "soon")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="replication is off"):
        client.heal()
    with pytest.raises(ConfigError, match="token"):
        ControlClient(placed.control_url, "wrong").status()
    with pytest.raises(ClusterError, match="not stoppable"):
        client.stop()
