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


def test_stopping_never_kills_the_calling_process(tmp_path: Path) -> None:
    """A cluster started in-process records its owner as the caller itself; stopping it
    from there must not SIGKILL the caller (whose command line says 'local')."""
    path = tmp_path / "state.json"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from regions.local.recorded import stop_recorded\n"
        "from regions.local.state import write_state\n"
        f"path = Path({str(path)!r})\n"
        "write_state(path, {'endpoints': {}, 'control': 'http://127.0.0.1:9/',"
        " 'pids': {'owner': os.getpid(), 'servers': {}}})\n"
        "ticks = iter(range(100))\n"
        "print(stop_recorded(path, timeout=1, sleep=lambda s: None, clock=lambda: next(ticks)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "local"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "killed=()" in done.stdout
