"""Failover and hedging with the DEFAULT settings, on the local cluster (issue 15, items 2-3).

    .venv/bin/python benchmarks/bench_failover.py [--runs 5] [--reads 400] [--delay-ms 100]

(a) Failover time of one routed write of global data (``content``) whose local
    replica is out, with the router's default settings (connect 0.5 s, read 1.0 s,
    botocore 1 attempt, breaker after 3 failures), a fresh router per run:
    * **refused**: the region's port is closed (``LocalCluster.outage(mode="refuse")``);
    * **black-holed**: the region's server is SIGSTOPped, so connections are accepted by
      the kernel and never answered (``outage(mode="stop")``).
    Goals: refused <= 0.3 s, black-holed <= 1.5 s (median and max over ``--runs``).
(b) Hedged reads: p99 of ``GetItem`` through the router while one region is slowed by
    a delaying TCP proxy in front of its server (every answer ``--delay-ms`` late), with
    hedging off and on, against the healthy p99 measured in the same run.
    Goal: hedged p99 <= 2 x healthy p99.

Figures are ratios and wall times from this one run; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
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

from regions.local.cluster import LocalCluster  # noqa: E402
from regions.router import RegionRouter  # noqa: E402
from residency.logs import configure_logging  # noqa: E402
from residency.policy import Policy, load_policy  # noqa: E402

ORIGIN, NEXT = "eu-central-1", "eu-west-1"  # content's nearest replicas from ORIGIN
GOAL_REFUSED_S, GOAL_BLACKHOLE_S, GOAL_HEDGE_RATIO = 0.3, 1.5, 2.0


class DelayProxy:
    """A TCP proxy to ``upstream`` that holds every chunk of an answer ``delay`` seconds."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            for a, b, slow in ((client, up, False), (up, client, True)):
                threading.Thread(target=self._pump, args=(a, b, slow), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if slow and self.delay:
                    time.sleep(self.delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def _router(policy: Policy, cluster: LocalCluster, **overrides: Any) -> RegionRouter:
    return RegionRouter(policy, region=ORIGIN, config=cluster.config(**overrides))


def failover_runs(policy: Policy, cluster: LocalCluster, mode: str, runs: int) -> list[float]:
    out: list[float] = []
    for i in range(runs):
        with _router(policy, cluster) as router:
            s = router.config
            assert (s.connect_timeout, s.read_timeout, s.max_attempts) == (0.5, 1.0, 3)
            router.put("content", {"pk": f"warm-{mode}-{i}", "body": "x"})
            cluster.outage(ORIGIN, mode)  # type: ignore[arg-type]
            try:
                t0 = time.perf_counter()
                written = router.put("content", {"pk": f"fo-{mode}-{i}", "body": "x"})
                dt = time.perf_counter() - t0
            finally:
                cluster.restore(ORIGIN)
            assert written.route.region == NEXT, written
            out.append(dt)
            print(
                f"  {mode:9s} run {i + 1}: failover write landed in {written.route.region} "
                f"after {dt * 1000:.0f} ms"
            )
    return out


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _reads(router: RegionRouter, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        router.get("content", {"pk": f"r-{i % 50}"})
        out.append(time.perf_counter() - t0)
    return out


def hedging(policy: Policy, cluster: LocalCluster, reads: int, delay: float) -> dict[str, float]:
    host, port = cluster.endpoints[ORIGIN].removeprefix("http://").split(":")
    proxy = DelayProxy((host, int(port)))
    endpoints = {**cluster.endpoints, ORIGIN: proxy.url}
    try:
        plain = _router(policy, cluster, endpoints=endpoints)
        hedged = _router(policy, cluster, endpoints=endpoints, hedge_reads=True)
        for r in (plain, hedged):
            for i in range(50):
                r.put("content", {"pk": f"r-{i}", "body": "x"})
            _reads(r, 100)  # warm-up: connections, and the hedging p95 of a healthy region
        # Phases interleaved in blocks, so the host's background load falls on each alike.
        healthy: list[float] = []
        healthy_hedged: list[float] = []
        slow_plain: list[float] = []
        slow_hedged: list[float] = []
        sent = won = 0
        block = 25
        for _ in range(max(1, reads // block)):
            proxy.delay = 0.0
            healthy += _reads(plain, block)
            healthy_hedged += _reads(hedged, block)
            proxy.delay = delay
            slow_plain += _reads(plain, block)
            sent0, won0 = hedged.transport.hedges_sent, hedged.transport.hedges_won
            slow_hedged += _reads(hedged, block)
            sent += hedged.transport.hedges_sent - sent0
            won += hedged.transport.hedges_won - won0
        plain.close()
        hedged.close()
    finally:
        proxy.close()
    return {
        "healthy_p99": _p99(healthy),
        "healthy_hedged_p99": _p99(healthy_hedged),
        "slow_unhedged_p99": _p99(slow_plain),
        "slow_hedged_p99": _p99(slow_hedged),
        "slow_hedged_p50": statistics.median(slow_hedged),
        "healthy_p50": statistics.median(healthy),
        "slow_unhedged_p50": statistics.median(slow_plain),
        "hedges_sent": float(sent),
        "hedges_won": float(won),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reads", type=int, default=400)
    ap.add_argument("--delay-ms", type=float, default=100.0)
    args = ap.parse_args()
    configure_logging(level="error")
    policy = load_policy(ROOT / "policies" / "minimal.yaml")
    with LocalCluster(policy, replicate=False) as cluster:
        print("(a) failover with the default settings (connect 0.5 s, read 1.0 s, 1 attempt)")
        results = {m: failover_runs(policy, cluster, m, args.runs) for m in ("refuse", "stop")}
        for mode, goal, label in (
            ("refuse", GOAL_REFUSED_S, "refused"),
            ("stop", GOAL_BLACKHOLE_S, "black-holed"),
        ):
            xs = results[mode]
            verdict = "ok" if max(xs) <= goal else "MISSED"
            print(
                f"  {label:11s}: median {statistics.median(xs) * 1000:.0f} ms, max "
                f"{max(xs) * 1000:.0f} ms (goal <= {goal * 1000:.0f} ms) {verdict}"
            )
        print(
            f"(b) hedged reads, {ORIGIN} slowed by {args.delay_ms:.0f} ms per answer, "
            f"{args.reads} reads per phase"
        )
        h = hedging(policy, cluster, args.reads, args.delay_ms / 1000)
        ratio = h["slow_hedged_p99"] / h["healthy_p99"]
        print(
            f"  healthy p50 {h['healthy_p50'] * 1000:.1f} ms, "
            f"p99 {h['healthy_p99'] * 1000:.1f} ms (hedging on: "
            f"{h['healthy_hedged_p99'] * 1000:.1f} ms)"
        )
        print(
            f"  slowed, unhedged p50 {h['slow_unhedged_p50'] * 1000:.1f} ms, "
            f"p99 {h['slow_unhedged_p99'] * 1000:.1f} ms"
        )
        print(
            f"  slowed, hedged p99 {h['slow_hedged_p99'] * 1000:.1f} ms (p50 "
            f"{h['slow_hedged_p50'] * 1000:.1f} ms; {h['hedges_sent']:.0f} hedges sent, "
            f"{h['hedges_won']:.0f} won)"
        )
        print(
            f"  hedged p99 / healthy p99 = {ratio:.2f} (goal <= {GOAL_HEDGE_RATIO}) "
            f"{'ok' if ratio <= GOAL_HEDGE_RATIO else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
