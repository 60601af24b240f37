"""`regionkit local up | status | fault | down` as a user runs them, in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regions.local.state import pid_alive, read_state

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
POLICY = str(ROOT / "policies" / "minimal.yaml")
# Bounds on waits for a subprocess (each returns as soon as the thing happens): wide
# enough for a machine with a load average of 25, where `local up` alone takes tens
# of seconds; a correct run never waits them out.
PATIENCE = 120.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "120"
    return env


AS_FROM_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('cli', run_name='__main__', alter_sys=True)"
)
"""``python -m cli`` with Ctrl-C put back first, as a shell starts a command: a process
inherits an ignored SIGINT, and this test's worker may ignore it at that moment."""


def _regionkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "--policy", POLICY, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=PATIENCE,
        check=False,
    )


def _inproc(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process (the quick way for the many fault commands)."""
    import cli

    capsys.readouterr()
    try:
        cli.main(["--policy", POLICY, *args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = PATIENCE) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"`local up` exited with {proc.returncode}: {out}\n{err}")
        try:
            state = read_state(path)
        except Exception:
            state = None
        if state is not None and state.get("control"):
            return state
        time.sleep(0.05)
    raise AssertionError("`local up` wrote no state file in time")


def _gone(pids: list[int], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    state_file = tmp_path / ".regionkit" / "cluster.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AS_FROM_A_TERMINAL,
            "--policy",
            POLICY,
            "local",
            "up",
            "--state-file",
            str(state_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    try:
        yield proc, state_file
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.slow  # a `regionkit local up` process end to end
@pytest.mark.timeout(4 * PATIENCE)
def test_up_status_fault_down(
    up: tuple[subprocess.Popen[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, state_file = up
    state = _wait_for(state_file, proc)
    servers = list(state["pids"]["servers"].values())
    assert set(state["endpoints"]) == {"eu-central-1", "eu-west-1", "us-east-1"}
    assert all(url.startswith("http://127.0.0.1:") for url in state["endpoints"].values())
    assert state["pids"]["owner"] == proc.pid
    assert all(pid_alive(p) for p in servers)
    sf = ["--state-file", str(state_file)]

    r = _regionkit("local", "status", "--json", *sf, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["policy"] == "minimal"
    assert all(s["alive"] and s["state"] == "up" for s in status["servers"].values())
    assert status["replicate"] is True
    link = status["links"][0]
    assert {
        "table",
        "src",
        "dst",
        "lag_p50_ms",
        "lag_p99_ms",
        "pending",
        "applied",
        "skipped",
        "paused",
    } <= set(link)

    for args in (
        ["pause", "--region", "eu-west-1"],
        ["resume", "--src", "eu-central-1", "--dst", "eu-west-1"],
        ["lag", "--src", "eu-central-1", "--ms", "150"],
        ["partition", "--group", "eu-central-1,eu-west-1", "--group", "us-east-1"],
        ["heal"],
        ["outage", "--region", "us-east-1", "--mode", "refuse"],
        ["skew", "--region", "eu-west-1", "--ms", "400"],
    ):
        r = _inproc(capsys, "local", "fault", *args, *sf)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert r.stdout.startswith("ok ")

    status = json.loads(_inproc(capsys, "local", "status", "--json", *sf).stdout)
    assert status["servers"]["us-east-1"]["state"] == "refusing"
    assert status["clock_skew_ms"]["eu-west-1"] == 400
    assert read_state(state_file)["clock_skew_ms"]["eu-west-1"] == 400  # type: ignore[index]

    r = _inproc(capsys, "local", "fault", "outage", "--region", "mars-north-1", *sf)
    assert r.returncode == 2 and "unknown region" in r.stderr
    r = _inproc(capsys, "local", "fault", "restore", "--region", "us-east-1", *sf)
    assert r.returncode == 0

    r = _inproc(capsys, "local", "status", *sf)  # the human-readable form
    assert r.returncode == 0 and "eu-central-1" in r.stdout and "replication links" in r.stdout

    r = _regionkit("local", "down", *sf, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "asked it to stop" in r.stdout
    proc.wait(PATIENCE)
    assert proc.returncode == 0
    assert _gone([proc.pid, *servers])
    assert not state_file.exists()


@pytest.mark.slow  # a `regionkit local up` process end to end
@pytest.mark.timeout(4 * PATIENCE)
def test_down_kills_the_recorded_processes_when_control_is_gone(
    up: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    proc, state_file = up
    state = _wait_for(state_file, proc)
    servers = list(state["pids"]["servers"].values())
    os.kill(proc.pid, signal.SIGSTOP)  # a hung `local up`: its control cannot answer
    try:
        r = _regionkit(
            "local", "down", "--timeout", "1", "--state-file", str(state_file), cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
        assert "did not answer" in r.stdout and "killed" in r.stdout
        assert _gone([proc.pid, *servers])
        assert not state_file.exists()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)


@pytest.mark.slow  # a `regionkit local up` process end to end
@pytest.mark.timeout(3 * PATIENCE)
def test_ctrl_c_stops_the_cluster(up: tuple[subprocess.Popen[str], Path]) -> None:
    proc, state_file = up
    state = _wait_for(state_file, proc)
    servers = list(state["pids"]["servers"].values())
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0
    assert "local cluster stopped" in out
    assert _gone(servers)
    assert not state_file.exists()


def test_status_and_down_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sf = ["--state-file", str(tmp_path / "none.json")]
    r = _inproc(capsys, "local", "status", *sf)
    assert r.returncode == 1 and "no local cluster is running" in r.stderr
    r = _inproc(capsys, "local", "down", *sf)
    assert r.returncode == 0 and "no local cluster is running" in r.stdout
    r = _inproc(capsys, "local", "fault", "heal", *sf)
    assert r.returncode == 1 and "is `regionkit local up` running?" in r.stderr


def test_status_shows_failed_changes_and_errors_without_json() -> None:
    """A change given up on means the replicas differ for good: the table says so."""
    from rich.console import Console

    from _cli.local import _links_table, _print_replication_problems

    link = {
        "table": "content",
        "src": "eu-central-1",
        "dst": "us-east-1",
        "lag_p50_ms": 12.0,
        "lag_p99_ms": 40.0,
        "pending": 0,
        "applied": 9,
        "skipped": 0,
        "failed": 2,
        "paused": False,
    }
    status = {
        "replication_failed_count": 2,
        "replication_failed": ["apply to us-east-1/content: ValidationException"],
        "replication_errors": ["poll eu-west-1 failed: EndpointConnectionError"],
    }
    con = Console(record=True, width=120, color_system=None)
    con.print(_links_table([link]))
    _print_replication_problems(con, status)
    text = con.export_text()
    header = next(line for line in text.splitlines() if "applied" in line)
    assert "failed" in header  # the column
    assert "2 replicated change(s) given up on" in text
    assert "ValidationException" in text and "EndpointConnectionError" in text
