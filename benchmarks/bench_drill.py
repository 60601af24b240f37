"""Drill benchmark: region-outage RTO on the local cluster, and simulation speed.

    .venv/bin/python benchmarks/bench_drill.py [--runs 3] [--schedules 50]

(a) RTO for global data: a region of the minimal policy is SIGSTOPped while
    writers run in every region; RTO is the time from the fault to the first
    successful routed write of the writers homed there (by failover).
    Goal: <= 1 s. The router's timeouts are the drill backend's: connect 0.2 s,
    read 0.3 s, breaker opens after 2 failures.
(b) the deterministic simulation: seeded random fault schedules per second.
(c) faults under load: a replication-pause and a region-outage on the local
    cluster while writers run at the default rate; RPO exposure (writes of the
    faulted region not yet on every replica when the fault hit), how many were
    recovered or lost, the journal's size, and the size of the report's charts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for k, v in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
}.items():
    os.environ.setdefault(k, v)

from regions.drills import DrillOptions, DrillRunner, get_scenario  # noqa: E402
from regions.drills.backends import LocalClusterBackend  # noqa: E402
from regions.drills.simulate import run_schedule  # noqa: E402
from regions.local.cluster import LocalCluster  # noqa: E402
from residency.logs import configure_logging  # noqa: E402
from residency.policy import load_policy  # noqa: E402

GOAL_RTO_S = 1.0


def rto_runs(runs: int) -> list[float]:
    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    out: list[float] = []
    with LocalCluster(policy) as cluster:
        for i in range(runs):
            region = ["eu-central-1", "eu-west-1"][i % 2]
            sc = get_scenario("region-outage")
            j = DrillRunner(
                LocalClusterBackend(cluster, fast=True),
                sc,
                sc.parse(policy, {"region": region}),
                options=DrillOptions(duration=2.0, rate=20),
            ).run()
            content = next(d for d in j.figures.data_classes if d.data_class == "content")
            rto = content.rto_by_region.get(region)
            print(
                f"  run {i + 1}: outage of {region}: content RTO "
                f"{'n/a' if rto is None else f'{rto:.3f} s'}, verdict {j.verdict}, "
                f"convergence {j.figures.convergence_seconds} s"
            )
            if rto is not None:
                out.append(rto)
    return out


def under_load(rate: float, lag: float | None) -> None:
    from regions.drills.report import charts, render_html

    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    with LocalCluster(policy) as cluster:
        for name in ("replication-pause", "region-outage"):
            sc = get_scenario(name)
            t0 = time.perf_counter()
            j = DrillRunner(
                LocalClusterBackend(cluster, fast=True),
                sc,
                sc.parse(policy, {"region": "eu-central-1"}),
                options=DrillOptions(duration=3.0, rate=rate, lag=lag),
            ).run()
            f = j.figures
            svgs = charts(j)
            print(
                f"  {name}: {f.writes_acknowledged} writes acked; RPO exposure "
                f"{f.rpo_exposure_count} writes, oldest {f.rpo_exposure_max_age_seconds:.3f} s "
                f"({f.rpo_recovered} recovered, {f.rpo_lost} lost; about "
                f"{f.writes_in_flight_expected} expected in flight); RTO "
                f"{'n/a' if f.rto_seconds is None else f'{f.rto_seconds:.3f} s'}; convergence "
                f"{f.convergence_seconds} s; verdict {j.verdict}"
            )
            print(
                f"    journal {len(j.model_dump_json()) / 1024:.1f} KiB ({j.series.buckets} "
                f"buckets); charts {', '.join(f'{len(x) / 1024:.1f}' for x in svgs)} KiB; "
                f"HTML {len(render_html(j)) / 1024:.1f} KiB; ran {time.perf_counter() - t0:.1f} s"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--schedules", type=int, default=50)
    ap.add_argument("--rate", type=float, default=DrillOptions().rate)
    ap.add_argument("--lag", type=float, default=None, help="base link lag for (c), s")
    ap.add_argument("--only-load", action="store_true", help="run (c) only")
    args = ap.parse_args()
    configure_logging(level="error")  # breakers opening are the point here, not news
    if args.only_load:
        print(f"(c) faults under load, {args.rate:g} rounds/s per region, minimal policy")
        under_load(args.rate, args.lag)
        return
    print(
        "(a) region-outage RTO for global data on the local cluster (3 moto servers), with "
        "the drill timeouts (fast=True; the default settings' failover is bench_failover's)"
    )
    rtos = rto_runs(args.runs)
    if rtos:
        med = statistics.median(rtos)
        print(
            f"  RTO median {med:.3f} s, max {max(rtos):.3f} s over {len(rtos)} runs; "
            f"goal <= {GOAL_RTO_S:.1f} s: {'PASS' if max(rtos) <= GOAL_RTO_S else 'MISS'}"
        )
    else:
        print("  no RTO measured (writes never failed over): MISS")
    print("(b) deterministic simulation, minimal policy")
    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    run_schedule(policy, 10_000)  # warm-up: imports and service models
    t0 = time.perf_counter()
    ok = sum(run_schedule(policy, s).ok for s in range(args.schedules))
    dt = time.perf_counter() - t0
    print(
        f"  {args.schedules} schedules in {dt:.1f} s: {args.schedules / dt:.2f} schedules/s, "
        f"{ok}/{args.schedules} passed every check"
    )
    print(f"(c) faults under load, {args.rate:g} rounds/s per region, minimal policy")
    under_load(args.rate, args.lag)


if __name__ == "__main__":
    main()
