"""The move fence across real processes, on the real local cluster (a moto server per region).

Process B is a separate Python process with its own router. It caches the user's
home, then waits while this process moves the user to another jurisdiction, and
then writes the profile through its stale cache (300 s TTL, nowhere near expired).
The write must land in the new jurisdiction: the fence in the old home refuses it
server-side, and B follows it. Checked with raw boto3 reads of every region.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from regions.codec import from_ddb, to_ddb
from regions.router import RegionRouter

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"
ROOT = Path(__file__).resolve().parent.parent

_PROCESS_B = r"""
import json, sys
from regions.router import RegionRouter
from residency.policy import load_policy

uid, policy_path = sys.argv[1], sys.argv[2]
router = RegionRouter.from_env(load_policy(policy_path), region="us-east-1")  # REGIONKIT_* env
print(json.dumps({"cached": router.home_of(uid).jurisdiction}), flush=True)
sys.stdin.readline()                       # the other process moves the user now
written = router.update("profile", {"pk": uid}, {"display_name": "written by B"})
print(json.dumps({"region": written.route.region, "source": router.home_of(uid).source}))
"""


def _raw(cluster: Any, region: str, uid: str) -> dict[str, Any] | None:
    got = cluster.client(region).get_item(
        TableName=cluster.table_name("profiles"), Key=to_ddb({"pk": uid}), ConsistentRead=True
    )
    return from_ddb(got.get("Item"))


def test_a_stale_process_writes_in_the_new_home_after_a_move(cluster: Any) -> None:
    a = RegionRouter(cluster.policy, region=EU1, config=cluster.config())
    uid = a.new_user_id(country="DE")
    a.assign_home(uid, country="DE")
    a.put("profile", {"pk": uid, "email": "b@example.test", "display_name": "before"})
    settings = cluster.config()
    env = {
        **os.environ,
        "REGIONKIT_MODE": "local",
        "REGIONKIT_ENDPOINTS": json.dumps(settings.endpoints),
        "REGIONKIT_TABLE_PREFIX": settings.table_prefix,
        "REGIONKIT_FAILOVER_ATTEMPTS": "2",
        "PYTHONPATH": str(ROOT),
    }
    policy_path = str(ROOT / "policies" / "minimal.yaml")
    b = subprocess.Popen(
        [sys.executable, "-c", _PROCESS_B, uid, policy_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    try:
        assert b.stdout is not None and b.stdin is not None
        assert json.loads(b.stdout.readline()) == {"cached": "EU"}
        result = a.move_user(uid, country="US")
        assert result.status == "done", result.reason
        b.stdin.write("go\n")
        b.stdin.flush()
        out, err = b.communicate(timeout=120)
    finally:
        if b.poll() is None:
            b.kill()
    assert b.returncode == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line == {"region": US, "source": "fence"}
    assert (_raw(cluster, US, uid) or {}).get("display_name") == "written by B"
    for region in (EU1, EU2):
        fence = _raw(cluster, region, uid)
        assert fence is not None and fence["rk_del"] == "moved" and "email" not in fence
