"""Stopping a recorded cluster whose control does not answer: what is killed, what is not.

The wait for the recorded processes runs on an injected clock, so nothing here waits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from regions.local.recorded import stop_recorded
from regions.local.state import pid_alive, write_state


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])


def test_a_silent_cluster_is_killed_but_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    server = _spawn("_server_main")  # looks like one of the cluster's moto servers
    stranger = _spawn("someone-else")  # a PID the cluster once had, now another program's
    path = tmp_path / "state.json"
    write_state(
        path,
        {
            "endpoints": {},
            "control": "http://127.0.0.1:9/",  # nothing listens: control is silent
            "pids": {"owner": None, "servers": {"eu-west-1": server.pid, "x": stranger.pid}},
        },
    )
    ticks = iter(range(1000))
    try:
        stopped = stop_recorded(path, timeout=5, sleep=lambda s: None, clock=lambda: next(ticks))
        assert stopped is not None and not stopped.asked
        assert stopped.killed == (server.pid,)
        assert server.wait(timeout=30) != 0
        assert pid_alive(stranger.pid)
        assert not path.exists()
        assert stop_recorded(path) is None  # nothing recorded any more
    finally:
        for p in (server, stranger):
            p.kill()
            p.wait()
