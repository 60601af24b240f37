"""The compliance audit against a real local cluster (one moto server per region).

One cluster serves the module; every test provisions its own fresh set of tables
under a unique table prefix (the same provisioning ``regionkit local up`` does:
streams, PITR, customer-managed KMS, deletion protection, tags), seeds users
through the router, plants exactly one kind of violation with a raw client, and
asserts the finding it must give: check, status, severity, region and ARN.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regions.codec import to_ddb
from regions.conflicts import ConflictLog
from regions.ids import mint_user_id
from regions.local.cluster import LocalCluster
from regions.local.provision import provision
from regions.router import RegionRouter
from residency.audit import AuditReport, Finding, run_audit
from residency.policy import Policy
from residency.pseudonym import Pseudonymizer
from residency.records import ConflictRecord
from residency.signing import LocalSigner

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
POLICY_PATH = ROOT / "policies" / "minimal.yaml"
EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"
ACCOUNT = "123456789012"  # what moto answers to sts:GetCallerIdentity
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

SIGNER = LocalSigner.generate()
TRUSTED = [SIGNER.public_key_pem()]
PN = Pseudonymizer(bytes(range(32)))

# Distinctive PII the reports must never contain.
PII_MARKERS = ("Vondrakovich", "zq-pii-mark", "+49 151 777", "4915177")


def pii(i: int) -> dict[str, str]:
    return {
        "email": f"zq-pii-mark.{i}@example.test",
        "display_name": f"Quintessa Vondrakovich {i}",
        "phone": f"+49 151 777 {i:04d}",
    }


_prefixes = itertools.count()


class Clients:
    """The audit's ClientProvider over the cluster (and an optional extra-region server)."""

    def __init__(self, cluster: LocalCluster, extra: dict[str, Any] | None = None) -> None:
        self.cluster = cluster
        self.extra = extra or {}

    def client(self, service: str, region: str) -> Any:
        if region in self.extra:
            return self.extra[region](service)
        return self.cluster.clients.client(service, region)


@dataclass
class Env:
    cluster: LocalCluster
    policy: Policy
    prefix: str
    drills: Path
    router: RegionRouter
    users: dict[str, list[str]] = field(default_factory=dict)  # jurisdiction -> user IDs

    def raw(self, region: str) -> Any:
        return self.cluster.clients.client("dynamodb", region)

    def table(self, logical: str) -> str:
        return self.prefix + logical

    def arn(self, region: str, logical: str) -> str:
        return f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{self.prefix}{logical}"

    def audit(self, **kw: Any) -> AuditReport:
        kw.setdefault("drill_history", self.drills)
        kw.setdefault("now", NOW)
        kw.setdefault("signer", SIGNER)
        kw.setdefault("pseudonymizer", PN)
        clients = kw.pop("clients", None) or Clients(self.cluster)
        return run_audit(
            self.policy, clients, policy_path=POLICY_PATH, table_prefix=self.prefix, **kw
        )


