"""Merge references: resolved at validation, through an allow-list, importing nothing else.

A policy may name functions of ``regions.merges`` and of the modules the operator
lists in the ``merge_modules`` setting (REGIONKIT_MERGE_MODULES), never any other.
The target must exist, be a public function defined in that module and take
``(ours, theirs)``. ``policy validate`` and ``local up`` check it; the router calls
:func:`residency.policy.resolve_merge` at start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from residency.errors import ConfigError, PolicyError
from residency.policy import (
    BUILTIN_MERGE_MODULE,
    load_policy,
    merge_problems,
    parse_policy_text,
    resolve_merge,
)

ROOT = Path(__file__).resolve().parent.parent
REGIONKIT = Path(sys.executable).parent / "regionkit"
MINIMAL = (ROOT / "policies" / "minimal.yaml").read_text("utf-8")

OPERATOR_MODULE = '''
"""An operator's merge functions (listed in REGIONKIT_MERGE_MODULES)."""
from pathlib import Path
from os import system  # re-exported: must never be usable as a merge function

Path(__file__).with_suffix(".imported").touch()  # proves whether it was imported

__all__ = ["longest", "three_args", "system", "Klass", "coro"]


def longest(ours, theirs):
    return ours if len(str(ours)) >= len(str(theirs)) else theirs


def three_args(a, b, c):
    return a


def _hidden(ours, theirs):
    return ours


class Klass:
    def __init__(self, ours, theirs):
        pass


async def coro(ours, theirs):
    return ours
