"""The JSON schema of policy files, generated from the pydantic model."""

from __future__ import annotations

import json

from residency.policy import Policy

__all__ = ["policy_json_schema"]


def policy_json_schema() -> str:
    """The schema as stable, pretty JSON text (what policies/schema.json holds)."""
    schema = Policy.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://regionkit.dev/schemas/policy-v1.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
