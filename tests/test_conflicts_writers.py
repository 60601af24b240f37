"""Stamps are unique per writer, not per region: 8 processes in one region race create_only.

Every process runs its own RegionRouter in us-east-1 on the local cluster (a moto
server per region), with the *same* frozen physical clock, so all of them mint the
same (millisecond, counter) for each write. Before node IDs the stamps were equal,
and ``#v = :v`` took another process's create for "my own retry": two creates of
one key both succeeded. Now each key is created by exactly one process, and what
the replica holds (read with raw boto3) is that process's item.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from regions.codec import from_ddb, to_ddb

US = "us-east-1"
ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 8
KEYS = 20

_WRITER = r"""
import json, sys
from regions.router import RegionRouter
from residency.errors import StaleWrite
from residency.policy import load_policy

name, policy_path, prefix, keys = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
router = RegionRouter.from_env(
    load_policy(policy_path), region="us-east-1",
    physical_clock=lambda: 1_800_000_000_000,  # frozen: every process mints the same (l, c)
)
print("ready", flush=True)
sys.stdin.readline()
won, stamps = [], []
for i in range(keys):
    try:
        w = router.put("content", {"pk": f"{prefix}-{i}", "body": name}, create_only=True)
    except StaleWrite:
        continue
    won.append(i)
    stamps.append(w.version)
print(json.dumps({"won": won, "stamps": stamps}), flush=True)
"""


@pytest.mark.slow  # eight Python processes, each importing the router
def test_eight_routers_in_one_region_never_overwrite_each_others_create(cluster: Any) -> None:
    settings = cluster.config()
    env = {
        **os.environ,
        "REGIONKIT_MODE": "local",
        "REGIONKIT_ENDPOINTS": json.dumps(settings.endpoints),
        "REGIONKIT_TABLE_PREFIX": settings.table_prefix,
        "PYTHONPATH": str(ROOT),
    }
    prefix = f"race-{os.getpid()}-{id(cluster)}"
    policy_path = str(ROOT / "policies" / "minimal.yaml")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, f"w{n}", policy_path, prefix, str(KEYS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        for n in range(PROCESSES)
    ]
    results: dict[str, dict[str, Any]] = {}
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in procs:  # release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for n, p in enumerate(procs):
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
            results[f"w{n}"] = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    all_stamps = [s for r in results.values() for s in r["stamps"]]
    assert len(set(all_stamps)) == len(all_stamps)
    table = cluster.table_name("content")
    for i in range(KEYS):
        winners = [name for name, r in results.items() if i in r["won"]]
        assert len(winners) == 1, (i, winners)  # exactly one create succeeded
        raw = cluster.client(US).get_item(
            TableName=table, Key=to_ddb({"pk": f"{prefix}-{i}"}), ConsistentRead=True
        )
        item = from_ddb(raw.get("Item")) or {}
        assert item.get("body") == winners[0]
