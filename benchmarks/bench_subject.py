"""Data-subject requests on the local cluster: locate and erase, index against scan.

    .venv/bin/python benchmarks/bench_subject.py [--items 1000] [--table-items 100000]

(a) One subject with ``--items`` posts spread over the 7 regions of the example
    policy (replicated everywhere) and a profile: wall time and requests per region
    of ``locate_subject`` and of ``erase_subject`` (which fences every replica and
    verifies each with consistent reads). Ground truth after the erase comes from
    raw boto3 scans: no live item of the subject anywhere.
(b) Locate by the ``by-subject`` index against a full-scan locate, in the same run,
    on one region's content table holding ``--table-items`` items (the subject's 20
    among them). Goal: the index is >= 20x faster at 100k items.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for k, v in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
}.items():
    os.environ.setdefault(k, v)

from regions.codec import from_ddb, to_ddb  # noqa: E402
from regions.local.cluster import LocalCluster  # noqa: E402
from regions.router import RegionRouter  # noqa: E402
from residency.logs import configure_logging  # noqa: E402
from residency.policy import GlobalDataClass, load_policy  # noqa: E402

GOAL_INDEX_SPEEDUP = 20.0


def _live_items(cluster: LocalCluster, uid: str) -> int:
    """Raw scans of every table in every region: items of the subject that are not tombstones."""
    import boto3
    from botocore.config import Config

    n = 0
    slow = Config(read_timeout=300, retries={"max_attempts": 1})
    for region in cluster.policy.regions:
        client = boto3.client(
            "dynamodb",
            region_name=region,
            endpoint_url=cluster.endpoints[region],
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=slow,
        )
        for table in ("profiles", "content", "directory"):
            kwargs: dict[str, Any] = {"TableName": cluster.table_name(table)}
            while True:
                try:
                    page = client.scan(**kwargs)
                except client.exceptions.ResourceNotFoundException:
                    break
                for raw in page.get("Items", []):
                    item = from_ddb(raw) or {}
                    mine = item.get("pk") == uid or item.get("author_id") == uid
                    if mine and "rk_del" not in item:
                        n += 1
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return n


def bench_locate_erase(items: int) -> dict[str, Any]:
    policy = load_policy(ROOT / "policies" / "social-network.yaml")
    with LocalCluster(policy, replicate=True) as cluster:
        regions = policy.regions
        settings = cluster.config(read_timeout=60)
        routers = {r: RegionRouter(policy, region=r, config=settings) for r in regions}
        home = routers["ap-south-1"]
        uid = home.new_user_id(country="IN")
        home.assign_home(uid, country="IN")
        home.put("profile", {"pk": uid, "email": "bench@example.test", "display_name": "B"})
        for i in range(items):
            routers[regions[i % len(regions)]].put(
                "content", {"pk": f"bench-{i}", "author_id": uid, "body": "x" * 100}
            )
        assert cluster.replicator is not None and cluster.replicator.wait_converged(300)
        before = _live_items(cluster, uid)
        t0 = time.perf_counter()
        location = home.locate_subject(uid)
        locate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = home.erase_subject(uid)
        erase_s = time.perf_counter() - t0
        assert result.status == "done", result.reason
        after = _live_items(cluster, uid)
        return {
            "items": items,
            "replicas found": len(location.live()),
            "live before (raw scan)": before,
            "live after (raw scan)": after,
            "locate s": locate_s,
            "locate requests": location.requests,
            "erase s": erase_s,
        }


def bench_index_vs_scan(table_items: int, rounds: int) -> dict[str, Any]:
    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    with LocalCluster(policy, replicate=False) as cluster:
        region = "eu-central-1"
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "dynamodb",
            region_name=region,
            endpoint_url=cluster.endpoints[region],
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(read_timeout=300, retries={"max_attempts": 1}),
        )
        table = cluster.table_name("content")
        # A scan page of moto over a large table takes seconds: wait for it.
        slow = cluster.config(read_timeout=300, max_attempts=1)
        router = RegionRouter(policy, region=region, config=slow)
        uid = router.new_user_id(country="DE")
        router.assign_home(uid, country="DE")
        t0 = time.perf_counter()
        for start in range(0, table_items, 25):
            batch = []
            for i in range(start, min(start + 25, table_items)):
                author = uid if i % max(1, table_items // 20) == 0 else f"u-other-{i % 5000}"
                item = {"pk": f"p-{i}", "author_id": author, "body": "x" * 80, "rk_v": "0"}
                batch.append({"PutRequest": {"Item": to_ddb(item)}})
            client.batch_write_item(RequestItems={table: batch})
        load_s = time.perf_counter() - t0
        dc = policy.data_classes["content"]
        assert isinstance(dc, GlobalDataClass)
        subjects = router.subjects
        index_s, scan_s = [], []
        found_index = found_scan = 0
        for _ in range(rounds):  # alternating, so load hits both alike
            t0 = time.perf_counter()
            found_index = len(subjects._probe("content", dc, region, uid, False, Counter()))
            index_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            found_scan = len(subjects._probe("content", dc, region, uid, True, Counter()))
            scan_s.append(time.perf_counter() - t0)
        assert found_index == found_scan, (found_index, found_scan)
        # What DynamoDB reads (and bills, and waits for) in each: its own ScannedCount.
        scanned_index = _scanned(client, table, uid, index=True)
        scanned_scan = _scanned(client, table, uid, index=False)
        return {
            "items read by index": scanned_index,
            "items read by scan": scanned_scan,
            "table items": table_items,
            "subject items": found_index,
            "load s": load_s,
            "index s": statistics.median(index_s),
            "scan s": statistics.median(scan_s),
        }


def _scanned(client: Any, table: str, uid: str, *, index: bool) -> int:
    req: dict[str, Any] = {
        "TableName": table,
        "Select": "COUNT",
        "ExpressionAttributeNames": {"#s": "author_id"},
        "ExpressionAttributeValues": {":s": {"S": uid}},
    }
    if index:
        req |= {"IndexName": "by-subject", "KeyConditionExpression": "#s = :s"}
    else:
        req["FilterExpression"] = "#s = :s"
    send = client.query if index else client.scan
    total = 0
    while True:
        page = send(**req)
        total += int(page.get("ScannedCount", 0))
        if "LastEvaluatedKey" not in page:
            return total
        req["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--table-items", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    configure_logging(level="warning")
    a = bench_locate_erase(args.items)
    print(f"(a) one subject, {a['items']} posts over 7 regions + a profile (example policy)")
    print(f"    replicas located: {a['replicas found']} (raw scan: {a['live before (raw scan)']})")
    print(f"    locate: {a['locate s']:.2f} s; requests per region: {a['locate requests']}")
    print(f"    erase (fence every replica, verify each): {a['erase s']:.2f} s")
    print(
        f"    live items of the subject after the erase (raw scans): {a['live after (raw scan)']}"
    )
    b = bench_index_vs_scan(args.table_items, args.rounds)
    ratio = b["scan s"] / b["index s"] if b["index s"] else float("inf")
    print(
        f"(b) locate in one region's content table of {b['table items']:,} items "
        f"(loaded in {b['load s']:.0f} s; the subject's {b['subject items']})"
    )
    print(
        f"    by index {b['index s'] * 1000:.1f} ms, by scan {b['scan s'] * 1000:.0f} ms: "
        f"{ratio:.1f}x"
    )
    reads = b["items read by scan"] / max(1, b["items read by index"])
    print(
        f"    items DynamoDB reads: {b['items read by index']:,} by index, "
        f"{b['items read by scan']:,} by scan ({reads:,.0f}x); moto itself walks every item "
        "for an index query too, so the wall-time ratio here understates DynamoDB's"
    )
    verdict = "PASS" if ratio >= GOAL_INDEX_SPEEDUP else "MISS"
    print(
        f"    {verdict}: index {ratio:.1f}x faster than a scan (goal >= {GOAL_INDEX_SPEEDUP:.0f}x)"
    )
    ok = a["live after (raw scan)"] == 0 and verdict == "PASS"
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
