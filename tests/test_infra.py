"""The CDK app, judged by the templates it synthesizes.

Three synths for the whole module (a synth takes seconds): the example policy
(cdk-nag and the CDK's CloudFormation validation on, as ``cdk synth`` runs it),
the minimal policy through ``regionkit infra synth``, and the minimal policy with
one region added. Every assertion is by meaning (table names, regions, tags,
actions), never by a hashed logical id, and every expectation is derived from
the policy file, not from infra's own plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example as hypothesis_example
from hypothesis import given, settings
from hypothesis import strategies as st

from residency.names import TAG_POLICY
from residency.policy import GlobalDataClass, PinnedDataClass, Policy, load_policy

pytestmark = pytest.mark.cdk

ACCOUNT = "123456789012"
DISRUPT = {"Key": "DisruptDynamoDb", "Value": "Allowed"}
#: Where FIS has no CloudFormation resource type (see residency.deployment.FIS_UNAVAILABLE).
NO_FIS = {"ap-south-2"}


# --- rendering CloudFormation intrinsics for reading --------------------------------------


def render(value: Any) -> Any:
    """Resolve the intrinsics CDK emits for ARNs into plain strings."""
    if isinstance(value, list):
        return [render(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(str(render(p)) for p in parts)
    if "Ref" in value:
        return {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT}.get(
            value["Ref"], f"<Ref:{value['Ref']}>"
        )
    if "Fn::GetAtt" in value:
        return "<GetAtt:{}.{}>".format(*value["Fn::GetAtt"])
    return {k: render(v) for k, v in value.items()}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- synths ----------------------------------------------------------------------------------


@dataclass
class Synth:
    policy: Policy
    out_dir: Path
    templates: dict[str, dict[str, Any]]  # stack name -> template
    regions: dict[str, str]  # stack name -> region

    def resources(
        self, kind: str, stack: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, template in self.templates.items():
            if stack is not None and name != stack:
                continue
            for res in template.get("Resources", {}).values():
                if res["Type"] == kind:
                    yield name, res

    def stack(self, tier: str, region: str | None = None) -> str:
        name = f"regionkit-{self.policy.name}-{tier}" + (f"-{region}" if region else "")
        assert name in self.templates, f"no stack {name}"
        return name

    def tables(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(table name, jurisdiction tag) -> GlobalTable resource (with its stack region)."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for stack, res in self.resources("AWS::DynamoDB::GlobalTable"):
            props = res["Properties"]
            tags = {t["Key"]: t["Value"] for t in props["Replicas"][0].get("Tags", [])}
            name = props["TableName"]
            if name.endswith(self.policy.system.conflict_log_table):  # one per region
                name = f"{name}@{self.regions[stack]}"
            key = (name, tags["regionkit:jurisdiction"])
            assert key not in out, f"table {key} defined twice"
            out[key] = {**res, "stack_region": self.regions[stack]}
        return out


def expected_replicas(policy: Policy) -> dict[tuple[str, str], set[str]]:
    """Straight from the policy file: every table and where its replicas must be."""
    out: dict[tuple[str, str], set[str]] = {}
    for dc in policy.data_classes.values():
        if isinstance(dc, GlobalDataClass):
            out[(dc.table, "global")] = set(dc.replicas)
        else:
            for jid, j in policy.jurisdictions.items():
                out[(dc.table, jid)] = set(j.regions)
    for region in policy.regions:  # the conflict log: one unreplicated table per region
        out[(f"{policy.system.conflict_log_table}@{region}", "global")] = {region}
    # the detectors' lineage table: wherever a global data class has a replica
    out[(policy.system.lineage_table, "global")] = {
        r
        for dc in policy.data_classes.values()
        if isinstance(dc, GlobalDataClass)
        for r in dc.replicas
    }
    return out


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, example_policy_path: Path) -> Synth:
    """The example policy, synthesized in-process with cdk-nag; read via Template.from_stack."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import AppOptions, build_app

    out = tmp_path_factory.mktemp("cdk-example")
    policy = load_policy(example_policy_path)
    app = cdk.App(outdir=str(out))
    built = build_app(app, policy, AppOptions(policy_path=example_policy_path, nag=True))
    app.synth()
    stacks = built.stacks()
    return Synth(
        policy=policy,
        out_dir=out,
        templates={s.stack_name: Template.from_stack(s).to_json() for s in stacks},
        regions={s.stack_name: s.region for s in stacks},
    )


