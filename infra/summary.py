"""Summaries of synthesized stacks, read from the CloudFormation templates.

Pure Python (no ``aws_cdk``): it reads what the synth wrote, so the summary
describes the templates as they will deploy, not the intentions of the code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from residency.names import TAG_JURISDICTION

__all__ = ["StackSummary", "summarize_assembly", "summarize_template"]


@dataclass(frozen=True)
class StackSummary:
    stack: str
    region: str
    tables: list[str] = field(default_factory=list)
    replicas: dict[str, list[str]] = field(default_factory=dict)
    """Table label → every replica region (the stack's own region first)."""
    keys: int = 0
    alarms: int = 0
    lambdas: int = 0
    fis_templates: int = 0
    managed_policies: int = 0
    resources: int = 0
    template_file: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _table_label(props: dict[str, Any]) -> str:
    """``name`` for a global table, ``name [EU]`` for one jurisdiction's pinned table."""
    name = props.get("TableName")
    label = name if isinstance(name, str) else json.dumps(name)
    for replica in props.get("Replicas", []):
        for tag in replica.get("Tags", []):
            if tag.get("Key") == TAG_JURISDICTION and tag.get("Value") != "global":
                return f"{label} [{tag.get('Value')}]"
    return label


def summarize_template(
    stack: str, region: str, template: dict[str, Any], *, template_file: str = ""
) -> StackSummary:
    resources: dict[str, Any] = template.get("Resources", {})
    tables: list[str] = []
    replicas: dict[str, list[str]] = {}
    counts = {"keys": 0, "alarms": 0, "lambdas": 0, "fis": 0, "managed": 0}
    for res in resources.values():
        kind = res.get("Type")
        props = res.get("Properties", {})
        if kind == "AWS::DynamoDB::GlobalTable":
            name = _table_label(props)
            tables.append(name)
            regions = [r.get("Region") for r in props.get("Replicas", [])]
            replicas[name] = sorted(regions, key=lambda r: (r != region, r))
        elif kind == "AWS::KMS::Key":
            counts["keys"] += 1
        elif kind in {"AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"}:
            counts["alarms"] += 1
        elif kind == "AWS::Lambda::Function":
            counts["lambdas"] += 1
        elif kind == "AWS::FIS::ExperimentTemplate":
            counts["fis"] += 1
        elif kind == "AWS::IAM::ManagedPolicy":
            counts["managed"] += 1
    return StackSummary(
        stack=stack,
        region=region,
        tables=tables,
        replicas=replicas,
        keys=counts["keys"],
        alarms=counts["alarms"],
        lambdas=counts["lambdas"],
        fis_templates=counts["fis"],
        managed_policies=counts["managed"],
        resources=len(resources),
        template_file=template_file,
    )


def summarize_assembly(out_dir: Path) -> list[StackSummary]:
    """Every stack of the cloud assembly in ``out_dir``, in the manifest's order."""
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    out: list[StackSummary] = []
    for name, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        env = artifact.get("environment", "")  # aws://<account>/<region>
        region = env.rsplit("/", 1)[-1]
        file = artifact.get("properties", {}).get("templateFile", f"{name}.template.json")
        template = json.loads((out_dir / file).read_text(encoding="utf-8"))
        stack_name = artifact.get("properties", {}).get("stackName", name)
        out.append(
            summarize_template(stack_name, region, template, template_file=str(out_dir / file))
        )
    return out
