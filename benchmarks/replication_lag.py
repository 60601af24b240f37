"""Replication lag and post-pause convergence on the local cluster (bench_replication's part 2).

Three regions of the minimal policy; writer threads in every region put items
into the global ``content`` table at a fixed aggregate rate through plain boto3
clients. The emulator measures each applied change's lag (apply time minus the
source record's creation time, as CloudWatch's ``ReplicationLatency`` does).
Then every link into and out of one region pauses for 10 s while the writes go
on; after resume we time how long it takes until every region holds every item
(counted by the servers, not by the emulator; every key is written once), then
check the replicas identical, item for item, by raw scans. ``measure(applier=...)``
runs it with the cluster's server-side apply or with the client path before it.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def _writers(cluster: Any, table: str, rate: float, seconds: float, tag: str) -> int:
    """Put items from a thread per region at ``rate`` writes/s in total; return writes done."""
    regions = list(cluster.policy.regions)
    per = rate / len(regions)
    done = [0] * len(regions)
    stop = time.monotonic() + seconds

    def run(i: int, region: str) -> None:
        client = cluster.client(region)
        n = 0
        next_at = time.monotonic()
        while time.monotonic() < stop:
            client.put_item(
                TableName=table, Item={"pk": {"S": f"{tag}-{region}-{n}"}, "v": {"N": str(n)}}
            )
            n += 1
            next_at += 1 / per
            time.sleep(max(0.0, next_at - time.monotonic()))
        done[i] = n

    threads = [threading.Thread(target=run, args=(i, r)) for i, r in enumerate(regions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def _contents(cluster: Any, table: str, region: str) -> list[str]:
    """Every item of ``table`` in ``region``, by a raw boto3 scan (canonical JSON, sorted)."""
    client, items, kwargs = cluster.client(region), [], {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend(json.dumps(i, sort_keys=True, default=str) for i in page["Items"])
        if "LastEvaluatedKey" not in page:
            return sorted(items)
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _identical(cluster: Any, table: str) -> bool:
    first, *rest = (_contents(cluster, table, r) for r in cluster.policy.regions)
    return all(other == first for other in rest)


def _wait_all_hold(cluster: Any, table: str, expected: int, timeout: float) -> float | None:
    """Seconds until every region holds ``expected`` items (None: not within ``timeout``).

    The ground truth, outside the emulator: every key is written once, so a region
    has everything when its item count (moto's ``DescribeTable`` counts live) is
    the number of writes.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        counts = [
            cluster.client(r).describe_table(TableName=table)["Table"]["ItemCount"]
            for r in cluster.policy.regions
        ]
        if all(c == expected for c in counts):
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def measure(
    rate: float = 120.0, seconds: float = 8.0, pause_s: float = 10.0, applier: str = "server"
) -> dict[str, Any]:
    """One run on a fresh cluster. ``applier`` is how replicated changes are written:
    ``server`` (the cluster's own: inside each region's server) or ``client`` (a
    conditional PutItem per change through boto3, the path before it; the baseline)."""
    from regions.local.appliers import ClientApplier
    from regions.local.cluster import LocalCluster
    from regions.local.replication import APPLY_WORKERS
    from residency.policy import load_policy

    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    out: dict[str, Any] = {}
    with LocalCluster(policy) as cluster:
        rep = cluster.replicator
        assert rep is not None
        engine = rep.engine
        if applier == "client":  # nothing written yet: nothing in flight to swap under
            engine.applier = ClientApplier(cluster.replication_clients, workers=APPLY_WORKERS)
        # steady writes: lag
        t0 = time.monotonic()
        writes = _writers(cluster, "content", rate, seconds, "steady")
        elapsed = time.monotonic() - t0
        out["steady_all_hold"] = _wait_all_hold(cluster, "content", writes, 60)
        rep.wait_converged(30)
        lags = [m for ln in engine._links.values() if ln.table == "content" for m in ln.lags_ms]
        out["writes"] = writes
        out["writes_per_s"] = writes / elapsed
        out["lag_p50_ms"] = statistics.median(lags) if lags else float("nan")
        out["lag_p99_ms"] = _pct(lags, 0.99)
        out["lag_samples"] = len(lags)
        # a 10 s pause of every link into and out of one region, writes going on
        region = policy.regions[0]
        rep.faults.pause(src=region)
        rep.faults.pause(dst=region)
        backlog_writes = _writers(cluster, "content", rate, pause_s, "paused")
        backlog = engine.pending()
        rep.faults.resume(src=region)
        rep.faults.resume(dst=region)
        t_resume = time.monotonic()
        held = _wait_all_hold(cluster, "content", writes + backlog_writes, 60)
        quiet = rep.wait_converged(60)
        t_quiet = time.monotonic()
        out["pause_writes"] = backlog_writes
        out["pause_backlog"] = backlog
        out["converge_s"] = float("inf") if held is None else held
        out["quiet_s"] = t_quiet - t_resume if quiet else float("inf")
        out["identical"] = _identical(cluster, "content")
    return out