def _from_files(policy: Policy, out: Path) -> Synth:
    manifest = json.loads((out / "manifest.json").read_text())
    templates, regions = {}, {}
    for name, art in manifest["artifacts"].items():
        if art["type"] == "aws:cloudformation:stack":
            templates[name] = json.loads((out / art["properties"]["templateFile"]).read_text())
            regions[name] = art["environment"].rsplit("/", 1)[-1]
    return Synth(policy=policy, out_dir=out, templates=templates, regions=regions)


@pytest.fixture(scope="module")
def minimal_cli(
    tmp_path_factory: pytest.TempPathFactory, minimal_policy_path: Path
) -> tuple[Synth, dict[str, Any]]:
    """The minimal policy through ``regionkit infra synth --json``."""
    import contextlib
    import io

    import cli

    out = tmp_path_factory.mktemp("cdk-minimal")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exit_info:
        cli.main(
            ["--policy", str(minimal_policy_path), "infra", "synth", "--out", str(out), "--json"]
        )
    assert exit_info.value.code == 0, buf.getvalue()
    return _from_files(load_policy(minimal_policy_path), out), json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory, minimal_policy_path: Path) -> Synth:
    """The minimal policy with eu-north-1 added to the EU (and to the global tables)."""
    from infra.app import AppOptions, synth

    data = yaml.safe_load(minimal_policy_path.read_text())
    data["regions"].append("eu-north-1")
    data["jurisdictions"]["EU"]["regions"].append("eu-north-1")
    data["data_classes"]["content"]["replicas"].append("eu-north-1")
    data["data_classes"]["directory"]["replicas"].append("eu-north-1")
    data["data_classes"]["content"]["sort_key"] = "sk"
    tmp = tmp_path_factory.mktemp("cdk-edited")
    path = tmp / "edited.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = synth(AppOptions(policy_path=path, nag=False, cfn_validation=False), tmp / "out")
    return _from_files(load_policy(path), result.out_dir)


# --- tables ----------------------------------------------------------------------------------


def test_every_stack_has_an_explicit_policy_region(example: Synth) -> None:
    assert set(example.regions.values()) <= set(example.policy.regions)
    for region in example.policy.regions:
        example.stack("keys", region)
        example.stack("region", region)


def test_every_table_replicates_exactly_where_the_policy_says(example: Synth) -> None:
    tables = example.tables()
    expected = expected_replicas(example.policy)
    actual = {k: {r["Region"] for r in t["Properties"]["Replicas"]} for k, t in tables.items()}
    assert actual == expected
    # Defined once, in the stack of its primary region.
    policy = example.policy
    for (name, scope), table in tables.items():
        if "@" in name:  # a conflict log, in its own region
            primary = name.split("@")[1]
        elif name == policy.system.lineage_table:  # the first detector region in policy order
            primary = policy.lineage_regions()[0]
        elif scope == "global":
            dc = next((d for d in policy.data_classes.values() if d.table == name), None)
            assert isinstance(dc, GlobalDataClass)
            primary = dc.replicas[0]
        else:
            primary = policy.jurisdictions[scope].home_regions[0]
        assert table["stack_region"] == primary, name


