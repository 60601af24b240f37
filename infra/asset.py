"""Stage the conflict detector's Lambda code: the ``residency`` and ``regions`` packages.

Pure Python (no ``aws_cdk``). ``Code.from_asset`` on the repository root would
fingerprint every file under it (``.venv`` included) before excluding them, so the
code is staged instead into a directory of its own, named by the hash of its
content: two synths of the same code share one directory, and a synth never sees
a half-written one (it is built aside and renamed into place).

The build directory is **never inside the installed package** (on a wheel install
that would be ``site-packages/.build``): it is ``REGIONKIT_BUILD_DIR`` when set,
else ``.regionkit/build/infra`` under the working directory (where ``cdk`` and
``regionkit infra synth`` run, beside ``cdk.out``).

The staged directory holds the two packages (sources only, no ``__pycache__``),
the policy file as ``policy.yaml``, which the function reads through
``REGIONKIT_POLICY``, and **the third-party packages the handler imports**
(pydantic, structlog, PyYAML ...): the Lambda Python runtime provides only boto3
and its own dependencies. Which packages those are is measured, not listed by
hand: a probe process imports the handler from the staged code, builds the
detector on the policy and runs it on a sample record, then names every module it
loaded from outside the standard library (:func:`handler_dependencies`). Their
distributions are copied from the build environment, file by file as their
``RECORD`` lists them (:func:`copy_distribution`). That is only right when the
build machine is the Lambda's platform: Linux, the same CPU architecture (the
function's ``architecture`` follows it) and the same Python minor version (so does
its ``runtime``); anywhere else staging refuses, naming the fix (synthesize on
Linux, as CI does, or in a Linux container).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from residency.errors import ConfigError

__all__ = [
    "OPTIONAL_IMPORTS",
    "PACKAGES",
    "POLICY_FILE",
    "REPO_ROOT",
    "RUNTIME_PROVIDED",
    "default_build_dir",
    "distribution_files",
    "handler_dependencies",
    "lambda_platform",
    "stage_detector_code",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("residency", "regions")
POLICY_FILE = "policy.yaml"
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}

RUNTIME_PROVIDED = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}
)
"""Distributions the Lambda Python runtime already holds (boto3 and what it needs)."""

OPTIONAL_IMPORTS = frozenset({"rich", "pygments", "markdown-it-py", "mdurl", "attrs", "certifi"})
"""Imported when present, never needed by the function: structlog pretty-prints
tracebacks with rich (and rich uses attrs) when they are installed, but the function
logs JSON; botocore prefers certifi's CA bundle and falls back to its own. The
clean-environment test runs the staged function without them."""

# Run in a fresh interpreter with only the staged code on its path (plus the build
# environment's site-packages): what it imports beyond the standard library is what
# the function needs.
_PROBE = """
import json, os, sys
startup = set(sys.modules)
import regions.detector_lambda as fn
detector = fn.build_detector()
table = sorted(detector._by_table)[0] if getattr(detector, "_by_table", None) else "t"
arn = "arn:aws:dynamodb:us-east-1:000000000000:table/%s/stream/x" % table
record = {"eventName": "MODIFY", "eventSourceARN": arn, "awsRegion": "us-east-1",
          "dynamodb": {"Keys": {"pk": {"S": "probe"}}, "NewImage": {"pk": {"S": "probe"}}}}
fn.handler({"Records": [record]}, detector=detector)
stdlib = set(sys.stdlib_module_names)
names = sorted({m.split(".")[0] for m, mod in list(sys.modules.items())
                if m not in startup and getattr(mod, "__file__", None)
                and m.split(".")[0] not in stdlib})
