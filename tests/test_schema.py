"""policies/schema.json is generated from the model and must stay in sync with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from residency.schema import policy_json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "policies" / "schema.json"
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))
BAD = ROOT / "tests" / "fixtures" / "policies" / "bad"


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def test_committed_schema_matches_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == policy_json_schema(), (
        "policies/schema.json is out of date with residency/policy.py; "
        "run `regionkit policy schema -o policies/schema.json` and commit it"
    )


def test_schema_is_stable_and_identified() -> None:
    assert policy_json_schema() == policy_json_schema()
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {
        "name",
        "regions",
        "jurisdictions",
        "data_classes",
        "targets",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_json_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(_schema())
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]
    assert errors == []


@pytest.mark.parametrize(
    "name",
    [
        "unknown-key-top-level",
        "kind-unknown",
        "country-lowercase",
        "missing-targets",
        "wrong-type-string-for-list",
        "drill-target-negative",
    ],
)
def test_json_schema_rejects_structural_mistakes(name: str) -> None:
    """Editors using the schema flag the same structural mistakes the loader does."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(_schema())
    data = yaml.safe_load((BAD / f"{name}.yaml").read_text(encoding="utf-8"))
    assert not validator.is_valid(data)