def test_no_pinned_replica_sits_outside_its_jurisdiction(example: Synth) -> None:
    policy = example.policy
    pinned = {dc.table for dc in policy.data_classes.values() if isinstance(dc, PinnedDataClass)}
    seen = 0
    for (name, scope), table in example.tables().items():
        if name not in pinned:
            continue
        seen += 1
        assert scope in policy.jurisdictions
        for replica in table["Properties"]["Replicas"]:
            assert policy.jurisdiction_of_region(replica["Region"]) == scope
            tags = {t["Key"]: t["Value"] for t in replica["Tags"]}
            assert tags["regionkit:jurisdiction"] == scope
    assert seen == len(pinned) * len(policy.jurisdictions)


def test_every_taggable_resource_carries_the_policy_tag(example: Synth) -> None:
    """The tag the audit classes tables by, and cost reports group by: set once, on the app."""
    want = {"Key": TAG_POLICY, "Value": example.policy.name}
    kinds = ["AWS::KMS::Key", "AWS::Lambda::Function", "AWS::SQS::Queue", "AWS::IAM::Role"]
    seen = 0
    for kind in kinds:
        for _, res in example.resources(kind):
            assert want in res["Properties"]["Tags"], kind
            seen += 1
    for _, table in example.resources("AWS::DynamoDB::GlobalTable"):
        for replica in table["Properties"]["Replicas"]:
            assert want in replica["Tags"], replica["Region"]
            seen += 1
    assert seen > len(example.policy.regions) * len(kinds)


def test_every_table_is_protected_and_encrypted_in_each_region(example: Synth) -> None:
    aliases: dict[str, set[str]] = {}  # region -> alias names
    for stack, res in example.resources("AWS::KMS::Alias"):
        aliases.setdefault(example.regions[stack], set()).add(res["Properties"]["AliasName"])
    for _, key in example.resources("AWS::KMS::Key"):
        assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"

    for (name, scope), table in example.tables().items():
        props = table["Properties"]
        assert table["DeletionPolicy"] == "Retain", name
        assert table["UpdateReplacePolicy"] == "Retain", name
        assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
        assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
        assert {k["AttributeType"] for k in props["AttributeDefinitions"]} == {"S"}
        for replica in props["Replicas"]:
            region = replica["Region"]
            assert replica["PointInTimeRecoverySpecification"] == {
                "PointInTimeRecoveryEnabled": True
            }
            assert replica["DeletionProtectionEnabled"] is True
            # A customer-managed key of the replica's own region, named by its alias.
            key_ref = render(replica["SSESpecification"]["KMSMasterKeyId"])
            prefix = f"arn:aws:kms:{region}:{ACCOUNT}:"
            assert key_ref.startswith(prefix), (name, region, key_ref)
            assert key_ref.removeprefix(prefix) in aliases[region], (name, region)
            tags = {t["Key"]: t["Value"] for t in replica["Tags"]}
            assert tags["regionkit:jurisdiction"] == scope
            assert "regionkit:data-class" in tags
            multi_region = len(props["Replicas"]) > 1
            is_log = name.startswith(f"{example.policy.system.conflict_log_table}@")
            is_lineage = name == example.policy.system.lineage_table  # never paused by FIS
            fis = multi_region and not is_log and not is_lineage
            assert (DISRUPT in replica["Tags"]) == fis, (name, region)


# --- alarms, detector, FIS ---------------------------------------------------------------