def write_drill(
    directory: Path, name: str, regions: list[str], ended: datetime, verdict: str = "pass"
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    journal = {
        "drill_id": name,
        "scenario": "region-outage",
        "target": "local",
        "regions": regions,
        "started_at": (ended - timedelta(minutes=5)).isoformat(),
        "ended_at": ended.isoformat(),
        "verdict": verdict,
        "phases": [{"name": "steady-state", "ok": True}],  # extra fields are ignored
    }
    (directory / f"{name}.json").write_text(json.dumps(journal), encoding="utf-8")


@pytest.fixture(scope="module")
def audit_cluster(cluster_policy: Policy) -> Iterator[LocalCluster]:
    with LocalCluster(cluster_policy, replicate=False) as c:
        yield c


def _drop_tables(cluster: LocalCluster, prefix: str) -> None:
    """Delete a test's tables: the inventory lists every table, so none may linger."""
    for region in (EU1, EU2, US):
        ddb = cluster.clients.client("dynamodb", region)
        for name in ddb.list_tables().get("TableNames", []):
            if not name.startswith(prefix):
                continue
            try:
                ddb.update_table(TableName=name, DeletionProtectionEnabled=False)
                ddb.delete_table(TableName=name)
            except Exception:  # already gone, or the region is paused: the next test tells
                pass


@pytest.fixture
def env(audit_cluster: LocalCluster, cluster_policy: Policy, tmp_path: Path) -> Iterator[Env]:
    """Fresh, fully provisioned tables, two EU users and one US user, content, drills."""
    prefix = f"a{next(_prefixes)}-"
    provision(cluster_policy, audit_cluster.clients, table_prefix=prefix)
    settings = audit_cluster.config(table_prefix=prefix, region=EU1)
    router = RegionRouter(
        cluster_policy, region=EU1, clients=audit_cluster.clients, config=settings
    )
    e = Env(audit_cluster, cluster_policy, prefix, tmp_path / "drills", router)
    for i, country in enumerate(["DE", "FR", "US"]):
        uid = router.new_user_id(country=country)
        router.assign_home(uid, country=country)  # the directory (written in eu-central-1)
        router.put("profile", {"pk": uid, **pii(i)})  # the profile, in its home region
        e.users.setdefault("US" if country == "US" else "EU", []).append(uid)
        router.put("content", {"pk": f"post-{i}", "author": uid, "body": "hello"})
    for region in (EU1, EU2, US):
        write_drill(e.drills, f"drill-{region}", [region], NOW - timedelta(days=3))
    yield e
    _drop_tables(audit_cluster, prefix)


def item(env: Env, logical: str, key: str) -> str:
    """How findings name an item: its keyed pseudonym within its table."""
    return PN(key, scope=env.table(logical))


def subject(user_id: str) -> str:
    return PN(user_id, scope="subject")


def of(report: AuditReport, check_id: str, status: str | None = None) -> list[Finding]:
    return [
        f
        for f in report.findings
        if f.check_id == check_id and (status is None or f.status == status)
    ]


def not_passing(report: AuditReport) -> list[Finding]:
    return [f for f in report.findings if f.status != "PASS"]


# --- a clean cluster -------------------------------------------------------------------


def test_a_clean_cluster_gives_no_fail_and_no_error(env: Env) -> None:
    report = env.audit()
    bad = [(f.check_id, f.region, f.reason) for f in not_passing(report)]
    # The one expected note: the minimal policy's US has a single region (info severity).
    assert bad == [
        (
            "policy.failover_capacity",
            "global",
            "US has one region (us-east-1): its pinned data has no compliant failover",
        )
    ]
    assert report.failing("low") == []
    assert report.verify(TRUSTED)
    assert report.account == ACCOUNT
    # the evidence: every table of every region, with the items read there
    scanned = {(e.region, e.table): e.items_scanned for e in report.inventory}
    assert scanned[(EU1, env.table("profiles"))] == 2
    assert scanned[(US, env.table("profiles"))] == 1
    assert scanned[(EU2, env.table("profiles"))] == 0  # no replication in this cluster
    assert scanned[(EU1, env.table("content"))] == 3
    assert scanned[(EU1, env.table("directory"))] == 2  # entries are written in the home region
    assert all(e.exists for e in report.inventory)
    for check in (
        "infra.pitr",
        "infra.kms",
        "infra.streams",
        "infra.tags",
        "infra.deletion_protection",
        "infra.table_placement",
    ):
        # 5 tables (the lineage table too) x 3 regions
        assert len(of(report, check, "PASS")) == 15, check


# --- data -------------------------------------------------------------------------------


def test_a_profile_stored_outside_its_jurisdiction_is_critical(env: Env) -> None:
    stray = mint_user_id(US)  # a US subject, no directory entry, no other copy
    env.raw(EU2).put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": stray, **pii(99)}))
    report = env.audit(checks=["data"])
    found = of(report, "data.pinned_placement", "FAIL")
    assert len(found) == 1
    f = found[0]
    assert (f.severity, f.region, f.resource) == ("critical", EU2, env.arn(EU2, "profiles"))
    assert f.details["item"] == item(env, "profiles", stray)
    assert f.details["subject"] == subject(stray)
    assert stray not in f.model_dump_json()
    assert f.details["expected_jurisdiction"] == "US"
    assert f.details["found_jurisdiction"] == "EU"
    assert not of(report, "data.profile_duplicates", "FAIL")
    assert not of(report, "data.directory_consistency", "FAIL")
    assert not [f for f in report.findings if f.status == "ERROR"]


def test_a_profile_in_two_jurisdictions_and_an_unfinished_move(env: Env) -> None:
    # 1. a plain copy of an EU user's profile in the US: misplaced, and a duplicate
    copied = env.users["EU"][0]
    env.raw(US).put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": copied, **pii(7)}))
    # 2. an EU user caught mid-move to the US: directory 'moving', a copy in both places
    moving = env.users["EU"][1]
    env.raw(EU1).put_item(
        TableName=env.table("directory"),
        Item=to_ddb(
            {
                "pk": moving,
                "home_region": EU1,
                "jurisdiction": "EU",
                "status": "moving",
                "moving_to": US,
            }
        ),
    )
    env.raw(US).put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": moving, **pii(8)}))
    report = env.audit(checks=["data"])
    placement = of(report, "data.pinned_placement", "FAIL")
    assert [(f.details["item"], f.region) for f in placement] == [
        (item(env, "profiles", copied), US)
    ]
    assert placement[0].severity == "critical"
    dups = {f.details["subject"]: f for f in of(report, "data.profile_duplicates", "FAIL")}
    assert set(dups) == {subject(copied), subject(moving)}
    # an in-progress (resumable) move is reported as such, not as a breach
    assert dups[subject(moving)].severity == "medium"
    assert "move in progress" in dups[subject(moving)].reason
    assert dups[subject(moving)].details["moving"] is True
    # personal data in a second jurisdiction is a breach: critical
    assert dups[subject(copied)].severity == "critical"
    assert "move in progress" not in dups[subject(copied)].reason
    assert dups[subject(copied)].details["jurisdictions"] == ["EU", "US"]
    assert not of(report, "data.directory_consistency", "FAIL")


def test_a_directory_entry_pointing_elsewhere(env: Env) -> None:
    wrong = env.users["EU"][0]  # the profile is in eu-central-1, where the ID says
    env.raw(EU1).put_item(
        TableName=env.table("directory"),
        Item=to_ddb(
            {
                "pk": wrong,
                "home_region": US,
                "jurisdiction": "US",
                "status": "active",
            }
        ),
    )
    odd = env.users["US"][0]  # an entry that contradicts itself
    env.raw(EU1).put_item(
        TableName=env.table("directory"),
        Item=to_ddb(
            {
                "pk": odd,
                "home_region": US,
                "jurisdiction": "EU",
                "status": "active",
            }
        ),
    )
    report = env.audit(checks=["data"])
    found = {f.details["item"]: f for f in of(report, "data.directory_consistency", "FAIL")}
    wrong, odd = item(env, "directory", wrong), item(env, "directory", odd)
    assert set(found) == {wrong, odd}
    for f in found.values():
        assert (f.region, f.resource) == (EU1, env.arn(EU1, "directory"))
    # homed in the US by the directory, stored only in the EU: a residency breach
    assert found[wrong].severity == "critical"
    assert "only in eu-central-1" in found[wrong].reason
    assert found[odd].severity == "high"
    assert "does not match" in found[odd].reason
    assert not of(report, "data.pinned_placement", "FAIL")  # ambiguous: reported once, here


def test_a_pii_attribute_in_a_global_table_is_named_never_shown(env: Env) -> None:
    env.raw(EU2).put_item(
        TableName=env.table("content"),
        Item=to_ddb(
            {
                "pk": "post-leak",
                "body": "hi",
                "email": "zq-pii-mark.leak@example.test",
            }
        ),
    )
    report = env.audit(checks=["data.global_pii"])
    found = of(report, "data.global_pii", "FAIL")
    assert len(found) == 1
    f = found[0]
    assert (f.severity, f.region, f.resource) == ("critical", EU2, env.arn(EU2, "content"))
    assert f.details["attribute"] == "email"
    assert f.details["example_items"] == [PN("post-leak", scope=env.table("content"))]
    assert "zq-pii-mark" not in f.model_dump_json()
    # the other global tables and regions pass, and so do the three conflict logs and the
    # lineage table's three replicas
    assert len(of(report, "data.global_pii", "PASS")) == 11


def test_sample_limits_the_items_read(env: Env) -> None:
    for i in range(30):
        env.router.put("content", {"pk": f"bulk-{i}", "body": "x"})
    report = env.audit(checks=["data.global_pii"], sample=5)
    read = {(e.region, e.table): e.items_scanned for e in report.inventory}
    assert read[(EU1, env.table("content"))] == 5
    assert "(a sample)" in of(report, "data.global_pii", "PASS")[0].reason


# --- infrastructure -----------------------------------------------------------------------


def test_pitr_streams_and_deletion_protection_switched_off(env: Env) -> None:
    env.raw(EU2).update_continuous_backups(
        TableName=env.table("profiles"),
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )
    env.raw(EU1).update_table(
        TableName=env.table("content"), StreamSpecification={"StreamEnabled": False}
    )
    env.raw(US).update_table(TableName=env.table("directory"), DeletionProtectionEnabled=False)
    arn = env.raw(EU1).describe_table(TableName=env.table("directory"))["Table"]["TableArn"]
    env.raw(EU1).untag_resource(ResourceArn=arn, TagKeys=["regionkit:policy"])
    report = env.audit(checks=["infra"])
    expect = {
        "infra.pitr": (EU2, "profiles", "high"),
        "infra.streams": (EU1, "content", "high"),
        "infra.deletion_protection": (US, "directory", "medium"),
        "infra.tags": (EU1, "directory", "low"),
    }
    for check, (region, table, severity) in expect.items():
        found = of(report, check, "FAIL")
        assert [(f.region, f.resource, f.severity) for f in found] == [
            (region, env.arn(region, table), severity)
        ], check
    assert "regionkit:policy missing" in of(report, "infra.tags", "FAIL")[0].reason
    assert not of(report, "infra.kms", "FAIL")
    assert not [f for f in report.findings if f.status == "ERROR"]


def test_a_table_recreated_with_defaults_and_a_missing_table(env: Env) -> None:
    log_table = env.table("regionkit-conflicts")
    ddb = env.raw(US)
    ddb.update_table(TableName=log_table, DeletionProtectionEnabled=False)
    ddb.delete_table(TableName=log_table)
    ddb.create_table(  # AWS-owned encryption, no PITR, no stream, no tags, no protection
        TableName=log_table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    content = env.table("content")
    env.raw(EU2).update_table(TableName=content, DeletionProtectionEnabled=False)
    env.raw(EU2).delete_table(TableName=content)
    ddb = env.raw(EU1)  # the AWS-managed aws/dynamodb key instead of the table's own
    ddb.update_table(TableName=log_table, DeletionProtectionEnabled=False)
    ddb.delete_table(TableName=log_table)
    ddb.create_table(
        TableName=log_table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        SSESpecification={"Enabled": True, "SSEType": "KMS"},
    )
    report = env.audit(checks=["infra"])
    arn = env.arn(US, "regionkit-conflicts")
    for check in ("infra.pitr", "infra.streams", "infra.tags", "infra.deletion_protection"):
        found = sorted((f.region, f.resource) for f in of(report, check, "FAIL"))
        assert found == [(EU1, env.arn(EU1, "regionkit-conflicts")), (US, arn)], check
    kms = {f.region: f for f in of(report, "infra.kms", "FAIL")}
    assert set(kms) == {EU1, US}
    assert kms[US].resource == arn and "AWS-owned key" in kms[US].reason
    assert "AWS-managed key" in kms[EU1].reason
    missing = of(report, "infra.table_placement", "FAIL")
    assert [(f.region, f.resource, f.severity) for f in missing] == [
        (EU2, env.arn(EU2, "content"), "high")
    ]
    assert "missing" in missing[0].reason


def test_a_table_in_a_region_outside_the_policy_is_critical(env: Env, tmp_path: Path) -> None:
    from regions.local.clients import make_client
    from regions.local.servers import start_servers

    extra = "ap-south-1"
    servers = start_servers([extra], log_dir=tmp_path)
    try:
        url = servers[extra].url

        def factory(service: str) -> Any:
            return make_client(service, extra, url)

        ddb = factory("dynamodb")
        for logical in ("profiles", "content"):
            ddb.create_table(
                TableName=env.table(logical),
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            )
        ddb.create_table(  # not a regionkit table: ignored
            TableName="someone-elses",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        )
        report = env.audit(
            checks=["infra.table_placement"],
            extra_regions=[extra],
            clients=Clients(env.cluster, {extra: factory}),
        )
    finally:
        for s in servers.values():
            s.stop()
    found = of(report, "infra.table_placement", "FAIL")
    assert sorted((f.region, f.resource, f.severity) for f in found) == [
        (extra, env.arn(extra, "content"), "critical"),
        (extra, env.arn(extra, "profiles"), "critical"),
    ]
    assert all("in no jurisdiction of the policy" in f.reason for f in found)
    assert extra in report.regions
    assert {(e.table, e.kind) for e in report.inventory if e.region == extra} == {
        (env.table("profiles"), "pinned"),
        (env.table("content"), "global"),
        ("someone-elses", "other"),  # inventoried, of no data class, otherwise left alone
    }


# --- operations -----------------------------------------------------------------------------


def test_an_unrepaired_inversion_and_recent_conflicts(env: Env) -> None:
    log = ConflictLog(env.policy, env.cluster.clients, table_prefix=env.prefix)

    def record(kind: str, key: str, repaired: bool, when: datetime) -> ConflictRecord:
        return ConflictRecord(
            conflict_id=f"c-{kind}-{key}",
            table=env.table("content"),
            data_class="content",
            key=key,
            kind=kind,
            winner_version=f"{int(when.timestamp() * 1000):012x}.0000.{EU1}",
            loser_version=f"{int(when.timestamp() * 1000) - 5:012x}.0000.{US}",
            winner_region=EU1,
            loser_region=US,
            resolution="repaired" if repaired else "lww",
            repaired=repaired,
            occurred_at=when,
            detected_at=when,
            detected_in=EU2,
        )

    log.record(EU2, record("inversion", "post-1", False, NOW - timedelta(days=30)))
    log.record(EU2, record("inversion", "post-2", True, NOW - timedelta(days=1)))
    log.record(EU2, record("concurrent", "post-3", False, NOW - timedelta(days=2)))
    report = env.audit(checks=["operations"])
    inv = of(report, "operations.unrepaired_inversions", "FAIL")
    assert [(f.region, f.resource, f.severity, f.details["item"]) for f in inv] == [
        (EU2, env.arn(EU2, "content"), "high", item(env, "content", "post-1"))
    ]
    conflicts = of(report, "operations.conflicts", "FAIL")
    assert [(f.region, f.severity) for f in conflicts] == [(EU2, "info")]
    assert "2 conflicts" in conflicts[0].reason  # the 30-day-old one is outside the window
    assert len(of(report, "operations.conflicts", "PASS")) == 2


def test_stale_missing_and_unreadable_drill_history(env: Env) -> None:
    for f in env.drills.iterdir():
        f.unlink()
    write_drill(env.drills, "fresh", [EU1], NOW - timedelta(days=1))
    write_drill(env.drills, "old", [EU2], NOW - timedelta(days=45))
    write_drill(env.drills, "failed", [US], NOW - timedelta(days=1), verdict="fail")
    (env.drills / "broken.json").write_text("{not json", encoding="utf-8")
    report = env.audit(checks=["operations.drill_recency"])
    by_region = {f.region: f for f in report.findings}
    assert by_region[EU1].status == "PASS"
    assert by_region[EU2].status == "FAIL" and "older than 30 days" in by_region[EU2].reason
    assert by_region[US].status == "FAIL" and "never been drilled" in by_region[US].reason
    errors = of(report, "operations.drill_recency", "ERROR")
    assert [f.resource for f in errors] == ["regionkit:drills/broken.json"]


# --- regions that do not answer --------------------------------------------------------------


class RefusingClients(Clients):
    """Every client of one region raises EndpointConnectionError, like a refused port."""

    def __init__(self, cluster: LocalCluster, down: str) -> None:
        super().__init__(cluster)
        self.down = down

    def client(self, service: str, region: str) -> Any:
        if region == self.down:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url=f"http://{service}.{region}.invalid")
        return super().client(service, region)


def _assert_region_errors(report: AuditReport, region: str) -> None:
    aws_checks = {c.id for c in report.checks} - {"operations.drill_recency"}
    mine = [f for f in report.findings if f.region == region and f.check_id in aws_checks]
    assert mine, "the unreachable region must be reported"
    assert {f.status for f in mine} == {"ERROR"}, [(f.check_id, f.status) for f in mine]
    covered = {f.check_id for f in mine}
    assert covered >= {
        "infra.table_placement",
        "infra.pitr",
        "data.pinned_placement",
        "data.global_pii",
        "operations.conflicts",
    }
    # the other regions were audited normally
    assert any(f.status == "PASS" and f.region != region for f in report.findings)


def test_an_unreachable_region_gives_error_never_pass(env: Env) -> None:
    report = env.audit(clients=RefusingClients(env.cluster, EU2))
    _assert_region_errors(report, EU2)
    assert any("unreachable" in f.reason for f in report.findings if f.region == EU2)
    assert report.failing("high")


def test_a_paused_server_gives_error(env: Env) -> None:
    env.cluster.outage(EU2, "stop")  # SIGSTOP: clients time out
    try:
        report = env.audit(
            checks=["infra.table_placement", "infra.pitr", "data", "operations.conflicts"]
        )
    finally:
        env.cluster.restore(EU2)
    _assert_region_errors(report, EU2)
    assert report.duration_ms < 20_000  # one timeout, then the region is known to be down


# --- point-in-time exports ------------------------------------------------------------------


def _buckets(env: Env) -> None:
    for region in (EU1, EU2, US):
        s3 = env.cluster.clients.client("s3", region)
        try:
            kwargs: dict[str, Any] = {"Bucket": f"audit-{region}"}
            if region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3.create_bucket(**kwargs)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass


def test_export_source_finds_what_the_scan_finds(env: Env) -> None:
    _buckets(env)
    stray = mint_user_id(US)
    env.raw(EU1).put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": stray, **pii(5)}))
    env.raw(US).put_item(
        TableName=env.table("content"),
        Item=to_ddb({"pk": "post-x", "display_name": "Quintessa Vondrakovich X"}),
    )
    scan = env.audit(checks=["data"])
    export = env.audit(
        checks=["data"], source="export", export_bucket="audit-{region}", export_poll_s=0.05
    )

    def digest(r: AuditReport) -> list[tuple[str, str, str, str]]:
        return sorted((f.check_id, f.status, f.region, f.resource) for f in r.findings)

    assert digest(export) == digest(scan)
    assert [f.details["item"] for f in of(export, "data.pinned_placement", "FAIL")] == [
        item(env, "profiles", stray)
    ]
    assert [f.details["attribute"] for f in of(export, "data.global_pii", "FAIL")] == [
        "display_name"
    ]
    read = {(e.region, e.table): (e.items_scanned, e.source) for e in export.inventory}
    assert read[(EU1, env.table("profiles"))] == (3, "export")
    assert read[(US, env.table("content"))] == (1, "export")  # the router wrote the rest in EU


def test_export_reuses_a_given_export_and_reads_its_manifest(env: Env) -> None:
    """moto writes no manifest: plant the documented manifest-summary.json /
    manifest-files.json / data/*.json.gz layout for a real (moto) export ARN, with
    items that are not in the live table, and check the audit read those."""
    import gzip

    _buckets(env)
    ddb, s3 = env.raw(US), env.cluster.clients.client("s3", US)
    table_arn = ddb.describe_table(TableName=env.table("profiles"))["Table"]["TableArn"]
    arn = ddb.export_table_to_point_in_time(
        TableArn=table_arn, S3Bucket=f"audit-{US}", S3Prefix="manual", ExportFormat="DYNAMODB_JSON"
    )["ExportDescription"]["ExportArn"]
    export_id = arn.rsplit("/", 1)[-1]
    base = f"manual/AWSDynamoDB/{export_id}"
    eu_subject = mint_user_id(EU1)
    lines = [
        {"Item": to_ddb({"pk": uid, **pii(i)})}
        for i, uid in enumerate([*env.users["US"], eu_subject])
    ]
    body = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())
    s3.put_object(Bucket=f"audit-{US}", Key=f"{base}/data/part-0000.json.gz", Body=body)
    s3.put_object(
        Bucket=f"audit-{US}",
        Key=f"{base}/manifest-files.json",
        Body=json.dumps(
            {
                "itemCount": len(lines),
                "md5Checksum": "-",
                "etag": "-",
                "dataFileS3Key": f"{base}/data/part-0000.json.gz",
            }
        ).encode()
        + b"\n",
    )
    s3.put_object(
        Bucket=f"audit-{US}",
        Key=f"{base}/manifest-summary.json",
        Body=json.dumps(
            {
                "version": "2020-06-30",
                "exportArn": arn,
                "tableArn": table_arn,
                "s3Bucket": f"audit-{US}",
                "s3Prefix": "manual",
                "itemCount": len(lines),
                "manifestFilesS3Key": f"{base}/manifest-files.json",
                "outputFormat": "DYNAMODB_JSON",
                "exportType": "FULL_EXPORT",
            }
        ).encode(),
    )
    report = env.audit(
        checks=["data.pinned_placement"],
        regions=[US],
        source="export",
        export_arns=[arn],
        export_poll_s=0.05,
    )
    found = of(report, "data.pinned_placement", "FAIL")
    assert [(f.region, f.details["item"]) for f in found] == [
        (US, item(env, "profiles", eu_subject))
    ]
    read = {(e.region, e.table): e.items_scanned for e in report.inventory}
    assert read[(US, env.table("profiles"))] == 2


