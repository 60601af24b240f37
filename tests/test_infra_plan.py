"""The pure-Python half of infra/: the plan, names, IAM statements, FIS template, asset.

None of these import aws_cdk, so they run in milliseconds; tests/test_infra.py
checks the synthesized templates.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra import access
from infra.asset import stage_detector_code
from residency import names as naming
from residency.aws_regions import AWS_REGIONS
from residency.deployment import FIS_UNAVAILABLE, MAX_ALARM_METRICS, plan_deployment
from residency.errors import ConfigError
from residency.fis_template import ACTION_ID, TARGET_TYPE, experiment_template
from residency.policy import GlobalDataClass, PinnedDataClass, Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
PURE_MODULES = [
    "infra.access",
    "infra.asset",
    "infra.summary",
    "residency.deployment",
    "residency.fis_template",
]


@pytest.fixture(scope="module")
def social() -> Policy:
    return load_policy(ROOT / "policies" / "social-network.yaml")


def test_pure_modules_never_import_aws_cdk() -> None:
    code = "; ".join(f"import {m}" for m in PURE_MODULES)
    code += "; import sys; print(sorted(m for m in sys.modules if m.startswith('aws_cdk')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def _imported(nodes: list[ast.stmt] | list[ast.AST]) -> list[str]:
    names: list[str] = []
    for n in nodes:
        if isinstance(n, ast.Import):
            names += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            names.append(n.module or "")
    return names


def test_only_infra_imports_aws_cdk() -> None:
    # The library never imports aws_cdk or infra, not even lazily ...
    for path in [*ROOT.glob("residency/**/*.py"), *ROOT.glob("regions/**/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = _imported(list(ast.walk(tree)))
        assert not any(n.startswith(("aws_cdk", "infra", "cdk_nag")) for n in names), path
    # ... and the CLI only inside the command that needs it.
    tree = ast.parse((ROOT / "cli.py").read_text(encoding="utf-8"))
    assert not any(n.startswith(("aws_cdk", "infra")) for n in _imported(tree.body))


def test_plan_places_every_table_where_the_policy_says(social: Policy) -> None:
    plan = plan_deployment(social)
    by_key = {t.key: t for t in plan.tables}
    for name, dc in social.data_classes.items():
        if isinstance(dc, GlobalDataClass):
            t = by_key[name]
            assert t.regions == tuple(dc.replicas)
            assert t.primary == dc.replicas[0]
            assert t.jurisdiction == "global" and t.detector and t.fis_target
        else:
            assert isinstance(dc, PinnedDataClass)
            for jid, j in social.jurisdictions.items():
                t = by_key[f"{name}-{jid}"]
                assert set(t.regions) == set(j.regions)
                assert t.primary == j.home_regions[0]
                assert t.jurisdiction == jid and not t.detector
                assert t.fis_target == (len(j.regions) > 1)
    for region in social.regions:  # one unreplicated conflict log per region (the audit's)
        log = by_key[f"conflict-log-{region}"]
        assert log.regions == (region,) and not log.fis_target and log.kind == "system"
        assert plan.conflict_log(region) == log
    assert plan.table("directory").kind == "global"  # the directory is a plain global class


def test_pinned_tables_never_share_a_region(social: Policy) -> None:
    plan = plan_deployment(social)
    seen: dict[tuple[str, str], str] = {}
    for t in plan.tables:
        if t.kind != "pinned":
            continue
        for r in t.regions:
            assert (t.table_name, r) not in seen, (t.key, seen.get((t.table_name, r)))
            seen[(t.table_name, r)] = t.key


def test_table_prefix_reaches_names_and_aliases(social: Policy) -> None:
    plan = plan_deployment(social, table_prefix="staging.")
    content = plan.table("content")
    assert content.table_name == "staging.content"
    assert content.key_alias == "alias/regionkit/social-network/staging_content"
    assert plan.conflict_log_table == "staging.regionkit-conflicts"


def test_alias_collision_is_a_config_error(social: Policy) -> None:
    data = social.model_dump(mode="json")
    data["data_classes"]["extra"] = {
        "kind": "global",
        "table": "con.tent",
        "replicas": ["us-east-1"],
    }
    data["data_classes"]["more"] = {
        "kind": "global",
        "table": "con_tent",
        "replicas": ["us-east-1"],
    }
    policy = Policy.model_validate(data)
    with pytest.raises(ConfigError, match="same KMS alias"):
        plan_deployment(policy)


def test_alarm_pairs_are_every_ordered_pair_sourced_in_the_region(social: Policy) -> None:
    plan = plan_deployment(social)
    for region in social.regions:
        pairs = plan.alarm_pairs(region)
        expected = {(t.key, r) for t in plan.tables_in(region) for r in t.regions if r != region}
        assert {(t.key, r) for t, r in pairs} == expected
    assert sum(len(plan.alarm_pairs(r)) for r in social.regions) == sum(
        len(t.regions) * (len(t.regions) - 1) for t in plan.tables
    )


def _wide_policy(social: Policy, replicas: int) -> tuple[Policy, list[str]]:
    """``social`` plus an APAC jurisdiction, and a global class with ``replicas`` replicas."""
    data = social.model_dump(mode="json")
    extra = [r for r in sorted(AWS_REGIONS) if r.startswith("ap-") and r not in data["regions"]]
    data["jurisdictions"]["APAC"] = {
        "law": "test",
        "countries": ["JP", "KR", "AU", "SG"],
        "regions": extra,
        "home_regions": extra[:1],
    }
    data["regions"] += extra
    data["data_classes"]["directory"]["replicas"] = data["regions"]
    wide = data["regions"][:replicas]
    data["data_classes"]["wide"] = {"kind": "global", "table": "wide", "replicas": wide}
    return Policy.model_validate(data), wide


@settings(max_examples=25, deadline=None)
@given(replicas=st.integers(min_value=1, max_value=16))
def test_latency_alarms_cover_each_pair_once_and_read_at_most_ten_metrics(
    social: Policy, replicas: int
) -> None:
    policy, wide = _wide_policy(social, replicas)
    plan = plan_deployment(policy)
    for region in policy.regions:
        alarms = plan.latency_alarms(region)
        covered = [(a.table.key, r) for a in alarms for r in a.receiving]
        assert sorted(covered) == sorted((t.key, r) for t, r in plan.alarm_pairs(region))
        for alarm in alarms:
            assert alarm.source == region and 1 <= len(alarm.receiving) <= MAX_ALARM_METRICS
        for key in {a.table.key for a in alarms}:
            parts = [a.part for a in alarms if a.table.key == key]
            assert parts == ([None] if len(parts) == 1 else list(range(1, len(parts) + 1)))
        names = [
            naming.replication_alarm_name(policy.name, a.table.table_name, region, a.part)
            for a in alarms
        ]
        assert len(set(names)) == len(names)
    if len(wide) > 1:
        parts = [a for a in plan.latency_alarms(wide[0]) if a.table.key == "wide"]
        assert len(parts) == -(-(len(wide) - 1) // MAX_ALARM_METRICS)


def test_names_fit_aws_limits() -> None:
    long = "p" * 63
    assert len(naming.fis_role_name(long, "ap-southeast-7")) <= 64
    assert len(naming.detector_function_name(long, "ap-southeast-7")) <= 64
    assert len(naming.regional_stack_name(long, "ap-southeast-7")) <= 128
    assert naming.fis_role_name(long, "a-1") != naming.fis_role_name(long, "a-2")
    # a KMS alias holds at most 256 characters: long policy and table names still fit
    alias = naming.key_alias(long, "staging." + "t" * 240)
    assert len(alias) <= 256 and alias.startswith("alias/regionkit/")
    assert alias != naming.key_alias(long, "staging." + "t" * 239 + "u")
    assert naming.keys_stack_name("my_policy", "us-east-1") == "regionkit-my-policy-keys-us-east-1"


def test_service_statements_keep_pinned_tables_in_their_jurisdiction(social: Policy) -> None:
    plan = plan_deployment(social)
    stmts = access.service_access_statements(plan, partition="aws", account="123456789012")
    pinned = {dc.table for dc in social.data_classes.values() if isinstance(dc, PinnedDataClass)}
    for stmt in stmts:
        arns = [a for a in stmt["Resource"] if ":dynamodb:" in a]
        pinned_arns = [a for a in arns if a.rsplit("/", 1)[-1] in pinned]
        if not pinned_arns:
            continue
        regions = {a.split(":")[3] for a in pinned_arns}
        owners = {social.jurisdiction_of_region(r) for r in regions}
        assert len(owners) == 1, stmt["Sid"]
        jurisdiction = social.jurisdictions[owners.pop()]
        requested = stmt["Condition"]["StringEquals"]["aws:RequestedRegion"]
        assert set(requested) == set(jurisdiction.regions)


def test_statements_pack_under_the_managed_policy_limit(social: Policy) -> None:
    plan = plan_deployment(social)
    stmts = access.service_access_statements(plan, partition="aws", account="123456789012")
    groups = access.pack_statements(stmts, limit=1500)
    assert len(groups) > 1
    assert sorted(i for g in groups for i in g) == list(range(len(stmts)))
    for g in groups:
        size = sum(len(json.dumps(stmts[i], separators=(",", ":"))) for i in g)
        assert size <= 1500 or len(g) == 1


def test_fis_role_may_edit_the_resource_policies_of_the_targets_and_their_streams(
    social: Policy,
) -> None:
    # FIS adds its deny statement to a target's stream policy as well as to its table's
    plan = plan_deployment(social)
    for region in ("eu-west-1", "us-east-1"):
        pause = access.fis_statements(plan, region, partition="aws", account="111122223333")[0]
        tables = [
            f"arn:aws:dynamodb:{region}:111122223333:table/{t.table_name}"
            for t in plan.fis_targets(region)
        ]
        assert tables
        assert sorted(pause["Resource"]) == sorted([*tables, *(f"{t}/stream/*" for t in tables)])
        assert "dynamodb:PutResourcePolicy" in pause["Action"]


def test_fis_template_pauses_tagged_tables_in_one_region(social: Policy) -> None:
    t = experiment_template(social, "eu-west-1", duration="PT5M", account="111122223333")
    action = t["actions"]["PauseReplication"]
    assert action["actionId"] == ACTION_ID
    assert action["parameters"] == {"duration": "PT5M"}
    target = t["targets"][next(iter(action["targets"].values()))]
    assert target["resourceType"] == TARGET_TYPE
    assert target["resourceTags"][naming.DISRUPT_TAG] == naming.DISRUPT_TAG_VALUE
    assert t["stopConditions"] == [
        {
            "source": "aws:cloudwatch:alarm",
            "value": "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:"
            "regionkit-social-network-eu-west-1-customer-harm",
        }
    ]
    assert t["roleArn"] == "arn:aws:iam::111122223333:role/regionkit-social-network-fis-eu-west-1"
    assert t["tags"][naming.TAG_REGION] == "eu-west-1"


@pytest.mark.parametrize("duration", ["10M", "PT", "PT0M", "P1D", "PT5X"])
def test_fis_template_rejects_bad_durations(social: Policy, duration: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        experiment_template(social, "eu-west-1", duration=duration)


def test_fis_template_refuses_unknown_or_fis_less_regions(social: Policy) -> None:
    with pytest.raises(ConfigError, match="not in policy"):
        experiment_template(social, "eu-north-1")
    assert "ap-south-2" in FIS_UNAVAILABLE
    with pytest.raises(ConfigError, match="not available in ap-south-2"):
        experiment_template(social, "ap-south-2")


def test_detector_code_holds_the_two_packages_and_the_policy(tmp_path: Path) -> None:
    """Without the dependencies (tests/test_detector_asset.py bundles and runs them)."""
    policy = ROOT / "policies" / "minimal.yaml"
    first = stage_detector_code(policy, build_dir=tmp_path, bundle=False)
    again = stage_detector_code(policy, build_dir=tmp_path, bundle=False)
    assert first == again  # content-addressed: same code, same directory
    top = {p.name for p in first.iterdir()}
    assert top == {"residency", "regions", "policy.yaml"}
    assert not list(first.rglob("__pycache__"))
    assert (first / "regions" / "detector_lambda.py").is_file()
    assert (first / "policy.yaml").read_bytes() == policy.read_bytes()


def test_staging_prunes_code_unused_for_an_hour(tmp_path: Path) -> None:
    import os
    import time

    stale, fresh = tmp_path / "detector-stale", tmp_path / "detector-fresh"
    for d in (stale, fresh):
        d.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    staged = stage_detector_code(
        ROOT / "policies" / "minimal.yaml", build_dir=tmp_path, bundle=False
    )
    assert not stale.exists()
    assert fresh.exists() and staged.exists()


def test_the_bundle_key_follows_installed_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staged dependencies are reused only while every installed version is the same:
    an upgrade (a new ``name-version.dist-info``) names a new staging directory."""
    import re
    import sys
    from importlib import metadata

    from infra import asset

    site = tmp_path / "site"
    (site / "somelib-1.0.dist-info").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(site), str(tmp_path / "missing")])
    before = asset._environment_key()
    assert asset._environment_key() == before
    assert b"somelib-1.0.dist-info" in before
    (site / "somelib-1.0.dist-info").rename(site / "somelib-1.1.dist-info")
    assert asset._environment_key() != before
    # Every installed distribution is in it, by name and version.
    key = asset._environment_key().decode().lower()
    for dist in metadata.distributions():
        if not dist.metadata or not dist.metadata["Name"]:
            continue  # the empty stand-in above
        name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
        assert f"{name}-{dist.version}".lower() in key, name
