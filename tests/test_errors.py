"""The error tree: exported, two branches, facts as attributes, templated messages."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from residency import errors
from residency.errors import (
    ConfigError,
    OperationError,
    PolicyError,
    PolicyProblem,
    RegionkitError,
    ResidencyViolation,
    StaleWrite,
    UnknownRegion,
)

CONFIG = {
    "PolicyError",
    "SettingsError",
    "UnknownRegion",
    "UnknownDataClass",
    "UnknownCountry",
    "MalformedId",
    "UnassignedUser",
    "UnknownSubject",
    "UnknownName",
}
OPERATION = {
    "ClockDriftError",
    "ExportFailed",
    "ResidencyViolation",
    "RegionUnavailable",
    "StaleWrite",
    "CorruptRecord",
    "BackendError",
    "RegionTimeout",
    "RegionUnreachable",
    "Throttled",
    "ClusterError",
}
EXCEPTIONS = sorted(n for n in errors.__all__ if n != "PolicyProblem")


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(errors.__all__)) == len(errors.__all__)
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        assert hasattr(errors, name), name


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_every_exported_exception_is_a_regionkit_error(name: str) -> None:
    cls = getattr(errors, name)
    assert inspect.isclass(cls)
    assert issubclass(cls, RegionkitError)
    assert cls.__module__ == "residency.errors"


def test_every_error_class_is_exported() -> None:
    defined = {
        n
        for n, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert defined == set(EXCEPTIONS)


def test_policy_problem_is_a_value_not_an_error() -> None:
    problem = PolicyProblem("p.yaml", 3, "name", "bad name", "fix it")
    assert not isinstance(problem, Exception)
    with pytest.raises(AttributeError):
        problem.line = 4  # type: ignore[misc]
    assert str(problem) == "p.yaml:3: name: bad name (fix: fix it)"
    assert str(PolicyProblem("p.yaml", None, "(file)", "missing")) == "p.yaml: (file): missing"


@pytest.mark.parametrize("name", sorted(CONFIG))
def test_config_branch(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, ConfigError) and not issubclass(cls, OperationError)


@pytest.mark.parametrize("name", sorted(OPERATION))
def test_operation_branch(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, OperationError) and not issubclass(cls, ConfigError)


def test_the_two_branches_cover_everything() -> None:
    assert {"RegionkitError", "ConfigError", "OperationError"} | CONFIG | OPERATION == set(
        EXCEPTIONS
    )


def test_the_documented_tree_matches_the_classes() -> None:
    """The tree drawn in the module docstring is the real hierarchy."""
    lines = (errors.__doc__ or "").splitlines()
    root = next(i for i, line in enumerate(lines) if line.strip() == "RegionkitError")
    margin = len(lines[root]) - len(lines[root].lstrip())
    parents = {0: "RegionkitError"}
    seen = set()
    for line in lines[root + 1 :]:
        node = re.match(r"^(?P<prefix>[ │]*)(?:├── |└── )(?P<name>\w+)", line[margin:])
        if not line.strip():
            break  # the tree ends at the first blank line
        if not node:
            continue  # a description continued on the next line
        depth = len(node["prefix"]) // 4 + 1
        name = node["name"]
        assert getattr(errors, name).__bases__ == (getattr(errors, parents[depth - 1]),), name
        parents[depth] = name
        seen.add(name)
    assert seen == set(EXCEPTIONS) - {"RegionkitError"}


def test_facts_are_attributes_and_fill_the_template() -> None:
    err = ResidencyViolation(
        op="put",
        data_class="profile",
        jurisdiction="EU",
        region="us-east-1",
        allowed="eu-central-1, eu-west-1",
        reason="pinned data stays in its jurisdiction",
    )
    assert (err.op, err.data_class, err.jurisdiction, err.region) == (  # type: ignore[attr-defined]
        "put",
        "profile",
        "EU",
        "us-east-1",
    )
    assert err.facts["allowed"] == "eu-central-1, eu-west-1"
    assert str(err) == (
        "residency violation: put of data class 'profile' for a subject of jurisdiction EU "
        "may not go to region us-east-1 (allowed: eu-central-1, eu-west-1); "
        "pinned data stays in its jurisdiction"
    )


def test_template_examples() -> None:
    assert str(UnknownRegion(region="xx-1", reason="not declared", known="a, b")) == (
        "unknown region 'xx-1': not declared (known: a, b)"
    )
    stale = StaleWrite(
        data_class="content", key="post#1", region="eu-west-1", based_on="v1", current="v2"
    )
    assert "re-read and retry" in str(stale) and stale.current == "v2"  # type: ignore[attr-defined]
    assert str(ConfigError(message="plain")) == "plain"
    assert str(errors.ClusterError(message="port 5001 busy")) == "local cluster: port 5001 busy"


def test_a_missing_fact_still_gives_a_message() -> None:
    err = UnknownRegion(region="xx-1")  # the raiser forgot reason and known: a bug, not a crash
    assert "xx-1" in str(err) and "unknown region" in str(err)


def test_policy_error_carries_every_problem() -> None:
    problems = [
        PolicyProblem("a.yaml", 2, "name", "bad", "fix"),
        PolicyProblem("a.yaml", 9, "regions.0", "unknown", ""),
    ]
    err = PolicyError(problems)
    assert isinstance(err, ConfigError)
    assert err.problems == problems
    assert str(err).splitlines() == [
        "a.yaml:2: name: bad (fix: fix)",
        "a.yaml:9: regions.0: unknown",
    ]


def test_errors_can_be_raised_and_caught_by_branch() -> None:
    with pytest.raises(ConfigError):
        raise errors.UnknownCountry(country="ZZ")
    with pytest.raises(OperationError):
        raise errors.BackendError(
            operation="PutItem", region="eu-west-1", code="Throttling", reason="rate exceeded"
        )
    with pytest.raises(RegionkitError, match="choose one of: outage, partition"):
        raise errors.UnknownName(kind="scenario", name="flood", known="outage, partition")


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_every_error_pickles_and_copies_with_its_facts(name: str) -> None:
    import copy
    import inspect
    import pickle

    cls = getattr(errors, name)
    if name == "PolicyError":
        err = cls([errors.PolicyProblem("p.yaml", 3, "regions", "bad", "fix it")])
    else:
        fields = set(__import__("re").findall(r"{(\w+)", cls.fmt)) or {"message"}
        err = cls(**{f: f"<{f}>" for f in fields})
    for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(clone) is cls and str(clone) == str(err)
        assert getattr(clone, "facts", None) == getattr(err, "facts", None)
    assert inspect.isclass(cls)


def test_malformed_ids_describe_the_value_never_echo_it() -> None:
    from regions.ids import parse_user_id

    with pytest.raises(errors.MalformedId) as err:
        parse_user_id("alice@example.com")
    assert "alice" not in str(err.value) and "17 characters" in str(err.value)


def test_transport_failures_are_typed_with_the_original_as_cause(example_policy_path: Any) -> None:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    from regions.router import RegionRouter
    from residency.policy import load_policy
    from residency.settings import RouterConfig

    class Failing:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def client(self, service: str, region: str) -> Any:
            exc = self.exc

            class C:
                def __getattr__(self, name: str) -> Any:
                    def fail(**kw: Any) -> Any:
                        raise exc

                    return fail

            return C()

    policy = load_policy(example_policy_path)
    settings = RouterConfig(mode="aws", region="eu-west-1", endpoints={}, failover_attempts=2)
    cases = [
        (ReadTimeoutError(endpoint_url="https://x"), errors.RegionTimeout),
        (EndpointConnectionError(endpoint_url="https://x"), errors.RegionUnreachable),
    ]
    for cause, cls in cases:
        router = RegionRouter(policy, clients=Failing(cause), config=settings)
        with pytest.raises(cls) as err:
            router.put("content", {"pk": "p", "body": "x"})
        assert err.value.__cause__ is cause and isinstance(err.value, errors.BackendError)


def test_the_private_exceptions_pickle_too() -> None:
    # Raised inside the policy loader and the strict validator, both of which can run in
    # a worker process: they cross process boundaries like the public ones.
    import copy
    import pickle

    from regions.local.strict import _Invalid
    from residency.policy import _Refused

    for err in (_Refused("module x is not allowed", "list it"), _Invalid("rule", "detail")):
        for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
            assert type(clone) is type(err) and vars(clone) == vars(err)
            assert str(clone) == str(err)
