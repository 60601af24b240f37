"""The public API of ``regions`` and the layering of the whole code base.

Like httpx's ``tests/test_exported_members.py``: the names services import are
listed once, here, and a change to them is a deliberate change to this file.
The import graph is read from the source with :mod:`ast` (lazy imports inside
functions and ``TYPE_CHECKING`` blocks count too), so a layering violation
fails here even when the offending line never runs in a test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import regions

ROOT = Path(__file__).resolve().parent.parent

# What services import (the regions package docstring shows the usage).
DOCUMENTED = {
    # the router, its configuration and what it returns
    "RegionRouter",
    "RouterConfig",
    "Route",
    "Written",
    "MoveResult",
    # its replaceable parts
    "ClientPool",
    "ClientProvider",
    "RegionHealth",
    "HealthState",
    "BreakerState",
    "RegionStatus",
    "DirectoryEntry",
    # version stamps
    "HLC",
    "Stamp",
    "ClockDriftError",
    # user IDs
    "mint_user_id",
    "parse_user_id",
    # queries and batches
    "Page",
    "Sort",
    "BatchGetResult",
    "BatchWriteResult",
    # the errors a caller handles
    "UnassignedUser",
    "RegionkitError",
    "RegionUnavailable",
    "ResidencyViolation",
    "StaleWrite",
}


def test_regions_all_is_exactly_the_documented_set() -> None:
    assert set(regions.__all__) == DOCUMENTED
    assert len(regions.__all__) == len(set(regions.__all__))  # no duplicates


def test_every_public_name_imports_and_nothing_else_is_public() -> None:
    for name in regions.__all__:
        assert getattr(regions, name) is not None
        exec(f"from regions import {name}", {})  # the import statement itself works
    submodules = {p.stem for p in (ROOT / "regions").iterdir() if p.suffix == ".py" or p.is_dir()}
    public = {
        n
        for n in vars(regions)
        if not n.startswith("_") and n not in submodules and n != "annotations"
    }
    assert public == set(regions.__all__)


def test_public_errors_belong_to_the_error_tree() -> None:
    from residency.errors import ConfigError, OperationError, RegionkitError

    for name in ("RegionUnavailable", "ResidencyViolation", "StaleWrite", "ClockDriftError"):
        cls = getattr(regions, name)
        assert issubclass(cls, OperationError) and issubclass(cls, RegionkitError)
    assert not issubclass(regions.RegionUnavailable, ConfigError)


HEAVY = frozenset({"aws_cdk", "moto", "constructs", "cdk_nag", "jsii"})


def _modules_loaded_by(statement: str, heavy: frozenset[str] = HEAVY) -> list[str]:
    """The ``heavy`` top-level packages a fresh interpreter has loaded after ``statement``."""
    code = "\n".join(
        [
            "import json, sys",
            statement,
            f"heavy = set({sorted(heavy)!r})",
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)))",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import regions",
        "from regions import RegionRouter",
        "import regions.local",
        "import residency.policy, residency.guard",
        "import cli",
    ],
)
def test_importing_does_not_pull_in_aws_cdk_or_moto(statement: str) -> None:
    assert _modules_loaded_by(statement) == []


@pytest.mark.parametrize("statement", ["import regions", "import regions.detector_lambda"])
def test_the_router_and_the_detector_do_not_load_cryptography(statement: str) -> None:
    # Only signing, query cursors and key derivation need it, each imported where used:
    # the detector's Lambda package would otherwise carry 15 MB it never runs.
    assert _modules_loaded_by(statement, frozenset({"cryptography", "_cffi_backend"})) == []


# --- the import graph -------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. "regions.router"
    path: str
    line: int
    target: str  # dotted name imported, e.g. "residency.audit.checks"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> Iterator[Path]:
    for package in ("residency", "regions", "infra"):
        base = ROOT / package
        if base.is_dir():
            yield from sorted(base.rglob("*.py"))
    yield from _cli_sources()


def _cli_sources() -> list[Path]:
    """The command line: ``cli.py`` and its private package ``_cli``."""
    return [ROOT / "cli.py", *sorted((ROOT / "_cli").glob("*.py"))]


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments: an ``import_module(NAME)`` imports them."""
    out: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def _imported_name(arg: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    return None


def _imports(path: Path) -> Iterator[Import]:
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = _string_constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, str(path), node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve it against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield Import(module, str(path), node.lineno, target)
            for alias in node.names:  # "from regions import local" imports regions.local
                yield Import(module, str(path), node.lineno, f"{target}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("import_module", "find_spec")  # importlib's, by name
            and node.args
            and (name := _imported_name(node.args[0], constants)) is not None
        ):
            yield Import(module, str(path), node.lineno, name)


GRAPH = [imp for path in _sources() for imp in _imports(path)]


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(
    importers: tuple[str, ...], forbidden: tuple[str, ...], *, unless: tuple[str, ...] = ()
) -> list[str]:
    return [
        f"{imp.path}:{imp.line}: {imp.importer} imports {imp.target}"
        for imp in GRAPH
        if _under(imp.importer, *importers)
        and not _under(imp.importer, *unless)
        and _under(imp.target, *forbidden)
    ]


def test_the_graph_was_read() -> None:
    importers = {imp.importer for imp in GRAPH}
    assert {"cli", "regions.router", "residency.guard", "regions.local.sim"} <= importers
    assert any(imp.target == "regions.local.replication" for imp in GRAPH)  # lazy ones too


def test_residency_imports_nothing_from_regions_infra_or_cli() -> None:
    """No exemption: the audit (in residency/) reads the conflict log and takes its clients
    through the base layer's own records and protocols; the built-in merge functions live
    in residency.merges (regions.merges re-exports them under the name policies use)."""
    assert _violations(("residency",), ("regions", "infra", "cli", "_cli")) == []


def _module_graph() -> dict[str, set[str]]:
    modules = {_module_name(p) for p in _sources()}

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in GRAPH:
        target = resolve(imp.target)
        # a submodule "imports" its own package's __init__ implicitly: not an edge
        if target and target != imp.importer and not imp.importer.startswith(target + "."):
            graph[imp.importer].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_there_is_no_import_cycle() -> None:
    """TYPE_CHECKING and lazy imports count: a cycle hidden in them is still a cycle."""
    assert _cycles(_module_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The audit's terminal renderer builds rich renderables (it returns text, never prints);
# moving it beside the CLI is open work of the house issue.
RICH_RENDERERS = ("residency.audit.render.terminal",)


def test_nothing_outside_the_cli_prints_or_imports_rich() -> None:
    offenders = [
        f"{imp.path}:{imp.line}: imports {imp.target}"
        for imp in GRAPH
        if not _under(imp.importer, "cli", "_cli")
        and imp.importer not in RICH_RENDERERS
        and _under(imp.target, "rich", "typer")
    ]
    for path in _sources():
        if path in _cli_sources():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [
            f"{path}:{node.lineno}: print()"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        ]
    assert offenders == []


def test_regions_never_imports_cli_infra_the_audit_or_the_cdk() -> None:
    """``regions.demo`` is the one exception for the audit: it is the demo's orchestration
    (cluster, traffic, drills, then the audit), above every layer, returning a summary
    the CLI renders; nothing in regions imports it."""
    forbidden = ("cli", "_cli", "infra", "aws_cdk", "constructs", "cdk_nag")
    assert _violations(("regions",), forbidden) == []
    assert _violations(("regions",), ("residency.audit",), unless=("regions.demo",)) == []
    assert _violations(("regions", "residency"), ("regions.demo",)) == []


def test_only_the_local_cluster_imports_moto() -> None:
    assert (
        _violations(
            ("residency", "regions", "infra", "cli", "_cli"), ("moto",), unless=("regions.local",)
        )
        == []
    )


def test_only_infra_imports_the_cdk() -> None:
    cdk = ("aws_cdk", "constructs", "cdk_nag")
    assert _violations(("residency", "regions", "cli", "_cli"), cdk) == []


def test_the_audit_imports_nothing_from_cli_or_infra() -> None:
    assert _violations(("residency.audit",), ("cli", "_cli", "infra")) == []


def test_no_module_imports_cli() -> None:
    assert _violations(("residency", "regions", "infra"), ("cli", "_cli")) == []
    assert [i for i in GRAPH if i.importer == "cli" and _under(i.target, "cli")] == []
    assert [i for i in GRAPH if _under(i.importer, "_cli") and _under(i.target, "cli")] == []


# --- the router in rooms ----------------------------------------------------------------

ROOM_MAX_LINES = 400


def test_the_router_and_its_rooms_are_each_at_most_400_lines() -> None:
    """RegionRouter is a facade over rooms (routing, transport, the versioned protocol,
    users, moves, erasure ...): every module it reaches inside regions/ stays a module a
    reviewer can read whole. Transitive, so a room that grows cannot hide in a helper."""
    graph = _module_graph()
    rooms, todo = set(), ["regions.router"]
    while todo:
        module = todo.pop()
        if module in rooms or not _under(module, "regions") or module == "regions":
            continue
        rooms.add(module)
        todo += graph[module]
    assert {"regions.router", "regions.writes", "regions.moves", "regions.erasure"} <= rooms
    sizes = {}
    for module in rooms:
        path = ROOT / (module.replace(".", "/") + ".py")
        sizes[module] = len(path.read_text(encoding="utf-8").splitlines())
    assert {m: n for m, n in sizes.items() if n > ROOM_MAX_LINES} == {}


# --- the command line only parses arguments and renders ----------------------------------
#
# The sub-apps live in the private package _cli beside cli.py (see cli's docstring): one
# module per sub-app, a screenful a reviewer can read. The work is the library's.

CLI_MAX_LINES = 1000
CLI_MAX_FUNCTION_LINES = 60


def _python_files_outside_the_cli() -> Iterator[Path]:
    """Every module that ships or is run, apart from the CLI (tests may test _cli)."""
    for package in ("residency", "regions", "infra", "examples", "benchmarks", "policies"):
        base = ROOT / package
        if base.is_dir():
            yield from sorted(base.rglob("*.py"))


def test_nothing_but_the_cli_imports_cli_or_its_private_package() -> None:
    offenders = []
    for path in _python_files_outside_the_cli():
        offenders += [
            f"{imp.path}:{imp.line}: imports {imp.target}"
            for imp in _imports(path)
            if _under(imp.target, "cli", "_cli")
        ]
    assert offenders == []
    # and _cli is imported by cli.py and by its own modules only
    importers = {i.importer for i in GRAPH if _under(i.target, "_cli")}
    assert importers and all(_under(m, "cli", "_cli") for m in importers), importers


def test_cli_py_is_at_most_1000_lines() -> None:
    lines = len((ROOT / "cli.py").read_text(encoding="utf-8").splitlines())
    assert lines <= CLI_MAX_LINES, f"cli.py has {lines} lines: move a sub-app into _cli/"


def _long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.name}:{node.lineno}: {node.name} is {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_cli_function_is_over_60_lines() -> None:
    """Signatures count: long option lists go into ``Annotated`` aliases at module level."""
    assert len(_cli_sources()) > 2  # cli.py and the sub-app modules were found
    assert [f for p in _cli_sources() for f in _long_functions(p, CLI_MAX_FUNCTION_LINES)] == []


def _private(dotted: str) -> bool:
    """Whether a dotted name has a private part (``_x``; dunders like ``__about__`` are not)."""
    return any(p.startswith("_") and not p.endswith("__") for p in dotted.split("."))


def _private_library_imports(path: Path) -> list[str]:
    library = ("residency", "regions", "infra")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if not _under(node.module, *library):
                continue
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [f"{path.name}:{node.lineno}: {n}" for n in names if _private(n)]
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno}: {a.name}"
                for a in node.names
                if _under(a.name, *library) and _private(a.name)
            ]
    return found


def test_the_cli_imports_no_private_name_from_the_library() -> None:
    assert [f for p in _cli_sources() for f in _private_library_imports(p)] == []


def test_the_cli_checkers_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from regions.router import _helper\n"
        "from residency.__about__ import __version__\n"
        "import regions.local._server_main\n"
        "def f():\n" + "    x = 1\n" * 60,
        encoding="utf-8",
    )
    assert _private_library_imports(bad) == [
        "bad.py:1: regions.router._helper",
        "bad.py:3: regions.local._server_main",
    ]
    assert _long_functions(bad, 60) == ["bad.py:4: f is 61 lines"]
    assert _long_functions(bad, 61) == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The rules above would fail on a bad import (the checker is not vacuous)."""
    bad = ROOT / "regions" / "__init__.py"
    imports = list(_imports(bad))
    assert any(i.target == "regions.router" for i in imports)
    fake = Import("regions.router", "regions/router.py", 1, "aws_cdk.aws_dynamodb")
    GRAPH.append(fake)
    try:
        assert _violations(("regions",), ("aws_cdk",)) == [
            "regions/router.py:1: regions.router imports aws_cdk.aws_dynamodb"
        ]
    finally:
        GRAPH.remove(fake)
