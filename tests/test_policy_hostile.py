"""The hostile policy corpus: files that tried to crash, hang or run code in the loader.

The corpus (``tests/fixtures/hostile_policies.py``) is generated from the example
policy and from the minimal one: bad encodings and binary files, YAML tags, anchors,
aliases and merge keys, deep nesting, huge files, values and numbers, numeric bounds,
repeated and empty lists, merge references outside the allow-list, and broken
structure. Every case must end in exit 2 with the file, the line, the field path,
the offending value and a fix, with no traceback, within 2 s and 100 MB RSS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.hostile_policies import Hostile, hostile_cases

from residency.errors import PolicyError, PolicyProblem
from residency.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
REGIONKIT = Path(sys.executable).parent / "regionkit"
BASES = {name: ROOT / "policies" / f"{name}.yaml" for name in ("minimal", "social-network")}
CASES: list[Hostile] = [
    c for name, path in BASES.items() for c in hostile_cases(name, path.read_text("utf-8"))
]
# One more, too big to keep in memory per base: a 50 MB file (read up to the limit only).
HUGE = "social-network-fifty-megabytes"
KINDS = {
    "encoding",
    "tags",
    "aliases",
    "depth",
    "size",
    "numbers",
    "lists",
    "merges",
    "structure",
}
# CPU seconds one file may cost (process time: a loaded machine does not inflate it)
MAX_SECONDS, MAX_RSS_MB = 2.0, 100.0
PWNED = Path("/tmp/regionkit-pwned")  # what the !!python/object/apply case would create


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus written to files named <case>.yaml, plus the 50 MB one."""
    d = tmp_path_factory.mktemp("hostile")
    for c in CASES:
        (d / f"{c.name}.yaml").write_bytes(c.data)
    with (d / f"{HUGE}.yaml").open("wb") as f:
        f.write(BASES["social-network"].read_bytes())
        chunk = b"# padding " * 100_000 + b"\n"
        for _ in range(50):
            f.write(chunk)
    return d


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REGIONKIT), *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=120
    )


def _matches(p: dict[str, Any], case: Hostile) -> bool:
    shown = (p.get("value") or "") + " " + p["message"]
    return (
        p["line"] == case.line
        and case.field in p["field"]
        and case.text in p["message"]
        and case.value in shown
    )


def test_corpus_is_hostile_enough() -> None:
    """At least as hostile as the 80-file corpus of issue 16, in every class, from both bases."""
    assert len(CASES) >= 80
    assert {c.kind for c in CASES} == KINDS
    for base in BASES:
        assert {c.kind for c in CASES if c.name.startswith(base + "-")} == KINDS
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.data for c in CASES}) == len(CASES), "two cases are the same file"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_loader_raises_one_located_policy_error(case: Hostile, corpus: Path) -> None:
    path = corpus / f"{case.name}.yaml"
    with pytest.raises(PolicyError) as info:  # never any other exception
        load_policy(path)
    problems = info.value.problems
    assert problems and all(isinstance(p, PolicyProblem) for p in problems)
    assert all(p.file == str(path) and p.fix for p in problems)
    assert any(_matches(vars(p), case) for p in problems), [vars(p) for p in problems]
    # values are truncated (no 5,000-digit echo), and at most 50 problems (+1 line) are listed
    assert all(len(str(p)) < 1000 for p in problems) and len(problems) <= 51
    assert not PWNED.exists()