def test_export_refuses_a_bucket_outside_the_jurisdiction(env: Env) -> None:
    from regions.local.clients import make_client

    for region in (EU1, EU2, US):  # a bucket located in us-east-1, on every server
        s3 = make_client("s3", US, env.cluster.endpoints[region])
        try:
            s3.create_bucket(Bucket="audit-us-only")
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    report = env.audit(
        checks=["data.pinned_placement"],
        source="export",
        export_bucket="audit-us-only",
        export_poll_s=0.05,
    )
    errors = {f.region: f for f in of(report, "data.pinned_placement", "ERROR")}
    assert set(errors) == {EU1, EU2}
    assert all("outside the table's jurisdiction" in f.reason for f in errors.values())
    assert [f.region for f in of(report, "data.pinned_placement", "PASS")] == [US]


# --- evidence and renderers --------------------------------------------------------------------


def test_every_report_format_is_pii_free_and_verifiable(env: Env, tmp_path: Path) -> None:
    import html.parser
    import xml.etree.ElementTree as ET

    from residency.audit import render, verify_report
    from residency.audit.render.ocsf import ocsf_findings

    env.raw(EU2).put_item(
        TableName=env.table("profiles"), Item=to_ddb({"pk": mint_user_id(US), **pii(42)})
    )
    env.raw(EU1).put_item(
        TableName=env.table("content"),
        Item=to_ddb(
            {
                "pk": "post-leak",
                "email": "zq-pii-mark.leak@example.test",
                "phone": "+49 151 7770000",
            }
        ),
    )
    env.raw(EU1).put_item(
        TableName=env.table("directory"),
        Item=to_ddb(
            {"pk": "zq-pii-mark.key@example.test", "home_region": EU1, "jurisdiction": "EU"}
        ),
    )
    report = env.audit()
    assert of(report, "data.pinned_placement", "FAIL")
    assert of(report, "data.global_pii", "FAIL")
    outputs = {
        fmt: render(report, fmt, show_passed=True)
        for fmt in ("terminal", "json", "markdown", "html", "junit", "ocsf")
    }
    for fmt, text in outputs.items():
        for marker in PII_MARKERS:
            assert marker not in text, (fmt, marker)
    # the key that is itself an e-mail address is shown as a keyed pseudonym
    assert PN("zq-pii-mark.key@example.test", scope=env.table("directory")) in outputs["json"]

    # JSON: the digest verifies, and any change breaks it
    data = json.loads(outputs["json"])
    assert verify_report(data, trusted=TRUSTED)
    assert (
        data["policy"]["sha256"]
        == __import__("hashlib").sha256(POLICY_PATH.read_bytes()).hexdigest()
    )
    assert data["tool"] == {
        "name": "regionkit",
        "version": __import__("residency.__about__", fromlist=["x"]).__version__,
    }
    data["findings"][0]["reason"] += " (edited)"
    assert not verify_report(data, trusted=TRUSTED)

    # HTML: a real file, parsed, self-contained
    page = tmp_path / "report.html"
    page.write_text(outputs["html"], encoding="utf-8")

    class Links(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.urls: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            self.urls += [v or "" for k, v in attrs if k in {"src", "href", "action"}]

    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    assert "table" in parser.tags and "style" in parser.tags
    assert "script" not in parser.tags and "link" not in parser.tags
    assert not [u for u in parser.urls if u.startswith(("http:", "https:", "//"))]
    assert "http://" not in outputs["html"] and "https://" not in outputs["html"]
    assert report.report_sha256 in outputs["html"]

    # JUnit: parses; a testcase per finding; failures and errors as such
    root = ET.fromstring(outputs["junit"])
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.findings)
    assert len(root.findall(".//failure")) == report.summary["by_status"]["FAIL"]
    assert len(root.findall(".//error")) == report.summary["by_status"]["ERROR"]
    assert {s.get("name") for s in root.findall("testsuite")} == {c.id for c in report.checks}

    # OCSF: Detection Findings with the required fields
    from residency.audit.render import signed_json_name

    findings = ocsf_findings(report, signed_json=signed_json_name(report))
    assert findings == json.loads(outputs["ocsf"])
    assert len(findings) == len(report.findings)
    sev = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
    for o, f in zip(findings, report.findings, strict=True):
        assert (o["class_uid"], o["category_uid"], o["activity_id"], o["type_uid"]) == (
            2004,
            2,
            1,
            200401,
        )
        assert o["severity_id"] == sev[f.severity] and o["status_id"] == 1
        assert o["status_code"] == f.status and isinstance(o["time"], int)
        assert {"uid", "title", "desc"} <= o["finding_info"].keys()
        assert o["finding_info"]["uid"] == f.uid
        assert o["resources"][0]["uid"] == f.resource
        assert o["metadata"]["product"]["name"] == "regionkit"
        assert o["metadata"]["version"].startswith("1.")
        assert o["remediation"]["desc"] == f.remediation
        if f.region != "global":
            assert o["resources"][0]["region"] == f.region
    misplaced = next(
        o
        for o in findings
        if o["metadata"]["event_code"] == "data.pinned_placement" and o["status_code"] == "FAIL"
    )
    assert misplaced["resources"][0]["type"] == "AWS::DynamoDB::Table"
    assert misplaced["severity"] == "Critical"


