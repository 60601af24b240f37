"""Synth wall time of the example policy's CDK app beside a trivial one-table app.

Each synth runs in a fresh subprocess (Python start-up, the ``aws_cdk`` import,
the jsii Node process and the synth itself are all counted, as ``cdk synth``
pays them), alternating between the two apps so that background load hits both
alike. One untimed warm-up run of each fills the bytecode and jsii caches.

The regionkit app is run exactly as ``cdk.json`` runs it (``python -m infra.app``,
cdk-nag included); the trivial app is one stack holding one ``TableV2``. Both
run with the CDK's defaults, the built-in CloudFormation validation included;
``--no-validation`` turns it off for both (``CDK_VALIDATION=false``).

Goal: the regionkit app takes at most twice the trivial app's median.

    python benchmarks/bench_synth.py [--runs 3] [--policy policies/social-network.yaml]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 2.0

TRIVIAL_APP = """
import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb

app = cdk.App()
stack = cdk.Stack(app, "Trivial", env=cdk.Environment(region="us-east-1"))
dynamodb.TableV2(
    stack, "Table",
    partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
)
app.synth()
"""


def _env(out_dir: Path, policy: Path, validation: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    env.setdefault("JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(ROOT / ".build" / "jsii-cache"))
    env["JSII_DEPRECATED"] = "quiet"
    env["CDK_OUTDIR"] = str(out_dir)
    env["REGIONKIT_POLICY"] = str(policy)
    if not validation:
        env["CDK_VALIDATION"] = "false"
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], policy: Path, validation: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the subprocess and its children, Node included)."""
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        env = _env(Path(tmp), policy, validation)
        cpu = _cpu()
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        cpu = _cpu() - cpu
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"synth failed ({' '.join(argv)}): exit {proc.returncode}")
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each app")
    parser.add_argument("--policy", type=Path, default=ROOT / "policies" / "social-network.yaml")
    parser.add_argument(
        "--no-validation",
        action="store_true",
        help="turn the CDK's built-in CloudFormation validation off for both",
    )
    args = parser.parse_args()
    python = sys.executable
    apps = {
        "trivial (1 stack, 1 TableV2)": [python, "-c", TRIVIAL_APP],
        f"regionkit ({args.policy.name})": [python, "-m", "infra.app"],
    }
    validation = not args.no_validation
    for argv in apps.values():  # warm-up, untimed
        _run(argv, args.policy, validation)
    wall: dict[str, list[float]] = {name: [] for name in apps}
    cpu: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.runs):
        for name, argv in apps.items():
            w, c = _run(argv, args.policy, validation)
            wall[name].append(w)
            cpu[name].append(c)

    med_wall = {name: statistics.median(ts) for name, ts in wall.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    trivial, regionkit = apps
    ratio = med_wall[regionkit] / med_wall[trivial]
    cpu_ratio = med_cpu[regionkit] / med_cpu[trivial]
    state = "on" if validation else "off"
    print(
        f"CDK synth, {args.runs} fresh subprocesses each, built-in CloudFormation "
        f"validation {state}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:"
    )
    for name in apps:
        runs = ", ".join(f"{t:.2f}" for t in wall[name])
        print(
            f"  {name:<34} wall median {med_wall[name]:6.2f} s (runs {runs}); "
            f"CPU median {med_cpu[name]:6.2f} s"
        )
    verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
    print(f"  wall-time ratio {ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x): {verdict}")
    print(f"  CPU-time ratio  {cpu_ratio:.2f}x (less sensitive to other load on the machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
