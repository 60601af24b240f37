"""The regionkit command: version, help, exit codes, errors without tracebacks, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from residency.__about__ import __version__

ROOT = Path(__file__).resolve().parent.parent
REGIONKIT = Path(sys.executable).parent / "regionkit"
HEAVY = {"boto3", "botocore", "moto", "aws_cdk"}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(REGIONKIT), *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"regionkit {__version__}"


@pytest.mark.parametrize(
    "args", [["--help"], ["policy", "--help"], ["policy", "validate", "--help"]]
)
def test_help(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 0
    assert "Usage" in proc.stdout
    assert proc.stderr == ""


def test_help_lists_the_policy_commands() -> None:
    out = run("policy", "--help").stdout
    for command in ("validate", "explain", "schema"):
        assert command in out


@pytest.mark.parametrize("group", [[], ["audit"], ["local", "fault"], ["drill"]])
def test_help_gives_each_command_its_whole_first_sentence(group: list[str]) -> None:
    """click's plain help cuts a command's summary at one line with "..."; regionkit's
    groups wrap the whole first sentence instead (``_cli.common.WholeSentenceGroup``)."""
    proc = subprocess.run(
        [str(REGIONKIT), *group, "--help"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    commands = proc.stdout.split("Commands:", 1)[1]
    assert commands.strip() and "..." not in commands, commands
    assert max(len(line) for line in commands.splitlines()) <= 80
    if not group:
        assert "with the failover chain." in " ".join(commands.split())


def test_no_arguments_shows_help() -> None:
    proc = run()
    assert "Usage" in proc.stdout + proc.stderr
    assert proc.returncode in {0, 2}  # click's no_args_is_help exits 2 in newer versions


def test_validate_examples() -> None:
    proc = run("policy", "validate", "policies/social-network.yaml", "policies/minimal.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok") == 2
    assert "policy 'social-network', 4 jurisdictions, 7 regions, 4 data classes" in proc.stdout


def test_validate_defaults_to_the_settings_policy() -> None:
    proc = run("policy", "validate")
    assert proc.returncode == 0
    assert "policies/social-network.yaml" in proc.stdout


def test_validate_json() -> None:
    proc = run("policy", "validate", "--json", "policies/minimal.yaml")
    assert proc.returncode == 0
    (result,) = json.loads(proc.stdout)
    assert result == {
        "file": "policies/minimal.yaml",
        "valid": True,
        "name": "minimal",
        "jurisdictions": 2,
        "regions": 3,
        "data_classes": 3,
    }


def test_explain_india_json() -> None:
    proc = run("policy", "explain", "--country", "IN", "--json")
    assert proc.returncode == 0, proc.stderr
    ex = json.loads(proc.stdout)
    assert ex["jurisdiction"] == "IN"
    assert ex["home_regions"][0] == "ap-south-1"
    profile = next(dc for dc in ex["data_classes"] if dc["data_class"] == "profile")
    assert [step["region"] for step in profile["chain"]] == ["ap-south-1", "ap-south-2"]
    for dc in ex["data_classes"]:
        assert dc["chain"][0]["region"] == "ap-south-1"


def test_explain_brazil_human_output() -> None:
    proc = run("policy", "explain", "-c", "BR", "-d", "profile")
    assert proc.returncode == 0
    assert "sa-east-1" in proc.stdout
    assert "no compliant failover" in proc.stdout


def test_explain_unknown_country() -> None:
    proc = run("policy", "explain", "--country", "XX")
    assert proc.returncode == 2
    assert "'XX' is not an ISO 3166-1 alpha-2 country code" in proc.stderr
    assert proc.stdout == ""


def test_explain_unknown_data_class() -> None:
    proc = run("policy", "explain", "--country", "IN", "--data-class", "photos")
    assert proc.returncode == 2
    assert "unknown data class 'photos'" in proc.stderr


def test_missing_policy_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "policy.yaml"
    proc = run("--policy", str(missing), "policy", "explain", "--country", "IN")
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "cannot read the file" in proc.stderr
    assert len(proc.stderr) < 1500


def test_policy_from_the_environment(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(REGIONKIT), "policy", "validate"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "REGIONKIT_POLICY": str(ROOT / "policies/minimal.yaml")},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "policy 'minimal'" in proc.stdout


def test_bad_settings_are_exit_2(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        'REGIONKIT_ENDPOINTS={"us-east-1": "https://dynamodb.us-east-1.amazonaws.com"}\n'
    )
    proc = run("policy", "validate", str(ROOT / "policies/minimal.yaml"), cwd=tmp_path)
    # validate with an explicit path needs no settings; explain does
    assert proc.returncode == 0
    proc = run(
        "--policy",
        str(ROOT / "policies/minimal.yaml"),
        "policy",
        "explain",
        "-c",
        "DE",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "local mode refuses the non-loopback endpoint" in proc.stderr


def test_bad_log_format() -> None:
    proc = run("--log-format", "xml", "policy", "validate")
    assert proc.returncode == 2
    assert "--log-format must be 'console' or 'json'" in proc.stderr


def test_unknown_command_is_a_usage_error() -> None:
    proc = run("polcy")
    assert proc.returncode == 2
    assert "polcy" in proc.stderr


def test_schema_command_prints_the_committed_schema(tmp_path: Path) -> None:
    proc = run("policy", "schema")
    assert proc.returncode == 0
    assert proc.stdout == (ROOT / "policies" / "schema.json").read_text(encoding="utf-8")
    out = tmp_path / "schema.json"
    assert run("policy", "schema", "-o", str(out)).returncode == 0
    assert out.read_text(encoding="utf-8") == proc.stdout


def _imported_after(argv: list[str]) -> set[str]:
    """Top-level packages of interest imported after running ``cli.main(argv)`` in a fresh
    interpreter."""
    code = textwrap.dedent(f"""
        import json, sys
        import cli
        try:
            cli.main({argv!r})
        except SystemExit:
            pass
        wanted = {{"boto3", "botocore", "moto", "aws_cdk", "pydantic", "rich", "yaml"}}
        print("MODULES=" + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & wanted)))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


def test_help_imports_nothing_heavy() -> None:
    imported = _imported_after(["--help"])
    assert not imported & HEAVY, imported
    assert "pydantic" not in imported  # the policy model is only loaded by policy commands


def test_policy_commands_import_no_aws_sdk() -> None:
    imported = _imported_after(["policy", "validate", "policies/minimal.yaml"])
    assert "pydantic" in imported  # sanity: the command did load a policy
    assert not imported & HEAVY, imported