def test_progress_reports_every_scanned_table(env: Env) -> None:
    import threading

    from residency.audit import ProgressEvent

    events: list[ProgressEvent] = []
    lock = threading.Lock()

    def on(e: ProgressEvent) -> None:
        with lock:
            events.append(e)

    report = env.audit(checks=["data"], progress=on)
    scanned = {f"{e.region}/{e.table}" for e in report.inventory if e.items_scanned is not None}
    done = {e.key for e in events if e.phase == "scan" and e.done}
    assert scanned <= done
    total = sum(e.advance for e in events if e.phase == "scan")
    assert total == sum(e.items_scanned or 0 for e in report.inventory)


# --- the CLI against the cluster --------------------------------------------------------------


@pytest.mark.slow
def test_cli_audit_run_against_the_cluster(env: Env, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from residency.audit import verify_report

    regionkit = Path(sys.executable).parent / "regionkit"
    environ = {
        **os.environ,
        "REGIONKIT_MODE": "local",
        "REGIONKIT_ENDPOINTS": json.dumps(env.cluster.endpoints),
        "REGIONKIT_TABLE_PREFIX": env.prefix,
        "REGIONKIT_DRILL_HISTORY": str(env.drills),
        "REGIONKIT_STATE_FILE": str(tmp_path / "no-state.json"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(regionkit), "--policy", str(POLICY_PATH), "audit", "run", "--no-progress", *args],
            cwd=tmp_path,
            env=environ,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        return proc

    out = tmp_path / "clean.json"
    proc = run("--format", "json", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    from residency.signing import LocalSigner

    key = LocalSigner.load_or_create(tmp_path / ".regionkit" / "signing-key.pem")
    assert verify_report(data, trusted=[key.public_key_pem()])  # the key the tool created
    assert data["summary"]["by_status"]["ERROR"] == 0
    assert data["account"] == ACCOUNT

    env.raw(EU2).update_continuous_backups(  # a high-severity FAIL
        TableName=env.table("content"),
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )
    proc = run("--format", "markdown", "--checks", "infra.pitr")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert env.arn(EU2, "content") in proc.stdout
    assert run("--checks", "infra.pitr", "--fail-on", "critical").returncode == 0
    assert run("--checks", "infra.pitr", "--regions", "eu-central-1").returncode == 0


def test_access_denied_is_an_error_with_its_reason(env: Env) -> None:
    from botocore.exceptions import ClientError

    class Denied:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "describe_continuous_backups":

                def deny(**kw: Any) -> Any:
                    raise ClientError(
                        {"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                        "DescribeContinuousBackups",
                    )

                return deny
            return getattr(self.inner, name)

    class DeniedClients(Clients):
        def client(self, service: str, region: str) -> Any:
            inner = super().client(service, region)
            return Denied(inner) if service == "dynamodb" and region == US else inner

    report = env.audit(checks=["infra.pitr"], clients=DeniedClients(env.cluster))
    errors = of(report, "infra.pitr", "ERROR")
    assert sorted(f.resource for f in errors) == sorted(
        env.arn(US, t)
        for t in ("profiles", "content", "directory", "regionkit-conflicts", "regionkit-lineage")
    )
    assert all("access denied" in f.reason and "AccessDeniedException" in f.reason for f in errors)
    assert {f.region for f in of(report, "infra.pitr", "PASS")} == {EU1, EU2}


# --- issue 17: evidence an auditor can rely on ----------------------------------------------

# Distinctive values planted in every position a value can hide in; none may appear in any
# report format or any log line.
MARKS = {
    "nested": "zq-nest-mark@example.test",
    "capital": "zq-cap-mark@example.test",
    "unnamed": "zq-contact-mark@example.test",
    "phone": "+44 20 7946 0958",
    "listed": "+1 415 555 0132",
    "key": "zq-key-mark@example.test",
    "gsi": "+49 30 901820",
    "home": "+49 151 7771234",
    "status": "zq-status-mark@example.test",
    "jurisdiction": "Vondrakovich Jurisdiction",
    "conflict-key": "zq-conflict-mark@example.test",
    "bad-record": "zq-badrecord-mark@example.test",
    "pinned-key": "zq-pinned-mark@example.test",
    "pinned-gsi": "zq-pinkey-mark@example.test",
}
MARK_PROBES = (
    "zq-nest-mark",
    "zq-cap-mark",
    "zq-contact-mark",
    "7946 0958",
    "7946",
    "555 0132",
    "zq-key-mark",
    "901820",
    "7771234",
    "zq-status-mark",
    "Vondrakovich",
    "zq-conflict-mark",
    "zq-badrecord-mark",
    "zq-pinned-mark",
    "zq-pinkey-mark",
)


def _plant_everywhere(env: Env) -> None:
    content = env.table("content")
    ddb = env.raw(EU1)
    ddb.update_table(  # a GSI whose key holds a phone number
        TableName=content,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "handle", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "by_handle",
                    "KeySchema": [{"AttributeName": "handle", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            }
        ],
    )
    ddb.put_item(
        TableName=content,
        Item=to_ddb(
            {
                "pk": "post-planted",
                "body": "hello",
                "author": {"id": "u-1", "email": MARKS["nested"]},  # PII name, nested
                "Email": MARKS["capital"],  # PII name, capitalised
                "contact": MARKS["unnamed"],  # PII value under an ordinary name
                "tags": ["fun", MARKS["listed"]],  # PII value in a list
                "note": f"call {MARKS['phone']} after six",  # PII value inside text
                "handle": MARKS["gsi"],  # a GSI key holding a phone number
            }
        ),
    )
    ddb.put_item(  # a global item whose partition key is an e-mail address
        TableName=content, Item=to_ddb({"pk": MARKS["key"], "body": "x"})
    )
    directory = env.table("directory")
    for i, (field_name, value) in enumerate(
        (("home_region", MARKS["home"]), ("status", MARKS["status"]))
    ):
        entry = {"pk": mint_user_id(EU1), "home_region": EU1, "jurisdiction": "EU"}
        entry[field_name] = value
        if i == 1:
            entry["jurisdiction"] = MARKS["jurisdiction"]
        ddb.put_item(TableName=directory, Item=to_ddb(entry))
    log = env.table("regionkit-conflicts")
    ddb.put_item(  # a well-formed record about an item keyed by an e-mail address
        TableName=log,
        Item=to_ddb(
            ConflictRecord(
                conflict_id="c" * 32,
                table=content,
                data_class="content",
                key=MARKS["conflict-key"],
                kind="concurrent",
                winner_version="0000000000aa.0000.eu-central-1",
                loser_version="0000000000ab.0000.eu-west-1",
                winner_region=EU1,
                loser_region=EU2,
                resolution="lww",
                occurred_at=NOW - timedelta(days=1),
                detected_at=NOW - timedelta(days=1),
                detected_in=EU1,
            ).to_item()
        ),
    )
    ddb.put_item(  # a malformed record: an unknown field and a wrong type, with a value
        TableName=log,
        Item=to_ddb({"pk": MARKS["bad-record"], "kind": 12, "extra": MARKS["bad-record"]}),
    )
    env.raw(US).put_item(  # a pinned item keyed by an e-mail address
        TableName=env.table("profiles"), Item=to_ddb({"pk": MARKS["pinned-key"], **pii(50)})
    )
    env.raw(US).update_table(  # a pinned table's index keyed by an e-mail address
        TableName=env.table("profiles"),
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "contact_key", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "by_contact",
                    "KeySchema": [{"AttributeName": "contact_key", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            }
        ],
    )
    env.raw(US).put_item(
        TableName=env.table("profiles"),
        Item=to_ddb({"pk": mint_user_id(US), "contact_key": MARKS["pinned-gsi"], **pii(51)}),
    )


def test_no_value_read_from_an_item_reaches_a_finding_a_format_or_a_log(
    env: Env, tmp_path: Path
) -> None:
    import structlog
    from junitparser import JUnitXml
    from py_ocsf_models.events.findings.detection_finding import DetectionFinding

    from residency.audit import render
    from residency.audit.model import SCHEMA_PATH

    _plant_everywhere(env)
    with structlog.testing.capture_logs() as logs:
        report = env.audit(deep=True)
    outputs = {fmt: render(report, fmt, show_passed=True) for fmt in FORMATS}
    everything = {**outputs, "logs": repr(logs), "repr": repr(report)}
    for where, text in everything.items():
        # Digit probes can occur by chance inside a digest, a signature or a pseudonym
        # (hex and base64 runs, random per run): those tokens are not values read.
        opaque = re.sub(r"[A-Za-z0-9+/=_-]{20,}", "#", text)
        for probe in MARK_PROBES:
            assert probe not in (opaque if probe.replace(" ", "").isdigit() else text), (
                where,
                probe,
            )

    # ... and yet every planted value was found, by name, by value or as a key
    pii_found = {
        (f.region, f.resource.rsplit("/", 1)[-1], f.details["attribute"], f.details["match"])
        for f in of(report, "data.global_pii", "FAIL")
    }
    content, log = env.table("content"), env.table("regionkit-conflicts")
    assert {
        (EU1, content, "author.email", "name"),
        (EU1, content, "Email", "name"),
        (EU1, content, "contact", "value"),
        (EU1, content, "tags[]", "value"),
        (EU1, content, "note", "value"),
        (EU1, content, "handle", "key"),
        (EU1, content, "pk", "key"),
        (EU1, log, "key", "key"),  # the conflict log's item keys: checked on every record
    } <= pii_found
    assert all(f.severity == "critical" for f in of(report, "data.global_pii", "FAIL"))
    by_attr = {f.details["attribute"]: f for f in of(report, "data.global_pii", "FAIL")}
    assert "a value shaped like an e-mail address" in by_attr["contact"].reason
    assert "a value shaped like a phone number" in by_attr["handle"].reason
    # the directory entries are judged, their values described by kind
    reasons = " ".join(f.reason for f in of(report, "data.directory_consistency", "FAIL"))
    assert "a value shaped like a phone number" in reasons
    assert "a value shaped like an e-mail address" in reasons
    # the unparsable conflict-log record is one ERROR; the rest of the log was read
    bad = of(report, "operations.conflicts", "ERROR")
    assert [(f.region, f.details["item"]) for f in bad] == [
        (EU1, PN(MARKS["bad-record"], scope=log))
    ]
    assert any(
        f.region == EU1 and "1 conflicts" in f.reason for f in of(report, "operations.conflicts")
    )
    # the pinned item keyed by an e-mail address is named by pseudonym and kind
    odd = [
        f
        for f in of(report, "data.pinned_placement", "FAIL")
        if f.region == US and "item" in f.details
    ]
    assert odd and "a value shaped like an e-mail address" in odd[0].reason
    # a pinned table's index key holding an e-mail address: named by attribute and kind
    keyed = [
        f
        for f in of(report, "data.pinned_placement", "FAIL")
        if f.details.get("attribute") == "contact_key"
    ]
    assert [(f.region, f.severity, f.details["kind"]) for f in keyed] == [(US, "medium", "email")]

    # every machine-readable format validates against its published schema
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(outputs["json"]), schema)
    ocsf = json.loads(outputs["ocsf"])
    assert len(ocsf) == len(report.findings) > 0
    for o in ocsf:
        DetectionFinding.model_validate(o)
    junit = tmp_path / "r.xml"
    junit.write_text(outputs["junit"], encoding="utf-8")
    xml = JUnitXml.fromfile(str(junit))
    assert sum(s.tests for s in xml) == len(report.findings)
    assert sum(s.failures for s in xml) == report.summary["by_status"]["FAIL"]


FORMATS = ("terminal", "json", "markdown", "html", "junit", "ocsf")


def _copy_table(env: Env, region: str, name: str, tags: dict[str, str] | None) -> Any:
    ddb = env.raw(region)
    arn = ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )["TableDescription"]["TableArn"]
    if tags:
        ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return ddb


def test_a_renamed_copy_of_a_pinned_table_is_found_and_scanned(env: Env) -> None:
    eu_user = env.users["EU"][0]
    tagged = env.prefix + "profiles-eu-copy"
    ddb = _copy_table(
        env,
        US,
        tagged,
        {
            "regionkit:data-class": "profile",
            "regionkit:jurisdiction": "EU",
            "regionkit:policy": "x",
        },
    )
    ddb.put_item(TableName=tagged, Item=to_ddb({"pk": eu_user, **pii(60)}))
    # no tag and an unrelated name: its keys and attribute names give it away
    backup = env.prefix + "bkp-2026"
    ddb = _copy_table(env, US, backup, None)
    ddb.put_item(TableName=backup, Item=to_ddb({"pk": env.users["EU"][1], **pii(61)}))
    try:
        report = env.audit(checks=["infra.table_placement", "data"])
    finally:
        for name in (tagged, backup):
            env.raw(US).delete_table(TableName=name)
    inv = {e.table: e for e in report.inventory if e.region == US}
    assert inv[tagged].copy_of == "profile" and "tags" in inv[tagged].classified_by
    assert "name" in inv[tagged].classified_by
    assert inv[backup].copy_of == "profile"
    assert inv[backup].classified_by == ["key-schema", "sample"]
    placement = {f.resource: f for f in of(report, "infra.table_placement", "FAIL")}
    for name in (tagged, backup):
        arn = f"arn:aws:dynamodb:{US}:{ACCOUNT}:table/{name}"
        assert placement[arn].severity in {"critical", "high"}
    assert placement[f"arn:aws:dynamodb:{US}:{ACCOUNT}:table/{tagged}"].severity == "critical"
    misplaced = {
        (f.resource.rsplit("/", 1)[-1], f.details["subject"], f.severity)
        for f in of(report, "data.pinned_placement", "FAIL")
    }
    assert misplaced == {
        (tagged, subject(eu_user), "critical"),
        (backup, subject(env.users["EU"][1]), "critical"),
    }


def test_tables_in_extra_regions_are_data_scanned(env: Env, tmp_path: Path) -> None:
    from regions.local.clients import make_client
    from regions.local.servers import start_servers

    extra = "ca-central-1"
    servers = start_servers([extra], log_dir=tmp_path)
    try:
        url = servers[extra].url

        def factory(service: str) -> Any:
            return make_client(service, extra, url)

        ddb = factory("dynamodb")
        ddb.create_table(
            TableName=env.table("profiles"),
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        )
        eu_user = env.users["EU"][0]
        ddb.put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": eu_user, **pii(70)}))
        report = env.audit(
            checks=["data.pinned_placement"],
            extra_regions=[extra],
            clients=Clients(env.cluster, {extra: factory}),
        )
    finally:
        for s in servers.values():
            s.stop()
    found = [f for f in of(report, "data.pinned_placement", "FAIL") if f.region == extra]
    assert [(f.severity, f.details["subject"]) for f in found] == [("critical", subject(eu_user))]
    assert "in no jurisdiction of the policy" in found[0].reason
    evidence = {j.jurisdiction: j for j in report.transfer_evidence}
    assert [(d.region, d.items, d.inside) for d in evidence["EU"].found if not d.inside] == [
        (extra, 1, False)
    ]


def test_an_unreadable_region_makes_only_unknowable(env: Env) -> None:
    wrong = env.users["EU"][0]  # profile in eu-central-1; the directory says US
    env.raw(EU1).put_item(
        TableName=env.table("directory"),
        Item=to_ddb({"pk": wrong, "home_region": US, "jurisdiction": "US", "status": "active"}),
    )
    report = env.audit(checks=["data"], clients=RefusingClients(env.cluster, EU2))
    found = of(report, "data.directory_consistency", "FAIL")
    assert len(found) == 1
    assert "only in" not in found[0].reason
    assert "in eu-central-1; unknown in eu-west-1 (unreadable or sampled)" in found[0].reason
    assert found[0].severity == "critical"
    passed = of(report, "data.profile_duplicates", "PASS")
    assert passed and all("unknown in eu-west-1" in f.reason for f in passed)


def test_tombstones_and_moves_in_progress_are_not_breaches(env: Env) -> None:
    mover = env.users["EU"][0]
    # moved to the US: the profile is there, a "moved" tombstone stays in the old home
    env.raw(EU1).put_item(
        TableName=env.table("directory"),
        Item=to_ddb({"pk": mover, "home_region": US, "jurisdiction": "US", "moved_from": EU1}),
    )
    env.raw(EU1).put_item(
        TableName=env.table("profiles"),
        Item=to_ddb({"pk": mover, "rk_del": "moved", "rk_to": US, "rk_v": "0000000000aa.0000.x"}),
    )
    env.raw(US).put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": mover, **pii(80)}))
    # an erased user: only a tombstone is left
    erased = env.users["EU"][1]
    env.raw(EU1).put_item(
        TableName=env.table("profiles"),
        Item=to_ddb({"pk": erased, "rk_del": "erased", "rk_exp": 1900000000}),
    )
    report = env.audit(checks=["data"])
    bad = [(f.check_id, f.region, f.reason) for f in not_passing(report)]
    assert bad == []
    passed = [
        f
        for f in of(report, "data.pinned_placement", "PASS")
        if f.resource == env.arn(EU1, "profiles")
    ]
    assert "2 of them tombstones" in passed[0].reason


def test_transfer_evidence_says_where_each_jurisdictions_data_is(env: Env) -> None:
    stray = env.users["EU"][0]
    env.raw(US).put_item(TableName=env.table("profiles"), Item=to_ddb({"pk": stray, **pii(90)}))
    report = env.audit(checks=["data"])
    ev = {j.jurisdiction: j for j in report.transfer_evidence}
    eu, us = ev["EU"], ev["US"]
    assert [(f.region, f.items, f.inside) for f in eu.found] == [(EU1, 2, True), (US, 1, False)]
    assert eu.outside == 1 and eu.regions_without == [EU2]
    assert [(f.region, f.items, f.inside) for f in us.found] == [(US, 1, True)]
    assert us.outside == 0 and us.regions_without == [EU1, EU2]
    assert eu.regions_unknown == [] and eu.law == "GDPR"
    assert eu.last_inside_drill is not None
    assert eu.last_inside_drill.drill_id in {"drill-eu-central-1", "drill-eu-west-1"}
    assert us.last_inside_drill is not None and us.last_inside_drill.regions == [US]
    from residency.audit import render

    md = render(report, "markdown")
    assert "## Transfer evidence" in md and "**NO**" in md
    # every format carries it: HTML and the terminal a section, JUnit properties, OCSF unmapped
    assert "Transfer evidence" in render(report, "html")
    assert "transfer evidence" in render(report, "terminal")
    assert 'name="transfer_evidence.EU"' in render(report, "junit")
    ocsf = json.loads(render(report, "ocsf"))
    assert ocsf[0]["unmapped"]["transfer_evidence"]["EU"]["outside"] == 1
    assert json.loads(render(report, "json"))["transfer_evidence"][0]["jurisdiction"] == "EU"