def test_replication_latency_alarms_cover_every_replica_pair(example: Synth) -> None:
    threshold = example.policy.targets.replication_latency_alarm_ms
    expected = {
        (source, name, receiving)
        for (name, _), regions in expected_replicas(example.policy).items()
        for source in regions
        for receiving in regions
        if source != receiving
    }
    actual: list[tuple[str, str, str]] = []
    latency = [
        (stack, alarm)
        for stack, alarm in example.resources("AWS::CloudWatch::Alarm")
        if "ReplicationLatency" in json.dumps(alarm["Properties"].get("Metrics", []))
    ]
    for stack, alarm in latency:
        props = alarm["Properties"]
        assert props["Threshold"] == threshold
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == 5
        *reads, watched = props["Metrics"]
        # the alarm watches the slowest of its links, and reads at most ten (CloudWatch's limit)
        assert watched == {
            "Id": "slowest",
            "Expression": "MAX(METRICS())",
            "Label": watched["Label"],
            "ReturnData": True,
        }
        assert 1 <= len(reads) <= 10
        tables = set()
        for query in reads:
            assert query["ReturnData"] is False
            stat = query["MetricStat"]
            assert (stat["Stat"], stat["Period"], stat["Unit"]) == ("Average", 60, "Milliseconds")
            metric = stat["Metric"]
            assert (metric["Namespace"], metric["MetricName"]) == (
                "AWS/DynamoDB",
                "ReplicationLatency",
            )
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert set(dims) == {"TableName", "ReceivingRegion"}
            tables.add(dims["TableName"])
            actual.append((example.regions[stack], dims["TableName"], dims["ReceivingRegion"]))
        assert len(tables) == 1  # one table per alarm: its name says which
    assert len(actual) == len(set(actual))  # no link is watched twice
    assert set(actual) == expected
    # one alarm per table replicated out of a region (none here has over ten links)
    assert len(latency) == len({(region, name) for region, name, _ in actual})
    # One composite per region names every latency alarm sourced there, and is created
    # after each alarm its rule names (CloudFormation refuses a rule naming none).
    for stack, composite in example.resources("AWS::CloudWatch::CompositeAlarm"):
        names = {a["Properties"]["AlarmName"] for st, a in latency if st == stack}
        rule = composite["Properties"]["AlarmRule"]
        assert all(f'ALARM("{n}")' in rule for n in names)
        by_name = {
            r["Properties"]["AlarmName"]: logical_id
            for logical_id, r in example.templates[stack]["Resources"].items()
            if r["Type"].startswith("AWS::CloudWatch::")
        }
        named = {n for n in by_name if f'ALARM("{n}")' in rule}
        assert named
        assert {by_name[n] for n in named} <= set(composite["DependsOn"])


