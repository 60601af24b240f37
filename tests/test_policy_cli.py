"""The command line against hostile input: numbers, paths, missing extras, the policy lookup.

* durations, rates and counts are finite and inside documented bounds, checked before
  any work (``nan``, ``inf`` and ``1e9`` are exit 2, never a run);
* output paths are checked before any work: exit 2 naming the path;
* a missing optional extra is one line naming the ``pip install`` that fixes it;
* the policy is found through --policy, REGIONKIT_POLICY, ./regionkit.yaml,
  ./policies/social-network.yaml, and (demo and local up only) the packaged example;
* ``--json`` failures print ``{"error": {...}}`` on stdout;
* a drill that made no writes never passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cli

ROOT = Path(__file__).resolve().parent.parent
REGIONKIT = Path(sys.executable).parent / "regionkit"
MINIMAL = ROOT / "policies" / "minimal.yaml"
EXAMPLE = ROOT / "policies" / "social-network.yaml"


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``regionkit argv`` in this process (fast: for input checks that end before work)."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out, err


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGIONKIT_POLICY")}
    return subprocess.run(
        [str(REGIONKIT), *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environ, **(env or {})},
    )


# --- numbers -----------------------------------------------------------------------------

BAD_NUMBERS = [
    (["drill", "run", "replication-pause", "-r", "eu-west-1", "--duration"], "--duration"),
    (["drill", "run", "replication-pause", "-r", "eu-west-1", "--rate"], "--rate"),
    (["drill", "plan", "replication-pause", "-r", "eu-west-1", "--duration"], "--duration"),
    (["demo", "--duration"], "--duration"),
    (["local", "fault", "lag", "--ms"], "--ms"),
    (["local", "fault", "lag", "--ms", "10", "--jitter-ms"], "--jitter-ms"),
    (["local", "down", "--timeout"], "--timeout"),
    (["local", "up", "--ttl-sweep"], "--ttl-sweep"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e9", "-1", "0"])
@pytest.mark.parametrize(("argv", "option"), BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_non_finite_or_out_of_range_numbers_are_exit_2(
    argv: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if option in {"--ms", "--jitter-ms", "--timeout", "--ttl-sweep"} and value == "0":
        pytest.skip("0 is a valid lag, jitter or timeout")
    code, out, err = run_in_process([*argv, value], capsys)
    assert code == 2
    assert f"Invalid value for '{option}'" in err
    assert "finite number from" in err
    assert out == ""


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["demo", "--users", "0"], "--users"),
        (["demo", "--rounds", "100000"], "--rounds"),
        (["drill", "history", "--limit", "0"], "--limit"),
        (["audit", "run", "--window-days", "100000"], "--window-days"),
        (["local", "fault", "skew", "--region", "eu-west-1", "--ms", "99999999999"], "--ms"),
        (["users", "seed", "--count", "10000000"], "--count"),
    ],
)
def test_counts_are_bounded(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_in_process(argv, capsys)
    assert code == 2
    assert option in err


def test_bounds_are_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_in_process(["drill", "run", "--help"], capsys)
    assert code == 0
    assert "0.1 to 3600" in out and "0.1 to 1000" in out


def test_a_usage_error_with_json_prints_an_error_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_in_process(
        ["drill", "run", "replication-pause", "-r", "eu-west-1", "--duration", "nan", "--json"],
        capsys,
    )
    assert code == 2
    error = json.loads(out)["error"]
    assert error["exit_code"] == 2
    assert "--duration" in error["message"]
    assert "--duration" in err  # the human message, on stderr


# --- output paths ------------------------------------------------------------------------


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write into (root ignores mode bits)."""
    if os.geteuid() == 0:
        for candidate in (Path("/proc/self"), Path("/sys")):
            if candidate.is_dir():
                return candidate
        pytest.skip("no unwritable directory for root")
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    return d