print(json.dumps(names))
"""


def lambda_platform() -> tuple[str, str]:
    """``(runtime, architecture)`` of the build machine, as Lambda names them
    (``python3.11``, ``x86_64``/``arm64``); refuses a machine Lambda cannot match."""
    machine = platform.machine().lower()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine
    )
    if not sys.platform.startswith("linux") or arch is None:
        raise ConfigError(
            message=f"the conflict detector's Lambda bundles compiled packages (pydantic-core) "
            f"from the build environment, which is {sys.platform}/{machine}; Lambda runs "
            "Linux on x86_64 or arm64 (fix: synthesize on Linux, as CI does, or in a "
            "Linux container)"
        )
    return f"python{sys.version_info.major}.{sys.version_info.minor}", arch


def handler_dependencies(code_dir: Path) -> list[str]:
    """The distributions (by name, sorted) the handler in ``code_dir`` imports, beyond
    the standard library, regionkit's own packages and :data:`RUNTIME_PROVIDED`."""
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REGIONKIT_", "AWS_", "BOTOCORE_"))
        },
        "PYTHONPATH": str(code_dir),
        "REGIONKIT_MODE": "aws",
        "REGIONKIT_POLICY": str(code_dir / POLICY_FILE),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "probe",
        "AWS_SECRET_ACCESS_KEY": "probe",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: never a real call
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-P", "-c", _PROBE],
        env=env,
        cwd=code_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(
            message="could not find the conflict detector's dependencies: its probe failed "
            f"with {done.stderr.strip().splitlines()[-1:] or done.returncode}"
        )
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    owners = metadata.packages_distributions()
    names: set[str] = set()
    for module in modules:
        if module in PACKAGES:
            continue
        for dist in owners.get(module, ()):
            names.add(dist)
    skip = {_normal(n) for n in RUNTIME_PROVIDED | OPTIONAL_IMPORTS}
    return sorted(n for n in names if _normal(n) not in skip)


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def distribution_files(name: str) -> list[tuple[str, Path]]:
    """The files of an installed distribution (code and ``.dist-info``, no bytecode,
    nothing installed outside site-packages), as ``(path in site-packages, source)``."""
    dist = metadata.distribution(name)
    out: list[tuple[str, Path]] = []
    for f in dist.files or ():
        if f.as_posix().startswith("..") or "__pycache__" in f.parts or f.suffix in _SKIP_SUFFIXES:
            continue
        src = Path(str(dist.locate_file(f)))
        if src.is_file():
            out.append((f.as_posix(), src))
    return out


def _environment_key() -> bytes:
    """What the bundled dependencies depend on: the interpreter and installed versions.

    The versions are read from the names of the ``.dist-info``/``.egg-info``
    directories on ``sys.path`` (``name-version.dist-info``), which change whenever
    an install or upgrade does. Parsing every distribution's ``METADATA`` instead
    cost half a second of each synth, on every synth.
    """
    dists: list[str] = []
    for entry in dict.fromkeys(sys.path):
        try:
            with os.scandir(entry or ".") as it:
                dists.extend(d.name for d in it if d.name.endswith((".dist-info", ".egg-info")))
        except OSError:  # a zip on the path, or a missing directory
            continue
    return json.dumps([sys.version, platform.machine(), sorted(dists)]).encode()


def default_build_dir() -> Path:
    """Where staged code goes: ``REGIONKIT_BUILD_DIR``, else ``./.regionkit/build/infra``."""
    env = os.environ.get("REGIONKIT_BUILD_DIR", "").strip()
    return Path(env) if env else Path.cwd() / ".regionkit" / "build" / "infra"


def _files(root: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for package in PACKAGES:
        base = root / package
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.suffix in _SKIP_SUFFIXES or name.startswith("."):
                    continue
                out.append((path.relative_to(root).as_posix(), path))
    return out


def _prune(build_dir: Path, *, older_than_s: float = 3600.0) -> None:
    """Remove staged code unused for an hour (earlier versions; no synth still reads it)."""
    cutoff = time.time() - older_than_s
    for old in build_dir.glob("detector-*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue


def stage_detector_code(
    policy_path: Path,
    *,
    root: Path = REPO_ROOT,
    build_dir: Path | None = None,
    bundle: bool = True,
) -> Path:
    """Stage the detector's code, the policy and (``bundle``) the dependencies it imports
    into a content-addressed directory; returns it."""
    files = [*_files(root), (POLICY_FILE, policy_path)]
    digest = hashlib.sha256(_environment_key() if bundle else b"")
    contents: list[tuple[str, bytes]] = []
    for rel, path in files:
        data = path.read_bytes()
        contents.append((rel, data))
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    build_dir = (build_dir or default_build_dir()).resolve()
    target = build_dir / f"detector-{digest.hexdigest()[:16]}"
    if target.is_dir():
        os.utime(target)  # in use: keep it out of the next prune
        return target
    if bundle:
        lambda_platform()  # refuse a build machine whose packages Lambda cannot load
    build_dir.mkdir(parents=True, exist_ok=True)
    _prune(build_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".detector-", dir=build_dir))
    try:
        for rel, data in contents:
            dest = scratch / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        if bundle:
            for name in handler_dependencies(scratch):
                for rel, src in distribution_files(name):
                    dest = scratch / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent synth that won the race
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