def test_conflict_detector_reads_every_global_replica_stream(example: Synth) -> None:
    policy = example.policy
    for region in policy.regions:
        stack = example.stack("region", region)
        watched = {
            dc.table
            for dc in policy.data_classes.values()
            if isinstance(dc, GlobalDataClass) and region in dc.replicas
        }
        functions = [
            f
            for _, f in example.resources("AWS::Lambda::Function", stack)
            if f["Properties"].get("Handler") == "regions.detector_lambda.handler"
        ]
        assert len(functions) == 1
        props = functions[0]["Properties"]
        assert props["Runtime"] == "python3.11"
        env = props["Environment"]["Variables"]
        assert env["REGIONKIT_CONFLICT_LOG_TABLE"] == policy.system.conflict_log_table
        assert env["REGIONKIT_LINEAGE_TABLE"] == policy.system.lineage_table
        assert env["REGIONKIT_POLICY_NAME"] == policy.name
        assert set(json.loads(env["REGIONKIT_DETECTOR_TABLES"])) == watched

        lookups = {}
        for logical_id, res in example.templates[stack]["Resources"].items():
            if res["Type"] == "Custom::AWS":
                call = json.loads(res["Properties"]["Create"])
                assert call["action"] == "describeTable" and call["region"] == region
                lookups[logical_id] = call["parameters"]["TableName"]
        streams = set()
        for _, esm in example.resources("AWS::Lambda::EventSourceMapping", stack):
            source, attr = esm["Properties"]["EventSourceArn"]["Fn::GetAtt"]
            assert attr == "Table.LatestStreamArn"
            streams.add(lookups[source])
            assert esm["Properties"]["StartingPosition"] == "TRIM_HORIZON"
            assert esm["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert streams == watched


def test_the_lineage_table_is_global_with_ttl_and_shared_by_every_detector(
    example: Synth,
) -> None:
    """Per-region detectors share parents through one global table (regions.lineage):
    a replica in every detector region, TTL on its entries, and each region's detector
    granted batch reads and writes on its own region's replica, nothing more."""
    policy = example.policy
    name = policy.system.lineage_table
    (table,) = [t for (n, _), t in example.tables().items() if n == name]
    props = table["Properties"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["pk"]
    detector_regions = set(policy.lineage_regions())
    assert {r["Region"] for r in props["Replicas"]} == detector_regions
    for region in policy.regions:
        stack = example.stack("region", region)
        grants = [
            stmt
            for _, role in example.resources("AWS::IAM::Role", stack)
            for doc in role["Properties"].get("Policies", [])
            for stmt in doc["PolicyDocument"]["Statement"]
            if stmt.get("Sid") == "ShareLineage"
        ]
        if region not in detector_regions:
            assert grants == []
            continue
        (grant,) = grants
        assert sorted(as_list(grant["Action"])) == [
            "dynamodb:BatchGetItem",
            "dynamodb:BatchWriteItem",
        ]
        assert [render(r) for r in as_list(grant["Resource"])] == [
            f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"
        ]


def test_fis_templates_pause_replication_of_tagged_tables(example: Synth) -> None:
    from residency.fis_template import experiment_template

    for region in example.policy.regions:
        stack = example.stack("region", region)
        templates = [t for _, t in example.resources("AWS::FIS::ExperimentTemplate", stack)]
        if region in NO_FIS:
            assert templates == []
            continue
        assert len(templates) == 1
        props = templates[0]["Properties"]
        (action,) = props["Actions"].values()
        assert action["ActionId"] == "aws:dynamodb:global-table-pause-replication"
        assert action["Parameters"]["duration"] == "PT10M"
        (target_name,) = action["Targets"].values()
        target = props["Targets"][target_name]
        assert target["ResourceType"] == "aws:dynamodb:global-table"
        assert target["ResourceTags"]["DisruptDynamoDb"] == "Allowed"
        assert "ResourceArns" not in target
        assert props["Tags"]["regionkit:region"] == region
        (stop,) = props["StopConditions"]
        assert stop["Source"] == "aws:cloudwatch:alarm"
        # The stop condition is customer harm (the routers' EMF error rate), never the
        # replication latency a pause degrades by design.
        alarm_id = stop["Value"]["Fn::GetAtt"][0]
        alarm = example.templates[stack]["Resources"][alarm_id]
        assert alarm["Type"] == "AWS::CloudWatch::Alarm"
        assert alarm["Properties"]["AlarmName"].endswith("-customer-harm")
        queries = alarm["Properties"]["Metrics"]
        names = {q["MetricStat"]["Metric"]["MetricName"] for q in queries if "MetricStat" in q}
        assert names == {"RoutedRequests", "RoutedRequestErrors"}
        assert "ReplicationLatency" not in json.dumps(alarm)
        role_id = props["RoleArn"]["Fn::GetAtt"][0]
        role = example.templates[stack]["Resources"][role_id]["Properties"]
        principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        assert principal == {"Service": "fis.amazonaws.com"}
        output = example.templates[stack]["Outputs"]["PauseReplicationExperimentTemplateId"]
        assert output["Value"]["Fn::GetAtt"][0] in example.templates[stack]["Resources"]
        # The drill CLI's plain-dict template is the very same experiment.
        plain = experiment_template(example.policy, region)
        assert plain["targets"][target_name]["resourceTags"] == target["ResourceTags"]
        assert plain["actions"]["PauseReplication"]["parameters"] == action["Parameters"]
        assert plain["tags"] == props["Tags"]


def _policy_documents(synth: Synth) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for stack, template in synth.templates.items():
        for res in template["Resources"].values():
            props = res.get("Properties", {})
            if res["Type"] in {"AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"}:
                yield stack, res["Type"], render(props["PolicyDocument"])
            elif res["Type"] == "AWS::IAM::Role":
                for p in props.get("Policies", []):
                    yield stack, res["Type"], render(p["PolicyDocument"])


def test_iam_never_grants_a_pinned_table_outside_its_jurisdiction(example: Synth) -> None:
    policy = example.policy
    pinned = {dc.table for dc in policy.data_classes.values() if isinstance(dc, PinnedDataClass)}
    granted: dict[str, set[str]] = {}  # jurisdiction -> regions granted by the managed policy
    for _, kind, doc in _policy_documents(example):
        for stmt in doc["Statement"]:
            if stmt["Effect"] != "Allow":
                continue
            arns = [a for a in as_list(stmt["Resource"]) if ":dynamodb:" in a]
            hits = [a for a in arns if a.split(":table/")[-1].split("/")[0] in pinned]
            if not hits:
                continue
            regions = {a.split(":")[3] for a in hits}
            owners = {policy.jurisdiction_of_region(r) for r in regions}
            assert len(owners) == 1, f"one statement spans jurisdictions {owners}"
            owner = owners.pop()
            requested = stmt.get("Condition", {}).get("StringEquals", {}).get("aws:RequestedRegion")
            if kind == "AWS::IAM::ManagedPolicy":
                assert requested is not None, "pinned grants need aws:RequestedRegion"
                assert set(as_list(requested)) == set(policy.jurisdictions[owner].regions)
                granted.setdefault(owner, set()).update(regions)
    assert granted == {jid: set(j.regions) for jid, j in policy.jurisdictions.items()}


def test_service_policy_grants_global_tables_in_their_replica_regions(example: Synth) -> None:
    docs = [d for s, kind, d in _policy_documents(example) if kind == "AWS::IAM::ManagedPolicy"]
    granted: dict[str, set[str]] = {}
    for doc in docs:
        for stmt in doc["Statement"]:
            if "dynamodb:PutItem" in as_list(stmt["Action"]):
                for arn in as_list(stmt["Resource"]):
                    granted.setdefault(arn.split(":table/")[1], set()).add(arn.split(":")[3])
    for dc in example.policy.data_classes.values():
        if isinstance(dc, GlobalDataClass):
            assert granted[dc.table] == set(dc.replicas)


# --- validation ------------------------------------------------------------------------------


def test_cfn_lint_passes_every_template(example: Synth) -> None:
    from cfnlint.api import ManualArgs, lint_by_config

    by_region: dict[str, list[str]] = {}
    for stack, region in example.regions.items():
        by_region.setdefault(region, []).append(str(example.out_dir / f"{stack}.template.json"))
    assert sum(map(len, by_region.values())) == len(list(example.out_dir.glob("*.template.json")))
    findings = []
    for region, files in by_region.items():
        # Each template is linted for the region it deploys to (resource availability,
        # E3006, differs by region). W3005 (a DependsOn already implied by a Ref/GetAtt) is
        # ignored: CDK emits both for a Lambda and its role's policy, which is harmless,
        # and the CDK's own CloudFormation validator ignores it too. Informational (I)
        # findings are not failures; every E and every other W is.
        config = ManualArgs(templates=files, regions=[region], ignore_checks=["W3005"])
        findings += [
            f"{m.filename}: {m.rule.id} {m.message}"
            for m in lint_by_config(config)
            if m.rule.id[0] in {"E", "W"}
        ]
    assert findings == []


def test_cdk_nag_reports_no_unacknowledged_finding(example: Synth) -> None:
    # The example synth ran with AwsSolutionsChecks and did not fail: a finding that is
    # not acknowledged interrupts the synth. The report lists only failing plugins.
    report = json.loads((example.out_dir / "validation-report.json").read_text())
    failing = [
        (p["pluginName"], v["ruleName"])
        for p in report["pluginReports"]
        for v in p["violations"]
        if v["severity"] in {"error", "fatal"}
    ]
    assert failing == []


def test_cdk_nag_wiring_fails_a_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    """The control: the same wiring on a tiny app with a wildcard grant does fail."""
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from infra.nag import add_aws_solutions_checks

    app = cdk.App(outdir=str(tmp_path), builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Control", env=cdk.Environment(region="eu-west-1"))
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=["*"]))
    add_aws_solutions_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert "AwsSolutions-IAM5[Resource::*]" in rules


def test_every_acknowledged_finding_has_a_reason(example: Synth) -> None:
    acknowledged = 0
    for meta in example.out_dir.glob("*.metadata.json"):
        for entries in json.loads(meta.read_text()).values():
            for e in entries:
                if e["type"] == "aws:cdk:acknowledged-rules":
                    for rule, reason in e["data"].items():
                        acknowledged += 1
                        assert "AwsSolutions-" in rule
                        assert len(reason) >= 40, rule
    assert acknowledged > 0


# --- the CLI and a policy edit ----------------------------------------------------------------


def test_cli_synth_summarizes_every_stack(minimal_cli: tuple[Synth, dict[str, Any]]) -> None:
    synth, summary = minimal_cli
    assert summary["policy"] == "minimal"
    by_name = {s["stack"]: s for s in summary["stacks"]}
    assert set(by_name) == set(synth.templates)
    tables = {t: s["replicas"][t] for s in summary["stacks"] for t in s["tables"]}
    assert set(tables["content"]) == {"eu-central-1", "eu-west-1", "us-east-1"}
    assert set(tables["profiles [EU]"]) == {"eu-central-1", "eu-west-1"}
    assert tables["profiles [US]"] == ["us-east-1"]
    fis = {
        s["region"]: s["fis_templates"]
        for s in summary["stacks"]
        if s["stack"].startswith("regionkit-minimal-region-")
    }
    assert fis == {"eu-central-1": 1, "eu-west-1": 1, "us-east-1": 1}


def test_a_new_region_adds_exactly_the_expected_replicas(
    minimal_cli: tuple[Synth, dict[str, Any]], edited: Synth
) -> None:
    before = {
        k: {r["Region"] for r in t["Properties"]["Replicas"]}
        for k, t in minimal_cli[0].tables().items()
    }
    after = {
        k: {r["Region"] for r in t["Properties"]["Replicas"]} for k, t in edited.tables().items()
    }
    # The new region's own conflict log is the only new table; every other gains a replica.
    assert set(after) - set(before) == {("regionkit-conflicts@eu-north-1", "global")}
    assert after[("regionkit-conflicts@eu-north-1", "global")] == {"eu-north-1"}
    assert set(before) <= set(after)
    added = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    assert {k: after[k] <= before[k] | {"eu-north-1"} for k in before} == dict.fromkeys(
        before, True
    )
    assert added == {
        ("profiles", "EU"): {"eu-north-1"},
        ("content", "global"): {"eu-north-1"},
        ("directory", "global"): {"eu-north-1"},
        ("regionkit-lineage", "global"): {"eu-north-1"},  # a detector runs there now
    }
    assert after[("profiles", "US")] == {"us-east-1"}
    content = edited.tables()[("content", "global")]["Properties"]
    assert content["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    # The new region gets its keys and its regional stack; no other stack appears.
    new_stacks = set(edited.templates) - set(minimal_cli[0].templates)
    assert new_stacks == {
        "regionkit-minimal-keys-eu-north-1",
        "regionkit-minimal-tables-eu-north-1",  # its conflict log
        "regionkit-minimal-region-eu-north-1",
    }


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=300), max_size=400))
@hypothesis_example(lengths=[40] * 250)  # short names: the count limit binds first
@hypothesis_example(lengths=[255] * 60)  # the longest alarm names: the length limit binds first
def test_composite_rules_stay_within_cloudwatchs_limits(lengths: list[int]) -> None:
    # A composite alarm's rule names at most 100 alarms in at most 10,240 characters.
    from infra.monitoring import _chunk

    terms = [f'ALARM("{i:04d}{"x" * n}")' for i, n in enumerate(lengths)]
    groups = _chunk(terms)
    assert [t for g in groups for t in g] == terms  # every alarm, once, in order
    for group in groups:
        assert len(group) <= 100
        assert len(" OR ".join(group)) <= 10_240