'''


def _with_merge(ref: str) -> str:
    return MINIMAL.replace(
        "    table: content\n",
        f"    table: content\n    conflicts:\n      merge: {ref!r}\n",
    )


def _line_of_merge(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if "merge:" in line)


@pytest.fixture
def operator_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``op_merges_<n>`` on sys.path; returns its path (its name is the stem)."""
    name = f"op_merges_{os.getpid()}_{len(list(tmp_path.parent.iterdir()))}"
    path = tmp_path / f"{name}.py"
    path.write_text(OPERATOR_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    sys.modules.pop(name, None)


def test_the_builtin_merge_resolves() -> None:
    from regions.merges import merge_counters

    fn = resolve_merge(f"{BUILTIN_MERGE_MODULE}:merge_counters")
    merged = fn({"counts": {"like#a": 1}}, {"counts": {"like#a": 2, "like#b": 1}})
    assert {k: int(v) for k, v in merged["counts"].items()} == {"like#a": 2, "like#b": 1}
    assert fn.__name__ == merge_counters.__name__


@pytest.mark.parametrize(
    ("ref", "text"),
    [
        ("regions.merges:nope", "has no function 'nope'"),
        ("regions.merges:merge_countres", "did you mean 'merge_counters'"),
        ("regions.merges:increment_counter", "does not fit the merge signature"),
        ("regions.merges:Decimal", "not exported"),
        ("regions.merges:_private", "private"),
        ("os:system", "module 'os' is not allowed"),
        ("subprocess:call", "module 'subprocess' is not allowed"),
        ("builtins:eval", "module 'builtins' is not allowed"),
        ("no_such_module:merge", "module 'no_such_module' is not allowed"),
        ("regions:RegionRouter", "module 'regions' is not allowed"),
        ("regions.merges.sub:merge", "module 'regions.merges.sub' is not allowed"),
        ("regions.merges", "not a 'module:function' reference"),
        ("regions.merges:merge_counters()", "not a 'module:function' reference"),
    ],
)
def test_refused_references(ref: str, text: str) -> None:
    with pytest.raises(PolicyError) as info:
        resolve_merge(ref, source="p.yaml", field="data_classes.x.conflicts.merge", line=7)
    assert isinstance(info.value, ConfigError)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == (
        "p.yaml",
        7,
        "data_classes.x.conflicts.merge",
    )
    assert text in problem.message
    assert problem.fix
    assert problem.value == repr(ref)


def test_an_operator_module_is_allowed_only_when_listed(operator_module: Path) -> None:
    name = operator_module.stem
    marker = operator_module.with_suffix(".imported")
    with pytest.raises(PolicyError, match="is not allowed"):
        resolve_merge(f"{name}:longest")
    assert not marker.exists(), "a module outside the allow-list was imported"
    fn = resolve_merge(f"{name}:longest", extra_modules=[name])
    assert marker.exists()
    assert fn({"a": "xx"}, {"a": "x"}) == {"a": "xx"}


@pytest.mark.parametrize(
    ("function", "text"),
    [
        ("three_args", "does not fit the merge signature"),
        ("system", "imported into"),
        ("Klass", "not a function"),
        ("coro", "coroutine"),
        ("_hidden", "private"),
        ("missing", "has no function"),
    ],
)
def test_operator_module_targets_are_checked(
    operator_module: Path, function: str, text: str
) -> None:
    name = operator_module.stem
    with pytest.raises(PolicyError, match=text):
        resolve_merge(f"{name}:{function}", extra_modules=[name])


def test_a_listed_module_that_cannot_be_imported() -> None:
    with pytest.raises(PolicyError, match="cannot be imported: ModuleNotFoundError"):
        resolve_merge("no_such_module_xyz:merge", extra_modules=["no_such_module_xyz"])


def test_validation_locates_the_reference() -> None:
    text = _with_merge("os:system")
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source="p.yaml")
    (problem,) = info.value.problems
    assert problem.line == _line_of_merge(text)
    assert problem.field == "data_classes.content.conflicts.merge"
    assert "'os:system'" in str(info.value)
    # merge_problems reports the same without raising
    policy = parse_policy_text(text, source="p.yaml", merge_modules=None)
    assert [p.field for p in merge_problems(policy)] == ["data_classes.content.conflicts.merge"]


def test_loading_a_policy_imports_no_other_module(tmp_path: Path) -> None:
    """In a fresh interpreter: refused references import nothing, and the builtin one
    does not pull in the router (regions/__init__) or boto3."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(_with_merge("evil_probe:merge"), encoding="utf-8")
    good = tmp_path / "good.yaml"
    good.write_text(_with_merge("regions.merges:merge_counters"), encoding="utf-8")
    (tmp_path / "evil_probe.py").write_text(
        "from pathlib import Path\nPath(__file__).with_suffix('.imported').touch()\n"
        "def merge(a, b):\n    return a\n",
        encoding="utf-8",
    )
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from residency.errors import PolicyError
        from residency.policy import load_policy
        try:
            load_policy({str(bad)!r})
        except PolicyError:
            pass
        load_policy({str(good)!r})
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split(".")[0] in {{"evil_probe", "regions", "boto3"}})))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert not (tmp_path / "evil_probe.imported").exists()


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Any:
    return subprocess.run(
        [str(REGIONKIT), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_policy_validate_resolves_merges(tmp_path: Path) -> None:
    nope = tmp_path / "nope.yaml"
    nope.write_text(_with_merge("regions.merges:nope"), encoding="utf-8")
    proc = _cli("policy", "validate", str(nope))
    assert proc.returncode == 2
    assert f"{nope}:{_line_of_merge(nope.read_text())}: data_classes.content.conflicts.merge" in (
        proc.stderr
    )
    assert "has no function 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_operator_modules_come_from_settings_not_the_policy(tmp_path: Path) -> None:
    (tmp_path / "team_merges.py").write_text(
        "__all__ = ['pick']\ndef pick(ours, theirs):\n    return ours\n", encoding="utf-8"
    )
    policy = tmp_path / "p.yaml"
    policy.write_text(_with_merge("team_merges:pick"), encoding="utf-8")
    env = {"PYTHONPATH": str(tmp_path)}
    refused = _cli("policy", "validate", str(policy), env=env)
    assert refused.returncode == 2
    assert "REGIONKIT_MERGE_MODULES" in refused.stderr
    allowed = _cli(
        "policy", "validate", str(policy), env={**env, "REGIONKIT_MERGE_MODULES": '["team_merges"]'}
    )
    assert allowed.returncode == 0, allowed.stderr
    # a policy cannot list modules itself: there is no such key
    smuggled = policy.read_text().replace("version: 1\n", "version: 1\nmerge_modules: [os]\n")
    policy.write_text(smuggled, encoding="utf-8")
    proc = _cli("policy", "validate", str(policy), env=env)
    assert proc.returncode == 2 and "unknown key 'merge_modules'" in proc.stderr


def test_local_up_refuses_an_unresolvable_merge_before_starting(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(_with_merge("subprocess:call"), encoding="utf-8")
    proc = _cli(
        "--policy",
        str(policy),
        "local",
        "up",
        "--state-file",
        str(tmp_path / "state.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "module 'subprocess' is not allowed" in proc.stderr
    assert not (tmp_path / "state.json").exists()


def test_the_example_policy_validates_with_its_merge() -> None:
    policy = load_policy(ROOT / "policies" / "social-network.yaml")
    assert merge_problems(policy) == []
