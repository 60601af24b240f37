"""The audit's data scan: throughput beside a naive scan, and memory at 10k and 100k items.

Runs against a real local cluster (one moto server process per region, so the
regions really do run in parallel, on as many cores as the machine has) holding
the minimal policy's three regions. Two datasets are loaded side by side under
two table prefixes with ``batch_write_item`` (a thread per region): ``--items``
(default 100,000) and ``--small`` (default 10,000) items in total, split across
the regions as profiles (45%, pinned, with PII attributes), content (35%, global)
and directory entries (20%, global).

Measured on the large dataset, in the same run:

* **naive**: one thread scans every table the audit reads, region after region,
  page after page (``Scan`` with no segments), once returning whole items and
  once reading what the audit reads (whole items of the global tables and the
  conflict logs, for PII by name at any depth; the key of the pinned tables), so
  the comparison isolates the audit's parallelism;
* **audit**: ``run_audit(checks=["data"])``, the four data checks with PII value
  detection at its default sample rate (1 item in 20; names and keys on every
  item), with automatic and with fixed parallel-scan segments; then once more
  with ``deep=True`` (values of every item), reported as items/s.

Goal: the audit reads at least 2x the items/s of the naive scan (projected).
CPU time (this process plus the server processes) is printed beside each run:
on the local cluster the moto servers do ~95% of the work, on this machine's
cores, so the speed-up cannot exceed the number of cores the run gets (the
naive scan keeps about one busy); on a shared machine it gets fewer.

Latency model: the same comparison against a stub DynamoDB whose Scan pages
take ``--model-latency-ms`` of *sleeping* service time (no moto), as real
DynamoDB's do on AWS's servers: what the parallel segments buy when the
service is not on our cores. Synthetic, and labelled so in the output.

Memory: the audit runs in a fresh subprocess over each dataset and reports its
peak RSS (``ru_maxrss``). Goal: the peak grows by at most 30 MB from 10k to 100k
items (streaming: no table is held in memory).

    python benchmarks/bench_audit.py [--items 100000] [--small 10000] [--segments 4]
                                     [--model-latency-ms 25] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_SPEEDUP = 2.0
GOAL_RSS_GROWTH_MB = 30.0
REGIONS = ("eu-central-1", "eu-west-1", "us-east-1")
SHARES = {"profiles": 0.45, "content": 0.35, "directory": 0.20}


class Clients:
    """The audit's ClientProvider over local endpoints, with room for parallel scans."""

    def __init__(self, endpoints: dict[str, str]) -> None:
        from regions.local.clients import ClientProfile

        self.endpoints = endpoints
        self.profile = ClientProfile(
            connect_timeout=2.0, read_timeout=120.0, max_pool_connections=32
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str) -> Any:
        from regions.local.clients import make_client

        with self._lock:
            key = (service, region)
            if key not in self._clients:
                self._clients[key] = make_client(
                    service, region, self.endpoints[region], profile=self.profile
                )
            return self._clients[key]


def _jurisdiction(region: str) -> str:
    return "EU" if region.startswith("eu-") else "US"


