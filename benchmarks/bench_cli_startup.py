"""How long `regionkit` takes to start, against the interpreter's own start-up.

Runs each command N times (after a warm-up) and prints the median and p90 wall time,
the ratio to the floor (`python -c pass` with the same interpreter), and the start-up
goal for `regionkit --help`: at most 300 ms and at most 4x the floor.

    .venv/bin/python benchmarks/bench_cli_startup.py [--runs N]

It reports; it always exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 300.0
GOAL_RATIO = 4.0
FLOOR = "python -c pass (floor)"
HELP = "regionkit --help"
EXAMPLE = "policies/social-network.yaml"


def regionkit_script() -> str:
    """The venv's console script, next to the interpreter running this benchmark."""
    name = "regionkit.exe" if os.name == "nt" else "regionkit"
    return str(Path(sys.executable).parent / name)


class Case(NamedTuple):
    label: str
    cmd: list[str]
    env: dict[str, str] | None = None


def run_once(case: Case) -> float:
    """One wall time in milliseconds; fails loudly if the command itself fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        case.cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        env=case.env,
    )
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(case.cmd)} exited {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return elapsed


def measure(cases: list[Case], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    """Round-robin over the cases, so a burst of load elsewhere hits them all alike."""
    times: dict[str, list[float]] = {c.label: [] for c in cases}
    for i in range(warmup + runs):
        for case in cases:
            elapsed = run_once(case)
            if i >= warmup:
                times[case.label].append(elapsed)
    return times


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (>= 10)")
    runs = max(10, parser.parse_args().runs)

    script = regionkit_script()
    if not Path(script).exists():
        print(f"no regionkit console script at {script}; run `make install` first")
        return 0
    cases = [
        Case(FLOOR, [sys.executable, "-c", "pass"]),
        Case(HELP, [script, "--help"]),
        Case("regionkit policy validate", [script, "policy", "validate", EXAMPLE]),
        # For information, not part of the goal: the framework alone (typer, and click
        # under it), which no typer CLI starts without.
        Case("import typer (framework)", [sys.executable, "-c", "import typer"]),
    ]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = measure(cases, runs)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    floor = statistics.median(results[FLOOR])
    print(f"CLI start-up, {runs} runs each (after 2 warm-up rounds), interleaved")
    print(
        f"interpreter {sys.executable}, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"{'command':<28} {'median ms':>10} {'p90 ms':>9} {'x floor':>8}")
    for label, times in results.items():
        med = statistics.median(times)
        print(f"{label:<28} {med:>10.1f} {p90(times):>9.1f} {med / floor:>8.1f}")

    help_ms = statistics.median(results[HELP])
    ratio = help_ms / floor
    print()
    print(f"goal: `regionkit --help` <= {GOAL_MS:.0f} ms and <= {GOAL_RATIO:.0f}x the floor")
    print(
        f"  {'PASS' if help_ms <= GOAL_MS else 'MISS'}  {help_ms:.1f} ms (limit {GOAL_MS:.0f} ms)"
    )
    print(
        f"  {'PASS' if ratio <= GOAL_RATIO else 'MISS'}  {ratio:.1f}x the floor of "
        f"{floor:.1f} ms (limit {GOAL_RATIO:.0f}x = {GOAL_RATIO * floor:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
