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

The staged directory holds the two packages (sources only, no ``__pycache__``)
and the policy file as ``policy.yaml``, which the function reads through
``REGIONKIT_POLICY``. Third-party dependencies (pydantic, structlog ...) are not
bundled here: that needs a build for the Lambda platform (a layer or a container
image), outside what a synth should do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["PACKAGES", "POLICY_FILE", "REPO_ROOT", "default_build_dir", "stage_detector_code"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("residency", "regions")
POLICY_FILE = "policy.yaml"
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


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
    policy_path: Path, *, root: Path = REPO_ROOT, build_dir: Path | None = None
) -> Path:
    """Copy the detector's code and the policy into a content-addressed directory."""
    files = [*_files(root), (POLICY_FILE, policy_path)]
    digest = hashlib.sha256()
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
    build_dir.mkdir(parents=True, exist_ok=True)
    _prune(build_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".detector-", dir=build_dir))
    try:
        for rel, data in contents:
            dest = scratch / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent synth that won the race
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