def test_worst_case_time_and_memory(corpus: Path) -> None:
    """Every case, the 50 MB file included, in one fresh interpreter: time and peak RSS."""
    code = textwrap.dedent("""
        import json, resource, sys, time
        from pathlib import Path
        from residency.errors import PolicyError
        from residency.policy import load_policy

        def peak_mb():
            # VmHWM: this process's own peak (ru_maxrss also counts the parent's, pytest's,
            # peak across fork and exec on Linux)
            try:
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
            except OSError:
                pass
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        base = peak_mb()
        times = {}
        for path in sorted(Path(sys.argv[1]).glob("*.yaml")):
            t = time.process_time()
            try:
                load_policy(path)
                outcome = "valid"
            except PolicyError:
                outcome = "PolicyError"
            times[path.stem] = (time.process_time() - t, outcome)
        peak = peak_mb()
        print(json.dumps({"times": times, "base_rss_mb": base, "peak_rss_mb": peak}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(corpus)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(proc.stdout)
    times = result["times"]
    assert len(times) == len(CASES) + 1
    assert {outcome for _, outcome in times.values()} == {"PolicyError"}
    worst = max(times, key=lambda k: times[k][0])
    print(
        f"\nhostile corpus: {len(times)} files; worst {worst} {times[worst][0] * 1000:.1f} ms; "
        f"peak RSS {result['peak_rss_mb']:.1f} MB (interpreter with regionkit loaded: "
        f"{result['base_rss_mb']:.1f} MB)"
    )
    assert times[worst][0] <= MAX_SECONDS, worst
    assert result["peak_rss_mb"] <= MAX_RSS_MB


# --- the CLI, once over the whole corpus ------------------------------------------------


@pytest.fixture(scope="module")
def batch_human(corpus: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        "policy", "validate", *(f"{c.name}.yaml" for c in CASES), f"{HUGE}.yaml", cwd=corpus
    )


@pytest.fixture(scope="module")
def batch_json(corpus: Path) -> dict[str, Any]:
    proc = _run(
        "policy",
        "validate",
        "--json",
        *(f"{c.name}.yaml" for c in CASES),
        f"{HUGE}.yaml",
        cwd=corpus,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    assert "error: " not in proc.stdout
    return {"error": out["error"], "stderr": proc.stderr, **{r["file"]: r for r in out["results"]}}


def test_cli_batch_exit_2_no_traceback(batch_human: subprocess.CompletedProcess[str]) -> None:
    assert batch_human.returncode == 2
    assert "Traceback" not in batch_human.stdout + batch_human.stderr
    assert batch_human.stdout == ""
    assert f"error {HUGE}.yaml: (file): the file is larger than" in batch_human.stderr


def _blocks(stderr: str, name: str) -> str:
    blocks: list[list[str]] = []
    for line in stderr.splitlines():
        if line.startswith("error "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return "\n".join("\n".join(b) for b in blocks if b[0].startswith(f"error {name}.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_names_file_line_field_value_and_fix(
    case: Hostile, batch_human: subprocess.CompletedProcess[str]
) -> None:
    out = _blocks(batch_human.stderr, case.name)
    where = f"{case.name}.yaml:{case.line}:" if case.line else f"{case.name}.yaml:"
    line = re.compile(
        rf"^error {re.escape(where)} [^\n]*{re.escape(case.field)}[^\n]*: [^\n]*"
        + re.escape(case.text),
        re.MULTILINE,
    )
    assert line.search(out), out
    assert case.value in out
    assert "\n      fix: " in out
    assert all(len(line) < 1000 for line in out.splitlines())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_json_error_object(case: Hostile, batch_json: dict[str, Any]) -> None:
    result = batch_json[f"{case.name}.yaml"]
    assert result["valid"] is False
    assert any(_matches(p, case) for p in result["problems"]), result["problems"]
    assert all(p["fix"] for p in result["problems"])
    assert any(_matches(p, case) for p in batch_json["error"]["problems"])
    assert f"error {case.name}.yaml" in batch_json["stderr"]  # the human message too


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "explain", "--country", "DE", "--json"],
        ["drill", "plan", "region-outage", "--region", "eu-west-1", "--json"],
        ["infra", "synth", "--no-nag", "--json", "--out", "cdk-out"],
    ],
    ids=["explain", "drill-plan", "infra-synth"],
)
@pytest.mark.parametrize("name", ["social-network-billion-laughs", "minimal-merge-os-system"])
def test_json_commands_print_an_error_object(args: list[str], name: str, corpus: Path) -> None:
    proc = _run("--policy", f"{name}.yaml", *args, cwd=corpus)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == "PolicyError" and error["exit_code"] == 2
    case = next(c for c in CASES if c.name == name)
    assert any(_matches(p, case) for p in error["problems"])
    assert f"{name}.yaml:{case.line}:" in proc.stderr  # the human message, on stderr
    assert not (corpus / "cdk-out").exists()  # nothing was started


def test_special_files_neither_hang_nor_crash(tmp_path: Path) -> None:
    """A FIFO nobody writes to, an endless device and a directory: PolicyError, at once."""
    import os
    import time

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, text in [
        (fifo, "the file is empty"),
        (Path("/dev/zero"), "larger than the 1,000,000-byte limit"),
        (tmp_path, "cannot read the file"),
        (tmp_path / "missing.yaml", "cannot read the file"),
    ]:
        start = time.process_time()
        with pytest.raises(PolicyError, match=text):
            load_policy(path)
        assert time.process_time() - start < MAX_SECONDS


def test_the_cli_over_the_whole_corpus_stays_bounded(corpus: Path) -> None:
    """`regionkit policy validate --json` over every file at once: peak RSS of that process."""
    names = sorted(p.name for p in corpus.glob("*.yaml"))
    code = textwrap.dedent(f"""
        import atexit, json, sys, time
        from pathlib import Path
        start = time.process_time()

        def report():
            hwm = next(l for l in Path("/proc/self/status").read_text().splitlines()
                       if l.startswith("VmHWM:"))
            sys.stderr.write("PEAK=" + json.dumps({{"rss_mb": int(hwm.split()[1]) / 1024,
                             "seconds": time.process_time() - start}}) + "\\n")

        atexit.register(report)
        import cli
        cli.main(["policy", "validate", "--json", *{names!r}])
    """)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=corpus,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    peak = json.loads(proc.stderr.rsplit("PEAK=", 1)[1])
    seconds, rss = peak["seconds"], peak["rss_mb"]
    print(f"\nCLI over {len(names)} files: {seconds:.2f} s, peak RSS {rss:.1f} MB")
    assert peak["rss_mb"] <= MAX_RSS_MB
    assert len(json.loads(proc.stdout)["results"]) == len(names)


def test_without_libyaml_only_small_flat_files_are_parsed(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML's pure-Python parser takes 34 s for 20,000 '[': it never sees such a file."""
    import time

    import yaml

    from residency import yamlmarks

    monkeypatch.setattr(yamlmarks, "HAVE_LIBYAML", False)
    monkeypatch.setattr(yamlmarks, "_Loader", yaml.SafeLoader)
    for name, text in [
        ("nested-20000-brackets", "without libyaml"),
        ("too-many-values", "without libyaml"),
        ("long-scalar", "at most 10000"),
        ("billion-laughs", "anchor"),
    ]:
        start = time.process_time()
        with pytest.raises(PolicyError, match=text):
            load_policy(corpus / f"social-network-{name}.yaml")
        assert time.process_time() - start < MAX_SECONDS
    # the example policies still load, and hostile ones still fail as PolicyError
    load_policy(BASES["social-network"])
    with pytest.raises(PolicyError, match="not allowed"):
        load_policy(corpus / "minimal-tag-python-apply.yaml")
