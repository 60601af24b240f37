"""The state file of a running ``regionkit local up`` (default ``.regionkit/cluster.json``).

It is how everything else finds the running cluster: :mod:`residency.settings`
reads ``endpoints`` from it, ``regionkit local status|down|fault`` read
``control`` and ``control_token`` from it, and drill writers read
``clock_skew_ms``. The file is written atomically (temporary file, then rename)
with mode 0600, since the control token in it allows fault injection::

    {
      "version": 1,
      "policy": "minimal",
      "policy_file": "policies/minimal.yaml",
      "table_prefix": "",
      "endpoints": {"eu-central-1": "http://127.0.0.1:41234", ...},
      "control": "http://127.0.0.1:41240",
      "control_token": "...",
      "pids": {"owner": 4242, "servers": {"eu-central-1": 4243, ...}},
      "started_at": "2026-01-01T12:00:00+00:00",
      "clock_skew_ms": {"eu-central-1": 0, ...},
      "replicate": true,
      "server_kind": "fast"
    }
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from residency.errors import ConfigError

__all__ = ["STATE_VERSION", "pid_alive", "read_state", "remove_state", "write_state"]

STATE_VERSION = 1


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically, readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": STATE_VERSION, **state}, f, indent=2, sort_keys=False)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> dict[str, Any] | None:
    """The state, or None when there is no file; ConfigError when it is not a state file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            message=f"cannot read the cluster state file {path}: {exc.strerror}"
        ) from None
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("endpoints"), dict):
        raise ConfigError(
            message=f"{path} is not a regionkit cluster state file; remove it, or point "
            "REGIONKIT_STATE_FILE / --state-file elsewhere"
        )
    return state


def remove_state(path: Path, *, owner_pid: int | None = None) -> bool:
    """Remove the state file (only if ``owner_pid`` wrote it, when given). True if removed."""
    path = Path(path)
    if owner_pid is not None:
        try:
            state = read_state(path)
        except ConfigError:
            return False
        if state is None or state.get("pids", {}).get("owner") != owner_pid:
            return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (and is not a zombie we could see)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
