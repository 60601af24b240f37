"""The malformed-policy corpus: every mistake gets one precise, short, traceback-free error.

Each file in ``tests/fixtures/policies/bad/`` is ``policies/minimal.yaml`` with one thing
broken, and starts with a line saying what the error must contain::

    # expect: line=<N> field=<dotted field, or a substring of it> text=<substring of message>

The CLI runs once over the whole corpus (human output and ``--json``) and the per-file
tests check their own part of that output; a few files also run on their own, and
:func:`residency.policy.load_policy` is checked in process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from residency.errors import PolicyError, PolicyProblem
from residency.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
BAD_DIR = ROOT / "tests" / "fixtures" / "policies" / "bad"
REGIONKIT = Path(sys.executable).parent / "regionkit"
_EXPECT = re.compile(r"^# expect: line=(?P<line>\d+) field=(?P<field>\S+) text=(?P<text>.+)$")
MAX_OUTPUT = 1500


@dataclass(frozen=True)
class Case:
    path: Path
    line: int
    field: str
    text: str

    @property
    def rel(self) -> str:
        """The path as given to the CLI (relative to the repository root)."""
        return self.path.relative_to(ROOT).as_posix()


def _load_cases() -> list[Case]:
    cases = []
    for path in sorted(BAD_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").partition("\n")[0]
        m = _EXPECT.match(first)
        assert m, f"{path.name}: the first line must be '# expect: line=N field=F text=T'"
        cases.append(Case(path, int(m["line"]), m["field"], m["text"]))
    return cases


CASES = _load_cases()
IDS = [c.path.stem for c in CASES]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REGIONKIT), *args], cwd=ROOT, check=False, capture_output=True, text=True, timeout=60
    )


def _matches(problem: PolicyProblem | dict[str, Any], case: Case) -> bool:
    p = problem if isinstance(problem, dict) else vars(problem)
    return p["line"] == case.line and case.field in p["field"] and case.text in p["message"]


@pytest.fixture(scope="module")
def batch_human() -> subprocess.CompletedProcess[str]:
    """One CLI run over the whole corpus, human-readable output."""
    return _run("policy", "validate", *(c.rel for c in CASES))


@pytest.fixture(scope="module")
def batch_json() -> dict[str, dict[str, Any]]:
    """One CLI run over the whole corpus, ``--json``; results keyed by file."""
    proc = _run("policy", "validate", "--json", *(c.rel for c in CASES))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    # a failing --json command prints {"error": {...}} on stdout; validate adds the results
    error = out["error"]
    assert error["type"] == "PolicyError" and error["exit_code"] == 2
    assert len(error["problems"]) == sum(len(r["problems"]) for r in out["results"])
    # and the human message still goes to stderr
    assert all(f"error {c.rel}:" in proc.stderr for c in CASES)
    return {r["file"]: r for r in out["results"]}


def _blocks_for(stderr: str, case: Case) -> str:
    """The error lines (with their fix lines) the batch run printed for one file."""
    blocks: list[list[str]] = []
    for line in stderr.splitlines():
        if line.startswith("error "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    mine = [b for b in blocks if b[0].removeprefix("error ").startswith(case.rel + ":")]
    return "\n".join("\n".join(b) for b in mine)


def test_corpus_is_large_and_varied() -> None:
    assert len(CASES) >= 32
    # every file is a different mistake: no two files expect the same error
    expectations = [(c.field, c.text) for c in CASES]
    assert len(set(expectations)) == len(expectations)


def test_batch_run_fails_with_exit_2_and_no_traceback(
    batch_human: subprocess.CompletedProcess[str],
) -> None:
    assert batch_human.returncode == 2
    assert "Traceback" not in batch_human.stdout + batch_human.stderr
    assert batch_human.stdout == ""  # nothing is valid, so nothing goes to stdout


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_names_file_line_field_and_problem(
    case: Case, batch_human: subprocess.CompletedProcess[str]
) -> None:
    out = _blocks_for(batch_human.stderr, case)
    assert out, f"no error printed for {case.rel}"
    assert f"{case.rel}:{case.line}:" in out
    assert case.field in out
    assert case.text in out
    assert len(out) < MAX_OUTPUT, f"{len(out)} characters of errors for one mistake"
    # each problem line reads "error FILE:LINE: FIELD: MESSAGE"; the one we expect is there
    wanted = re.compile(
        rf"^error {re.escape(case.rel)}:{case.line}: [^:]*{re.escape(case.field)}[^:]*: .*"
        + re.escape(case.text),
        re.MULTILINE,
    )
    assert wanted.search(out), out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_json_problems(case: Case, batch_json: dict[str, dict[str, Any]]) -> None:
    result = batch_json[case.rel]
    assert result["valid"] is False
    problems = result["problems"]
    assert problems, "an invalid file must list at least one problem"
    assert all(p["file"] == case.rel for p in problems)
    assert any(_matches(p, case) for p in problems), problems
    assert all(p["fix"] for p in problems), "every problem says how to fix it"


@pytest.mark.parametrize(
    "name",
    ["yaml-unclosed-bracket", "empty-file", "duplicate-key-nested", "country-unquoted-no"],
)
def test_single_file_run(name: str) -> None:
    case = next(c for c in CASES if c.path.stem == name)
    proc = _run("policy", "validate", case.rel)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"{case.rel}:{case.line}:" in proc.stderr
    assert case.field in proc.stderr
    assert case.text in proc.stderr
    assert len(proc.stderr) < MAX_OUTPUT


def test_valid_and_invalid_files_together() -> None:
    """The exit code is 2 if any file is invalid; valid ones are still reported on stdout."""
    bad = CASES[0].rel
    proc = _run("policy", "validate", "policies/minimal.yaml", bad)
    assert proc.returncode == 2
    assert "ok" in proc.stdout and "policies/minimal.yaml" in proc.stdout
    assert bad in proc.stderr


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_load_policy_raises_located_problem(case: Case) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(case.path)
    problems = info.value.problems
    assert all(isinstance(p, PolicyProblem) for p in problems)
    assert all(p.file == str(case.path) for p in problems)
    assert any(_matches(p, case) for p in problems), [str(p) for p in problems]
    # the exception text is every problem, each as "file:line: field: message (fix: ...)"
    assert f"{case.path}:{case.line}: " in str(info.value)
