"""The cluster a ``regionkit local up`` left recorded in its state file: its status, and
stopping it (``regionkit local status | down`` render what these return).

A cluster is asked through its control endpoint first. When that does not answer, the
state file is what is known: the status says so, and stopping kills the recorded
processes that are still alive, unless their PID now belongs to an unrelated process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regions.local.control import ControlClient
from regions.local.state import pid_alive, read_state, remove_state
from residency.errors import ClusterError, RegionkitError

__all__ = ["Stopped", "recorded_status", "stop_recorded"]


def recorded_status(path: Path) -> dict[str, Any]:
    """The cluster's own status, or what the state file says when its control is silent."""
    state = read_state(path)
    if state is None:
        raise ClusterError(message=f"no local cluster is running (no state file at {path})")
    try:
        status: dict[str, Any] = ControlClient.from_state(state, timeout=5).status()
        status["control"] = {"url": state.get("control"), "answering": True}
    except RegionkitError as exc:
        servers = state.get("pids", {}).get("servers", {})
        status = {
            "policy": state.get("policy"),
            "running": False,
            "servers": {
                r: {
                    "url": state["endpoints"].get(r),
                    "pid": pid,
                    "alive": pid_alive(pid),
                    "state": "unknown",
                }
                for r, pid in servers.items()
            },
            "links": [],
            "clock_skew_ms": state.get("clock_skew_ms", {}),
            "control": {"url": state.get("control"), "answering": False, "error": str(exc)},
        }
    status["state_file"] = str(path)
    return status


@dataclass(frozen=True)
class Stopped:
    """How a recorded cluster was stopped."""

    asked: bool
    """Its control endpoint answered the request to stop."""
    killed: tuple[int, ...]
    """The recorded processes still alive after the wait, killed."""


def stop_recorded(
    path: Path,
    *,
    timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Stopped | None:
    """Stop the cluster recorded at ``path`` (``None``: nothing is recorded there).

    Asks its control endpoint, waits up to ``timeout`` seconds for the recorded processes
    to exit, kills those still alive, and removes the state file.
    """
    state = read_state(path)
    if state is None:
        return None
    pids = state.get("pids", {})
    owner = pids.get("owner") if isinstance(pids.get("owner"), int) else None
    servers = [p for p in pids.get("servers", {}).values() if isinstance(p, int)]
    try:
        ControlClient.from_state(state, timeout=2).stop()
        asked = True
    except RegionkitError:
        asked = False
    deadline = clock() + timeout
    # Never this process: a cluster started in-process records its owner as us.
    everyone = [p for p in [owner, *servers] if p is not None and p != os.getpid()]
    while any(pid_alive(p) for p in everyone) and clock() < deadline:
        sleep(0.1)
    killed = _kill_leftovers(everyone, owner)
    remove_state(path)
    return Stopped(asked=asked, killed=tuple(killed))


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


def _kill_leftovers(everyone: list[int], owner: int | None) -> list[int]:
    """SIGKILL the recorded processes still alive, unless their PID was reused."""
    killed = []
    for pid in everyone:
        if not pid_alive(pid):
            continue
        cmd = _cmdline(pid)
        mine = ("local" in cmd) if pid == owner else ("moto" in cmd or "_server_main" in cmd)
        if not mine:  # the PID was reused by an unrelated process: leave it alone
            continue
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        killed.append(pid)
    return killed