@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "schema", "--out"],
        ["audit", "run", "--checks", "policy", "--out"],
    ],
    ids=["policy-schema", "audit-run"],
)
@pytest.mark.parametrize("where", ["directory", "under-a-file", "read-only", "fifo"])
def test_output_files_are_checked_first(
    argv: list[str], where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no reader: opening it for writing would block for ever
    target = {
        "directory": tmp_path,
        "under-a-file": a_file / "report.json",
        "read-only": _unwritable_dir(tmp_path) / "report.json",
        "fifo": fifo,
    }[where]
    code, out, err = run_in_process(["--policy", str(MINIMAL), *argv, str(target)], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert str(target) in err
    assert a_file.read_text() == "keep me"
    assert out == ""


def test_missing_parent_directories_are_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "dir" / "schema.json"
    code, _, err = run_in_process(["policy", "schema", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.read_text() == (ROOT / "policies" / "schema.json").read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["drill", "run", "replication-pause", "-r", "eu-west-1", "--report-dir"],
        ["demo", "--report-dir"],
        ["infra", "synth", "--out"],
    ],
    ids=["drill-run", "demo", "infra-synth"],
)
def test_output_directories_are_checked_before_any_work(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    code, _, err = run_in_process(["--policy", str(MINIMAL), *argv, str(a_file)], capsys)
    assert code == 2
    assert f"{a_file}: exists and is not a directory" in err
    assert a_file.read_text() == "keep me"


# --- missing extras ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["infra", "synth"], "infra"),
        (["local", "up"], "local"),
        (["demo"], "local"),
    ],
)
def test_a_missing_extra_is_one_line(argv: list[str], extra: str, tmp_path: Path) -> None:
    blocked = {"infra": "aws_cdk", "local": "moto"}[extra]
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None  # as if the extra were not installed\n"
        "import cli\n"
        f"cli.main({['--policy', str(MINIMAL), *argv]!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"pip install 'regionkit[{extra}]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "cdk.out").exists()


# --- where the policy comes from -----------------------------------------------------------


def test_no_policy_anywhere_names_the_lookup_order(tmp_path: Path) -> None:
    proc = run("policy", "validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no policy file found" in proc.stderr
    assert "REGIONKIT_POLICY" in proc.stderr and "./regionkit.yaml" in proc.stderr
    proc = run("policy", "explain", "-c", "DE", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no policy file found" in json.loads(proc.stdout)["error"]["message"]


def test_the_lookup_order(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "policies" / "social-network.yaml")
    proc = run("policy", "validate", cwd=tmp_path)
    assert proc.returncode == 0 and "policy 'social-network'" in proc.stdout
    # ./regionkit.yaml comes before ./policies/
    (tmp_path / "regionkit.yaml").write_text(
        MINIMAL.read_text().replace("name: minimal", "name: here")
    )
    proc = run("policy", "validate", cwd=tmp_path)
    assert proc.returncode == 0 and "policy 'here'" in proc.stdout, proc.stderr
    # REGIONKIT_POLICY comes before ./regionkit.yaml, and --policy before both
    env = {"REGIONKIT_POLICY": str(MINIMAL)}
    proc = run("policy", "validate", cwd=tmp_path, env=env)
    assert "policy 'minimal'" in proc.stdout
    proc = run(
        "--policy", str(EXAMPLE), "policy", "explain", "-c", "IN", "--json", cwd=tmp_path, env=env
    )
    assert json.loads(proc.stdout)["jurisdiction"] == "IN"


def test_help_states_the_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_in_process(["--help"], capsys)
    assert code == 0
    flat = " ".join(out.replace("│", " ").split())
    for step in ("--policy", "REGIONKIT_POLICY", "./regionkit.yaml", "./policies/"):
        assert step in flat
    assert "packaged" in flat


def test_demo_and_local_up_fall_back_to_the_packaged_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGIONKIT_POLICY", raising=False)
    from _cli import common

    monkeypatch.setattr(common, "state", common.State())
    assert not common.get_settings().policy.exists()  # other commands: no fallback
    common.state.allow_example = True  # what demo and local up set
    found = common.get_settings().policy
    assert found == common.packaged_example() and found.is_file()
    err = capsys.readouterr().err
    assert "using the example policy packaged with regionkit" in " ".join(err.split())
    common.get_settings()
    assert capsys.readouterr().err == ""  # said once


# --- a drill that did nothing ------------------------------------------------------------


def test_a_drill_with_no_writes_never_passes() -> None:
    from regions.drills import DrillOptions, DrillRunner, get_scenario
    from regions.drills.backends import SimBackend
    from regions.local.sim import simulation
    from residency.errors import ConfigError
    from residency.policy import load_policy

    # A NaN span compares false with everything: it is refused, never run.
    for bad in ({"duration": float("nan")}, {"rate": float("inf")}, {"recovery": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            DrillOptions(**bad)  # type: ignore[arg-type]
    policy = load_policy(MINIMAL)
    with simulation(policy, seed=1) as s:
        sc = get_scenario("replication-pause")
        params: Any = sc.parse(policy, {"region": "eu-central-1"})
        journal = DrillRunner(
            SimBackend(s),
            sc,
            params,
            options=DrillOptions(duration=0.0, baseline=0.0, rate=10, recovery=0.0, seed=1),
        ).run()
    assert sum(r.writes_ok + r.writes_failed for r in journal.figures.regions) == 0
    assert journal.verdict == "fail"
    assert any("no writes" in r for r in journal.reasons)


def test_an_operation_error_with_json_prints_an_error_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_in_process(
        ["local", "status", "--json", "--state-file", str(tmp_path / "none.json")], capsys
    )
    assert code == 1
    error = json.loads(out)["error"]
    assert error["type"] == "ClusterError" and error["exit_code"] == 1
    assert "no local cluster is running" in error["message"]
    assert "failed:" in err
