"""Issue 15 item 7: the deployment and the audit agree, by construction and by test.

The example policy is synthesized; from exactly those templates this module builds
the answers AWS would give for the deployed resources (``ListTables``,
``DescribeTable`` with its ``Replicas``, ``DescribeContinuousBackups``,
``ListTagsOfResource``, ``kms:DescribeKey`` / ``ListAliases`` for the keys the
keys stacks create), and runs the audit's infra checks on them: a clean
deployment has 0 FAIL and 0 ERROR. Then one property of one template is changed,
and exactly one finding must appear.

``DescribeTable`` of a version 2019.11.21 replica lists the *other* replicas in
``Replicas`` (moto lists none, which is why the old disagreement, a replicated
conflict log against an audit expecting one table per region, never showed
locally). The check unions the described set with the table's own region, so
the contract holds either way.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from residency.audit import run_audit
from residency.policy import Policy, load_policy

pytestmark = pytest.mark.cdk

ACCOUNT = "123456789012"


def _render(value: Any, region: str) -> Any:
    """CloudFormation intrinsics CDK emits for ARNs, resolved for one region."""
    if isinstance(value, list):
        return [_render(v, region) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(str(_render(p, region)) for p in parts)
    if "Ref" in value:
        return {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::Region": region}.get(
            value["Ref"], f"<Ref:{value['Ref']}>"
        )
    return {k: _render(v, region) for k, v in value.items()}


@dataclass
class Deployed:
    """What AWS holds after deploying the templates: tables per region, keys per region."""

    tables: dict[str, dict[str, dict[str, Any]]]  # region -> table -> {describe, pitr, tags}
    aliases: dict[str, dict[str, str]]  # region -> alias name -> key ARN


def _key_arn(region: str, alias: str) -> str:
    kid = hashlib.sha256(f"{region}{alias}".encode()).hexdigest()[:32]
    uuid = f"{kid[:8]}-{kid[8:12]}-{kid[12:16]}-{kid[16:20]}-{kid[20:]}"
    return f"arn:aws:kms:{region}:{ACCOUNT}:key/{uuid}"


def deploy(templates: dict[str, tuple[str, dict[str, Any]]]) -> Deployed:
    """Apply ``templates`` (stack -> (region, template)) the way CloudFormation would."""
    aliases: dict[str, dict[str, str]] = {}
    for region, template in templates.values():
        for res in template.get("Resources", {}).values():
            if res["Type"] == "AWS::KMS::Alias":
                name = res["Properties"]["AliasName"]
                aliases.setdefault(region, {})[name] = _key_arn(region, name)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for stack_region, template in templates.values():
        for res in template.get("Resources", {}).values():
            if res["Type"] != "AWS::DynamoDB::GlobalTable":
                continue
            props = res["Properties"]
            name = props["TableName"]
            replicas = [r["Region"] for r in props["Replicas"]]
            assert stack_region in replicas, "a global table is defined in one of its regions"
            sse = props.get("SSESpecification") or {}
            for rep in props["Replicas"]:
                region = rep["Region"]
                key_ref = str(
                    _render((rep.get("SSESpecification") or {}).get("KMSMasterKeyId", ""), region)
                )
                alias = key_ref.rsplit(":", maxsplit=1)[-1]  # an alias ARN, or an alias name
                key_arn = aliases.get(region, {}).get(alias)
                assert key_arn is not None, f"{name} in {region}: no key with alias {alias}"
                stream = props.get("StreamSpecification") or {}
                describe = {
                    "TableName": name,
                    "TableArn": f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}",
                    "TableStatus": "ACTIVE",
                    "KeySchema": props["KeySchema"],
                    "AttributeDefinitions": props["AttributeDefinitions"],
                    "StreamSpecification": {
                        "StreamEnabled": bool(stream),
                        **({"StreamViewType": stream["StreamViewType"]} if stream else {}),
                    },
                    "SSEDescription": {
                        "Status": "ENABLED",
                        "SSEType": sse.get("SSEType", "AES256")
                        if sse.get("SSEEnabled")
                        else "AES256",
                        "KMSMasterKeyArn": key_arn,
                    },
                    "DeletionProtectionEnabled": bool(rep.get("DeletionProtectionEnabled")),
                }
                others = [r for r in replicas if r != region]
                if others:  # what real AWS returns, and moto does not
                    describe["Replicas"] = [
                        {"RegionName": r, "ReplicaStatus": "ACTIVE"} for r in others
                    ]
                pitr = (rep.get("PointInTimeRecoverySpecification") or {}).get(
                    "PointInTimeRecoveryEnabled"
                )
                tables.setdefault(region, {})[name] = {
                    "describe": describe,
                    "pitr": "ENABLED" if pitr else "DISABLED",
                    "tags": [
                        {"Key": t["Key"], "Value": str(_render(t["Value"], region))}
                        for t in rep.get("Tags", [])
                    ],
                }
    return Deployed(tables, aliases)


def _missing(op: str) -> ClientError:
    return ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "x"}}, op)


class FakeDynamoDB:
    def __init__(self, tables: dict[str, dict[str, Any]]) -> None:
        self.tables = tables

    def list_tables(self, **_: Any) -> dict[str, Any]:
        return {"TableNames": sorted(self.tables)}

    def _get(self, name: str, op: str) -> dict[str, Any]:
        if name not in self.tables:
            raise _missing(op)
        return self.tables[name]

    def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": copy.deepcopy(self._get(TableName, "DescribeTable")["describe"])}

    def describe_continuous_backups(self, TableName: str) -> dict[str, Any]:
        status = self._get(TableName, "DescribeContinuousBackups")["pitr"]
        return {
            "ContinuousBackupsDescription": {
                "ContinuousBackupsStatus": "ENABLED",
                "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": status},
            }
        }

    def list_tags_of_resource(self, ResourceArn: str, **_: Any) -> dict[str, Any]:
        name = ResourceArn.rsplit("/", 1)[-1]
        return {"Tags": list(self._get(name, "ListTagsOfResource")["tags"])}

    def scan(self, **_: Any) -> dict[str, Any]:
        return {"Items": []}


class FakeKMS:
    def __init__(self, aliases: dict[str, str]) -> None:
        self.by_key = {arn: alias for alias, arn in aliases.items()}

    def describe_key(self, KeyId: str) -> dict[str, Any]:
        if KeyId not in self.by_key:
            raise _missing("DescribeKey")
        return {"KeyMetadata": {"KeyId": KeyId, "Arn": KeyId, "KeyManager": "CUSTOMER"}}

    def list_aliases(self, KeyId: str) -> dict[str, Any]:
        return {"Aliases": [{"AliasName": self.by_key[KeyId], "TargetKeyId": KeyId}]}


class FakeAWS:
    def __init__(self, deployed: Deployed) -> None:
        self.deployed = deployed

    def client(self, service: str, region: str) -> Any:
        if service == "dynamodb":
            return FakeDynamoDB(self.deployed.tables.get(region, {}))
        if service == "kms":
            return FakeKMS(self.deployed.aliases.get(region, {}))
        raise AssertionError(f"the infra checks should not need {service}")


@pytest.fixture(scope="module")
def synthesized(
    tmp_path_factory: pytest.TempPathFactory, example_policy_path: Path
) -> tuple[Policy, dict[str, tuple[str, dict[str, Any]]]]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import AppOptions, build_app

    policy = load_policy(example_policy_path)
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk-contract")))
    options = AppOptions(policy_path=example_policy_path, nag=False, cfn_validation=False)
    built = build_app(app, policy, options)
    app.synth()
    return policy, {
        s.stack_name: (s.region, Template.from_stack(s).to_json()) for s in built.stacks()
    }


def audit(policy: Policy, path: Path, deployed: Deployed) -> list[Any]:
    report = run_audit(
        policy,
        FakeAWS(deployed),
        policy_path=path,
        checks=["infra"],
        account_id=ACCOUNT,
        drill_history=path.parent / "no-drills",
    )
    return [f for f in report.findings if f.status != "PASS"]


def test_a_clean_deployment_passes_its_own_audit(
    synthesized: tuple[Policy, dict[str, tuple[str, dict[str, Any]]]], example_policy_path: Path
) -> None:
    policy, templates = synthesized
    deployed = deploy(templates)
    assert set(deployed.tables) == set(policy.regions)
    # Real AWS lists replicas: the replicated tables carry them in this inventory.
    assert any("Replicas" in t["describe"] for t in deployed.tables[policy.regions[0]].values())
    bad = audit(policy, example_policy_path, deployed)
    assert [(f.check_id, f.region, f.reason) for f in bad] == []


def _table(templates: dict[str, tuple[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    for _, template in templates.values():
        for res in template.get("Resources", {}).values():
            if res["Type"] == "AWS::DynamoDB::GlobalTable" and res["Properties"]["TableName"] == (
                name
            ):
                return res["Properties"]  # type: ignore[no-any-return]
    raise KeyError(name)


def _pitr_off(props: dict[str, Any]) -> None:
    props["Replicas"][1]["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": False}


def _protection_off(props: dict[str, Any]) -> None:
    props["Replicas"][1]["DeletionProtectionEnabled"] = False


def _wrong_tag(props: dict[str, Any]) -> None:
    tags = props["Replicas"][1]["Tags"]
    for t in tags:
        if t["Key"] == "regionkit:data-class":
            t["Value"] = "reactions"


def _keys_only_stream(props: dict[str, Any]) -> None:
    props["StreamSpecification"] = {"StreamViewType": "KEYS_ONLY"}


@pytest.mark.parametrize(
    ("mutate", "check_id", "fans_out"),
    [
        (_pitr_off, "infra.pitr", False),
        (_protection_off, "infra.deletion_protection", False),
        (_wrong_tag, "infra.tags", False),
        (_keys_only_stream, "infra.streams", True),  # a table-level property: every replica
    ],
    ids=["pitr", "deletion-protection", "tag", "stream-view"],
)
def test_one_changed_property_is_exactly_one_finding(
    synthesized: tuple[Policy, dict[str, tuple[str, dict[str, Any]]]],
    example_policy_path: Path,
    mutate: Any,
    check_id: str,
    fans_out: bool,
) -> None:
    policy, templates = synthesized
    edited = copy.deepcopy(templates)
    props = _table(edited, "content")
    mutate(props)
    bad = audit(policy, example_policy_path, deploy(edited))
    assert {f.check_id for f in bad} == {check_id}
    content_regions = len(props["Replicas"])
    assert len(bad) == (content_regions if fans_out else 1)
    assert all(f.status == "FAIL" and "content" in f.reason for f in bad)


def test_a_replicated_conflict_log_is_one_finding_per_region(
    synthesized: tuple[Policy, dict[str, tuple[str, dict[str, Any]]]], example_policy_path: Path
) -> None:
    """The day-one failure of the old app (one conflict log replicated to every region),
    replayed on the new templates: the audit catches it in every region, once each."""
    policy, templates = synthesized
    edited = copy.deepcopy(templates)
    log = policy.system.conflict_log_table
    first = policy.regions[0]
    for region, template in edited.values():
        resources = template["Resources"]
        for lid in [
            k
            for k, res in resources.items()
            if res["Type"] == "AWS::DynamoDB::GlobalTable" and res["Properties"]["TableName"] == log
        ]:
            if region != first:
                del resources[lid]
                continue
            props = resources[lid]["Properties"]
            props["Replicas"] = [
                {**copy.deepcopy(props["Replicas"][0]), "Region": r} for r in policy.regions
            ]
    bad = audit(policy, example_policy_path, deploy(edited))
    assert sorted((f.check_id, f.region) for f in bad) == sorted(
        ("infra.replica_sets", r) for r in policy.regions
    )
