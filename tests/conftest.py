"""Shared test set-up: fake AWS credentials, never a real endpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["cluster_fixtures"]  # the local-cluster fixtures (tests/cluster_fixtures.py)

# Tests talk only to 127.0.0.1. Fake credentials make any accidental real call fail fast.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}.items():
    os.environ[_k] = _v
# Settings come from the tests, never from the developer's shell; REGIONKIT_TEST_* are knobs.
for _k in [
    k for k in os.environ if k.startswith("REGIONKIT_") and not k.startswith("REGIONKIT_TEST_")
]:
    del os.environ[_k]

ROOT = Path(__file__).resolve().parent.parent

# Real DynamoDB's request validation, stricter than moto's, on for every test: botocore
# loads regions.local.strict into every client any session creates, in this process and
# in every process a test starts (they inherit the environment). See that module.
from regions.local import strict as _strict  # noqa: E402

os.environ[_strict.ENV_VAR] = _strict.ENV_VALUE

# In-process moto (the simulation, mock_aws tests) with the local servers' two speed-ups:
# item results written as JSON directly (tests/test_fastjson.py checks they are moto's
# documents) and moto's per-request method listing memoised.
from regions.local import fastjson as _fastjson  # noqa: E402

_fastjson.install()
# ... and its DynamoDB writes atomic, as the local servers run them (threaded tests).
from regions.local import atomic as _atomic  # noqa: E402

_atomic.install()
# ... and its values cast and tables sorted as the servers do (tests/test_fastvalues.py).
from regions.local import fastvalues as _fastvalues  # noqa: E402

_fastvalues.install()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Requests the strict validator refused in this process (rule and operation only)."""
    rejected = list(_strict.stats.rejected)
    if rejected:
        terminalreporter.write_line(
            f"strict DynamoDB validator: {_strict.stats.checked} requests checked, "
            f"{len(rejected)} refused: {sorted(set(rejected))}"
        )


# CI explores the same examples every run (a red build is then reproducible); locally
# hypothesis explores new ones. REGIONKIT_TEST_HYPOTHESIS=ci|dev picks one explicitly.
# Neither profile judges by the wall clock: no per-example deadline and no "input
# generation is slow" health check, which a loaded machine (load 20) trips on any test.
from hypothesis import HealthCheck as _HealthCheck  # noqa: E402
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile(
    "dev", deadline=None, suppress_health_check=[_HealthCheck.too_slow]
)
_hypothesis_settings.register_profile(
    "ci", parent=_hypothesis_settings.get_profile("dev"), derandomize=True, print_blob=True
)
_hypothesis_settings.load_profile(
    os.environ.get("REGIONKIT_TEST_HYPOTHESIS", "ci" if os.environ.get("CI") else "dev")
)
os.environ.setdefault("JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(ROOT / ".build" / "jsii-cache"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def example_policy_path() -> Path:
    return ROOT / "policies" / "social-network.yaml"


@pytest.fixture(scope="session")
def minimal_policy_path() -> Path:
    return ROOT / "policies" / "minimal.yaml"


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Any:
    """Whatever a test does to the root logger (basicConfig, the CLI's configure_logging)
    is undone after it: a root left at DEBUG with a handler on a test's captured stream
    made every later test format botocore's debug lines into a closed file."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    if root.level != level or root.handlers != handlers:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