def load(clients: Clients, prefix: str, total: int) -> float:
    """Load ``total`` items across the regions; return the seconds it took."""
    from regions.ids import mint_user_id

    per_region = total // len(REGIONS)

    def one(region: str) -> None:
        ddb = clients.client("dynamodb", region)
        n_prof = int(per_region * SHARES["profiles"])
        n_dir = int(per_region * SHARES["directory"])
        n_content = per_region - n_prof - n_dir
        users = [mint_user_id(region) for _ in range(n_prof)]
        rows: dict[str, list[dict[str, Any]]] = {"profiles": [], "content": [], "directory": []}
        for i, uid in enumerate(users):
            rows["profiles"].append(
                {
                    "pk": {"S": uid},
                    "email": {"S": f"user{i}@example.test"},
                    "display_name": {"S": f"User {i}"},
                    "phone": {"S": f"+1 555 {i:07d}"},
                    "bio": {"S": "b" * 150},
                    "rk_v": {"S": f"{i:012x}.0000.{region}"},
                }
            )
        for uid in users[:n_dir]:
            rows["directory"].append(
                {
                    "pk": {"S": uid},
                    "home_region": {"S": region},
                    "jurisdiction": {"S": _jurisdiction(region)},
                    "status": {"S": "active"},
                }
            )
        for i in range(n_content):
            rows["content"].append(
                {
                    "pk": {"S": f"post-{region}-{i}"},
                    "author": {"S": users[i % len(users)]},
                    "body": {"S": "c" * 200},
                    "likes": {"N": str(i % 97)},
                }
            )
        for table, items in rows.items():
            for i in range(0, len(items), 25):
                batch = [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]
                request = {prefix + table: batch}
                while request:
                    out = ddb.batch_write_item(RequestItems=request)
                    request = out.get("UnprocessedItems") or {}

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(r,)) for r in REGIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of the given server processes."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def naive_scan(
    clients: Any,
    targets: list[tuple[str, str]],
    projection: dict[str, list[str] | None] | None,
) -> tuple[int, float]:
    """One thread, table after table, page after page; (items, seconds)."""
    t0 = time.perf_counter()
    n = 0
    for region, table in targets:
        ddb = clients.client("dynamodb", region)
        kwargs: dict[str, Any] = {"TableName": table}
        names = projection.get(table) if projection is not None else None
        if names is not None:
            kwargs["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(names)))
            kwargs["ExpressionAttributeNames"] = {f"#a{i}": a for i, a in enumerate(names)}
        while True:
            page = ddb.scan(**kwargs)
            n += len(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
    return n, time.perf_counter() - t0


def run_data_audit(
    clients: Any, prefix: str, segments: int | None, deep: bool = False
) -> tuple[Any, float]:
    from residency.audit import run_audit
    from residency.policy import load_policy

    path = ROOT / "policies" / "minimal.yaml"
    t0 = time.perf_counter()
    report = run_audit(
        load_policy(path),
        clients,
        policy_path=path,
        checks=["data"],
        table_prefix=prefix,
        segments=segments,
        account_id="123456789012",
        deep=deep,
    )
    return report, time.perf_counter() - t0


def _peak_rss_kb() -> int:
    """This process's peak RSS. Linux keeps ru_maxrss across exec (a child started by a
    big parent inherits the parent's figure), so read VmHWM, which exec resets."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(endpoints: dict[str, str], prefix: str) -> None:
    """In a fresh process: run the data audit and report the peak RSS."""
    clients = Clients(endpoints)
    import residency.audit  # noqa: F401  (imports before the baseline)
    from residency.audit import run_audit  # noqa: F401

    base = _peak_rss_kb()
    report, seconds = run_data_audit(clients, prefix, None)
    peak = _peak_rss_kb()
    items = sum(e.items_scanned or 0 for e in report.inventory)
    print(
        json.dumps(
            {
                "base_kb": base,
                "peak_kb": peak,
                "items": items,
                "seconds": seconds,
                "failing": len(report.failing("low")),
            }
        )
    )


def measure_rss(endpoints: dict[str, str], prefix: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", json.dumps(endpoints), "--prefix", prefix],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class _StubTable:
    """A DynamoDB table that is not on this machine: each Scan page takes ``latency``
    seconds of (sleeping) service time and holds up to ``page`` items, generated on
    the fly. Models real DynamoDB, whose work runs on AWS's servers, not our cores."""

    def __init__(self, region: str, name: str, n: int, latency: float, page: int) -> None:
        self.region, self.name, self.n, self.latency, self.page = region, name, n, latency, page

    def item(self, i: int) -> dict[str, Any]:
        from regions.ids import mint_user_id

        if self.name.endswith("profiles"):
            return {"pk": {"S": mint_user_id(self.region, idempotency_key=str(i))}}
        if self.name.endswith("directory"):
            uid = mint_user_id(self.region, idempotency_key=str(i))
            j = _jurisdiction(self.region)
            return {
                "pk": {"S": uid},
                "home_region": {"S": self.region},
                "jurisdiction": {"S": j},
                "status": {"S": "active"},
            }
        return {"pk": {"S": f"post-{self.region}-{i}"}}

    def scan(self, **kw: Any) -> dict[str, Any]:
        time.sleep(self.latency)
        seg, total = kw.get("Segment", 0), kw.get("TotalSegments", 1)
        start = int(kw.get("ExclusiveStartKey", {}).get("i", {}).get("N", seg - total))
        idx = list(range(start + total, self.n, total))[: min(self.page, kw.get("Limit", 10**9))]
        out: dict[str, Any] = {"Items": [self.item(i) for i in idx], "Count": len(idx)}
        if idx and idx[-1] + total < self.n:
            out["LastEvaluatedKey"] = {"i": {"N": str(idx[-1])}}
        return out


class _StubDynamo:
    def __init__(self, tables: dict[str, _StubTable]) -> None:
        self.tables = tables

    def list_tables(self, **kw: Any) -> dict[str, Any]:
        return {"TableNames": sorted(self.tables)}

    def describe_table(self, TableName: str) -> dict[str, Any]:
        t = self.tables[TableName]
        return {"Table": {"TableName": TableName, "ItemCount": t.n, "TableSizeBytes": t.n * 300}}

    def scan(self, **kw: Any) -> dict[str, Any]:
        return self.tables[kw["TableName"]].scan(**kw)


class StubClients:
    def __init__(self, total: int, latency: float, page: int) -> None:
        per_region = total // len(REGIONS)
        self.ddb = {
            r: _StubDynamo(
                {
                    **{
                        f"stub-{t}": _StubTable(
                            r, f"stub-{t}", int(per_region * share), latency, page
                        )
                        for t, share in SHARES.items()
                    },
                    # the system tables the audit plans beside the policy's (empty here)
                    **{
                        f"stub-{name}": _StubTable(r, f"stub-{name}", 0, latency, page)
                        for name in ("regionkit-conflicts", "regionkit-lineage")
                    },
                }
            )
            for r in REGIONS
        }

    def client(self, service: str, region: str) -> Any:
        if service == "dynamodb":
            return self.ddb[region]
        raise RuntimeError(f"the latency model has no {service}")


def latency_model(total: int, latency: float, page: int, segments: int) -> None:
    """The same comparison where the service time is not on this machine's cores."""
    clients = StubClients(total, latency, page)
    targets = [(r, f"stub-{t}") for r in REGIONS for t in SHARES]
    n_naive, t_naive = naive_scan(clients, targets, None)
    rows = [("naive sequential scan", n_naive, t_naive)]
    for segs in (None, segments):
        report, t = run_data_audit(clients, "stub-", segs)
        n = sum(e.items_scanned or 0 for e in report.inventory)
        assert not report.failing("low"), [f.reason for f in report.failing("low")]
        rows.append((f"audit data scan, {'auto' if segs is None else segs} segments", n, t))
    print(
        f"latency model: {total:,} items, {page:,} items per page, {latency * 1000:.0f} ms "
        "of service time per Scan page (no moto; the service is not on our cores)"
    )
    for name, n, t in rows:
        print(f"  {name:<36} {n:>8,} items {t:6.1f} s {n / t:>10,.0f} items/s")
    best = max(n / t for _, n, t in rows[1:])
    print(f"  speed-up: {best / (n_naive / t_naive):.1f}x")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class _Pass(NamedTuple):
    """One pass over the large dataset: items read, wall seconds, CPU seconds (client + servers)."""

    n: int
    t: float
    c: float


@dataclass
class _Measured:
    """What the cluster runs measured, for the report."""

    full: _Pass  # naive sequential scan, whole items
    proj: _Pass  # naive sequential scan, projected
    audit: _Pass  # audit data scan, auto segments
    audit2: _Pass  # audit data scan, fixed segments
    deep: _Pass  # audit data scan, --deep
    tables: int  # tables read
    segs: list[int]  # the segment counts the auto run chose
    findings: int  # FAIL/ERROR findings of the first audit run
    values: Any  # the audit's PII value sample rate (1 item in ``values``)
    rss: dict[str, dict[str, Any]] = field(default_factory=dict)


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--segments", type=int, default=4, help="fixed segments for the 2nd run")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-child", metavar="ENDPOINTS_JSON")
    ap.add_argument("--prefix", default="big-")
    ap.add_argument(
        "--model-latency-ms",
        type=float,
        default=25.0,
        help="service time per page in the latency model (0: skip the model)",
    )
    ap.add_argument("--model-page", type=int, default=1000, help="items per page in the model")
    return ap.parse_args()


def _load_datasets(policy: Any, cluster: Any, clients: Clients, items: int, small: int) -> None:
    """Provision the big- and small- tables and load both datasets, printing the load times."""
    from regions.local.provision import provision

    for prefix in ("big-", "small-"):
        provision(policy, cluster.clients, table_prefix=prefix)
    t_big = load(clients, "big-", items)
    print(f"loaded {items:,} items in {t_big:.1f} s ({items / t_big:,.0f} items/s)")
    t_small = load(clients, "small-", small)
    print(f"loaded {small:,} items in {t_small:.1f} s")


def _timed(pids: list[int], fn: Any, *a: Any) -> tuple[Any, float, float]:
    """``fn(*a)``, its wall seconds and the CPU seconds it cost (this process + the servers)."""
    c0, t0 = _cpu_seconds(pids), time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0, _cpu_seconds(pids) - c0


def _measure_scans(clients: Clients, pids: list[int], segments: int) -> _Measured:
    """The three audit runs, then the two naive scans of the tables the audit read."""
    # the audit first (the tables it reads define the naive scan's targets)
    (report, _), t_audit, c_audit = _timed(pids, run_data_audit, clients, "big-", None)
    scanned = [
        (e.region, e.table, e.items_scanned or 0)
        for e in report.inventory
        if e.items_scanned is not None
    ]
    n_audit = sum(n for *_, n in scanned)
    segs = sorted({e.segments for e in report.inventory if e.segments})
    bad = report.failing("low")
    (report2, _), t_audit2, c_audit2 = _timed(pids, run_data_audit, clients, "big-", segments)
    n_audit2 = sum(e.items_scanned or 0 for e in report2.inventory)
    (report3, _), t_deep, c_deep = _timed(pids, run_data_audit, clients, "big-", None, True)
    n_deep = sum(e.items_scanned or 0 for e in report3.inventory)
    values = report.parameters["value_sample_every"]
    targets = [(r, t) for r, t, _ in scanned]
    projection: dict[str, list[str] | None] = {
        "big-profiles": ["pk", "rk_del"],  # pinned: the key (and the tombstone marker)
        "big-content": None,  # global: whole items (PII names at any depth, values)
        "big-directory": None,
        "big-regionkit-conflicts": None,
    }
    (n_proj, _), t_proj, c_proj = _timed(pids, naive_scan, clients, targets, projection)
    (n_full, _), t_full, c_full = _timed(pids, naive_scan, clients, targets, None)
    return _Measured(
        full=_Pass(n_full, t_full, c_full),
        proj=_Pass(n_proj, t_proj, c_proj),
        audit=_Pass(n_audit, t_audit, c_audit),
        audit2=_Pass(n_audit2, t_audit2, c_audit2),
        deep=_Pass(n_deep, t_deep, c_deep),
        tables=len(targets),
        segs=segs,
        findings=len(bad),
        values=values,
    )


def _report_scans(m: _Measured, segments: int) -> None:
    """The throughput table, the speed-up and its goal."""
    n_audit, t_audit, c_audit = m.audit
    n_audit2, t_audit2, c_audit2 = m.audit2
    n_deep, t_deep, c_deep = m.deep
    n_proj, t_proj, c_proj = m.proj
    n_full, t_full, c_full = m.full
    rate_audit = n_audit / t_audit
    rate_audit2 = n_audit2 / t_audit2
    rate_proj = n_proj / t_proj
    rate_full = n_full / t_full
    best = max(rate_audit, rate_audit2)
    print()
    print(f"tables read: {m.tables} ({len(REGIONS)} regions); items per pass: {n_audit:,}")
    print(f"{'':<38} {'items':>8} {'wall s':>8} {'items/s':>10} {'CPU s':>8} (client + servers)")
    rows = [
        ("naive sequential scan, whole items", n_full, t_full, c_full),
        ("naive sequential scan, projected", n_proj, t_proj, c_proj),
        (f"audit data scan, auto segments {m.segs}", n_audit, t_audit, c_audit),
        (f"audit data scan, {segments} segments", n_audit2, t_audit2, c_audit2),
        ("audit data scan, --deep (every value)", n_deep, t_deep, c_deep),
    ]
    for name, n, t, c in rows:
        print(f"{name:<38} {n:>8,} {t:>8.1f} {n / t:>10,.0f} {c:>8.1f} ({c / t:.2f} cores busy)")
    print(f"FAIL/ERROR findings of the audit: {m.findings}")
    print(
        f"PII value detection: 1 item in {m.values} (default) in the first two audit runs, "
        f"every item with --deep: {n_deep / t_deep:,.0f} items/s"
    )
    eff_audit = max(n_audit / c_audit, n_audit2 / c_audit2)
    print(
        f"items per CPU second (independent of how busy the machine is): naive projected "
        f"{n_proj / c_proj:,.0f}, audit {eff_audit:,.0f}"
    )
    speedup = best / rate_proj  # the default audit (sampled values) vs the naive scan
    print(
        f"speed-up vs naive projected: {speedup:.2f}x (vs whole items: "
        f"{best / rate_full:.2f}x); goal >= {GOAL_SPEEDUP:g}x: {verdict(speedup >= GOAL_SPEEDUP)}"
    )
    print(
        f"load average at the end (other processes share the cores): "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def _report_rss(rss: dict[str, dict[str, Any]]) -> None:
    """Peak RSS at 10k and at 100k items, and the growth goal."""
    small, big = rss["small"], rss["big"]
    mb = 1024.0
    growth = (big["peak_kb"] - small["peak_kb"]) / mb
    for name, r in (("10k", small), ("100k", big)):
        print(
            f"peak RSS at {name:>4} ({r['items']:>7,} items read): "
            f"{r['peak_kb'] / mb:6.1f} MB (after imports {r['base_kb'] / mb:.1f} MB; "
            f"audit {r['seconds']:.1f} s)"
        )
    print(
        f"peak RSS growth 10k -> 100k: {growth:.1f} MB; goal <= {GOAL_RSS_GROWTH_MB:g} MB: "
        f"{verdict(growth <= GOAL_RSS_GROWTH_MB)}"
    )


def main() -> None:
    args = _parse_args()
    if args.rss_child:
        rss_child(json.loads(args.rss_child), args.prefix)
        return

    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    from regions.local.cluster import LocalCluster
    from residency.policy import load_policy

    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    print(
        f"cores: {os.cpu_count()}; regions: {', '.join(REGIONS)} (one moto server each); "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    with LocalCluster(policy, replicate=False) as cluster:
        clients = Clients(cluster.endpoints)
        _load_datasets(policy, cluster, clients, args.items, args.small)
        measured = _measure_scans(clients, list(cluster.pids.values()), args.segments)
        if not args.skip_rss:
            measured.rss["small"] = measure_rss(cluster.endpoints, "small-")
            measured.rss["big"] = measure_rss(cluster.endpoints, "big-")

    _report_scans(measured, args.segments)

    if args.model_latency_ms > 0:
        print()
        latency_model(args.items, args.model_latency_ms / 1000, args.model_page, args.segments)

    if measured.rss:
        print()
        _report_rss(measured.rss)


if __name__ == "__main__":
    main()
