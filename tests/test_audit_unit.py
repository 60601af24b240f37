"""The audit without a cluster: the registry, the report digest, the export reader, key
safety, policy-only audits (no AWS call at all), worker failures, and the CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from residency.audit import (
    AuditReport,
    CheckMeta,
    all_checks,
    iam_policy,
    run_audit,
    select_checks,
    severity_at_least,
    verify_report,
)
from residency.audit.export import ExportFailed, iter_export_items, wait_for_export
from residency.audit.registry import Check, check
from residency.audit.safety import clean_text, item_pseudonym
from residency.errors import ConfigError, UnknownName, UnknownRegion
from residency.policy import Policy, load_policy
from residency.pseudonym import Pseudonymizer
from residency.signing import LocalSigner

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "policies" / "minimal.yaml"
REGIONKIT = Path(sys.executable).parent / "regionkit"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(MINIMAL)


class NoAws:
    """Fails the test on any AWS call."""

    def client(self, service: str, region: str) -> Any:
        raise AssertionError(f"unexpected AWS call ({service}, {region})")


# --- the registry ------------------------------------------------------------------------


def test_every_check_is_registered_with_valid_metadata() -> None:
    checks = all_checks()
    ids = [c.id for c in checks]
    assert len(ids) == len(set(ids)) >= 16
    families = {c.meta.family for c in checks}
    assert families == {"policy", "infra", "data", "operations", "subjects"}
    for c in checks:
        assert c.id.split(".")[0] == c.fn.__module__.rsplit(".", 1)[-1]
        assert c.meta.example.startswith("regionkit ")
        assert c.meta.summary
        assert c.meta.severity in {"critical", "high", "medium", "low", "info"}
    expected = {
        "policy.valid",
        "policy.jurisdiction_homes",
        "policy.targets",
        "infra.table_placement",
        "infra.replica_sets",
        "infra.streams",
        "infra.pitr",
        "infra.kms",
        "infra.deletion_protection",
        "infra.tags",
        "data.pinned_placement",
        "data.profile_duplicates",
        "data.directory_consistency",
        "data.global_pii",
        "operations.conflicts",
        "operations.unrepaired_inversions",
        "operations.drill_recency",
    }
    assert expected <= set(ids)


def _meta(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "infra.example",
        "title": "An example",
        "severity": "low",
        "rationale": "Because it matters.",
        "remediation": "Do the right thing.",
        "permissions": ("dynamodb:DescribeTable",),
        "doc": "Checks a thing.\n\nExample::\n\n    regionkit audit run --checks infra.example\n",
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    "over",
    [
        {"colour": "red"},  # extra="forbid"
        {"severity": "severe"},
        {"id": "infra.Bad-Id"},
        {"id": "network.example"},
        {"permissions": ("dynamodb:*",)},
        {"permissions": ("Scan",)},
        {"doc": "No example in this docstring at all."},
        {"title": "two\nlines"},
    ],
)
def test_check_metadata_is_validated(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CheckMeta(**_meta(**over))


def test_a_check_id_must_match_its_family_module() -> None:
    def fn(ctx: Any) -> Iterator[Any]:
        """Doc.

        Example::

            regionkit audit run
        """
        yield from ()

    fn.__module__ = "residency.audit.checks.infra"
    with pytest.raises(ValueError, match=r"must start with 'infra\.'"):
        check(
            id="data.misfiled",
            title="Misfiled",
            severity="low",
            rationale="A rationale.",
            remediation="A remediation.",
            permissions=[],
        )(fn)


def test_select_checks_by_id_and_family() -> None:
    assert [c.id for c in select_checks(["infra.pitr"])] == ["infra.pitr"]
    fam = select_checks(["data"])
    assert {c.meta.family for c in fam} == {"data"} and len(fam) == 4
    with pytest.raises(UnknownName) as err:
        select_checks(["infra.nope"])
    assert isinstance(err.value, ConfigError)
    assert "infra.pitr" in str(err.value)


def test_the_iam_policy_is_the_union_of_the_checks_permissions(policy: Policy) -> None:
    doc = iam_policy(all_checks())
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert {
        "dynamodb:ListTables",
        "dynamodb:DescribeTable",
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:ListTagsOfResource",
        "dynamodb:Scan",
        "dynamodb:Query",
        "kms:DescribeKey",
        "kms:ListAliases",
        "sts:GetCallerIdentity",
        "ec2:DescribeRegions",
        "cloudwatch:DescribeAlarms",
    } == actions
    assert not any("*" in a for a in actions)
    assert "dynamodb:PutItem" not in actions  # the audit only reads
    with pytest.raises(ConfigError, match="export bucket"):
        iam_policy(all_checks(), export=True, policy=policy)  # S3 on "*" is never offered
    export = iam_policy(
        all_checks(), export=True, policy=policy, table_prefix="p-", export_bucket="ex-{region}"
    )
    s3 = {s["Sid"]: s for s in export["Statement"] if s["Sid"].startswith("RegionkitAuditExport")}
    assert s3["RegionkitAuditExportBucket"]["Resource"] == "arn:aws:s3:::ex-*"
    assert s3["RegionkitAuditExportObjects"]["Resource"] == "arn:aws:s3:::ex-*/*"
    assert "s3:ListBucket" in s3["RegionkitAuditExportBucket"]["Action"]
    assert "s3:GetObject" in s3["RegionkitAuditExportObjects"]["Action"]
    assert all(s["Resource"] != "*" for s in export["Statement"] if "s3:GetObject" in s["Action"])
    gov = iam_policy(all_checks(), policy=policy, partition="aws-us-gov")
    resources = [r for s in gov["Statement"] for r in [s["Resource"]] if r != "*"]
    flat = [x for r in resources for x in (r if isinstance(r, list) else [r])]
    assert flat and all(x.startswith("arn:aws-us-gov:") for x in flat)
    actions = {a for s in export["Statement"] for a in s["Action"]}
    assert {
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:DescribeExport",
        "s3:GetObject",
        "s3:GetBucketLocation",
    } <= actions
    tables = next(s for s in export["Statement"] if s["Sid"] == "RegionkitAuditTables")
    assert "arn:aws:dynamodb:*:*:table/p-profiles" in tables["Resource"]
    assert "arn:aws:dynamodb:*:*:table/p-profiles/export/*" in tables["Resource"]
    # classing every table (a renamed copy has no name known in advance) needs these on all
    inventory = next(s for s in export["Statement"] if s["Sid"] == "RegionkitAuditInventory")
    assert inventory["Action"] == [
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:DescribeExport",
        "dynamodb:DescribeTable",
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:ListTagsOfResource",
        "dynamodb:Scan",
    ]
    assert inventory["Resource"] == [
        "arn:aws:dynamodb:*:*:table/*",
        "arn:aws:dynamodb:*:*:table/*/export/*",
    ]
    no_export = iam_policy(all_checks(), policy=policy)
    inventory = next(s for s in no_export["Statement"] if s["Sid"] == "RegionkitAuditInventory")
    assert "dynamodb:ExportTableToPointInTime" not in inventory["Action"]
    assert inventory["Resource"] == "arn:aws:dynamodb:*:*:table/*"
    data_only = iam_policy(select_checks(["data"]), policy=policy)
    assert "RegionkitAuditInventory" not in {s["Sid"] for s in data_only["Statement"]}
    only_pitr = iam_policy(select_checks(["infra.pitr"]))
    assert {a for s in only_pitr["Statement"] for a in s["Action"]} == {
        "dynamodb:ListTables",
        "dynamodb:DescribeTable",
        "dynamodb:DescribeContinuousBackups",
        "sts:GetCallerIdentity",
    }


def test_severity_order() -> None:
    assert severity_at_least("critical", "high")
    assert severity_at_least("high", "high")
    assert not severity_at_least("medium", "high")
    assert severity_at_least("info", "info") and not severity_at_least("info", "low")


# --- policy-only audits, the digest, broken checks ---------------------------------------------


def test_a_policy_only_audit_makes_no_aws_call(policy: Policy) -> None:
    report = run_audit(policy, NoAws(), policy_path=MINIMAL, checks=["policy"])
    assert {f.check_id for f in report.findings} == {
        "policy.valid",
        "policy.jurisdiction_homes",
        "policy.targets",
        "policy.failover_capacity",
    }
    assert report.account == "unknown"
    assert report.failing("low") == []
    assert report.inventory == []


def test_the_report_digest_and_signature_follow_the_documented_recipe(
    policy: Policy, tmp_path: Path
) -> None:
    import base64

    from cryptography.hazmat.primitives import serialization

    signer = LocalSigner.load_or_create(tmp_path / "key.pem")
    trusted = [signer.public_key_pem()]
    report = run_audit(policy, NoAws(), policy_path=MINIMAL, checks=["policy"], signer=signer)
    data = json.loads(json.dumps(report.to_dict()))
    claimed, sig = data.pop("report_sha256"), data.pop("signature")
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(body.encode("utf-8")).digest()
    assert digest.hex() == claimed == sig["digest_sha256"]
    # the recipe with nothing but `cryptography`: Ed25519 over the 32 digest bytes
    public = serialization.load_pem_public_key(sig["public_key"].encode())
    public.verify(base64.b64decode(sig["value"]), digest)  # type: ignore[union-attr,call-arg]
    assert report.verify(trusted)
    assert not report.verify()  # a valid signature by a key nobody trusts is not enough
    assert "not a trusted key" in report.verify().reason
    data["report_sha256"], data["signature"] = claimed, sig
    assert verify_report(data, trusted=trusted)
    assert AuditReport.model_validate(report.to_dict()).verify(trusted)  # a round trip keeps it
    assert report.policy.sha256 == hashlib.sha256(MINIMAL.read_bytes()).hexdigest()

    # an edit is caught; so is an edit whose digest was recomputed
    edited = json.loads(json.dumps(data))
    edited["policy"]["sha256"] = "0" * 64
    assert not verify_report(edited, trusted=trusted)
    edited.pop("report_sha256")
    edited.pop("signature")
    rehashed = hashlib.sha256(
        json.dumps(edited, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    edited["report_sha256"] = rehashed
    edited["signature"] = {**sig, "digest_sha256": rehashed}
    result = verify_report(edited, trusted=trusted)
    assert not result and "does not match" in result.reason
    # re-signed by another key: valid arithmetic, untrusted key
    from residency.signing import sign

    forged_body = {k: v for k, v in edited.items() if k not in {"report_sha256", "signature"}}
    forged = sign(forged_body, LocalSigner.generate())
    edited["signature"] = forged.model_dump()
    result = verify_report(edited, trusted=trusted)
    assert not result and result.signature_valid and not result.trusted
    # no signature at all
    data.pop("signature")
    assert not verify_report(data, trusted=trusted)


def test_the_local_signing_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    import stat

    path = tmp_path / "sub" / "key.pem"
    first = LocalSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = LocalSigner.load_or_create(path)
    assert first.key_id == again.key_id and first.key_id.startswith("sha256:")
    assert "PRIVATE" not in repr(first) and "PRIVATE" not in first.public_key_pem()


def test_an_invalid_or_drifted_policy_fails_policy_valid(policy: Policy, tmp_path: Path) -> None:
    data = policy.model_dump(mode="json")
    data["jurisdictions"]["US"]["home_regions"] = ["eu-west-1"]  # outside the jurisdiction
    broken = Policy.model_validate(data, context={"skip_semantics": True})
    path = tmp_path / "broken.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    report = run_audit(broken, NoAws(), policy_path=path, checks=["policy"])
    valid = [f for f in report.findings if f.check_id == "policy.valid"]
    assert valid and {f.status for f in valid} == {"FAIL"}
    assert any("jurisdictions.US.home_regions" in f.reason for f in valid)
    homes = [
        f
        for f in report.findings
        if f.check_id == "policy.jurisdiction_homes" and f.status == "FAIL"
    ]
    assert [f.resource for f in homes] == ["regionkit:policy/minimal/jurisdictions/US"]
    # the file is fine, but the policy the audit was handed is not the file's
    drifted = policy.model_copy(update={"description": "edited in memory"})
    report = run_audit(drifted, NoAws(), policy_path=MINIMAL, checks=["policy.valid"])
    assert [f.status for f in report.findings] == ["FAIL"]
    assert "differs from the file" in report.findings[0].reason


def test_a_check_that_raises_is_an_error_finding_not_a_crash(policy: Policy) -> None:
    from residency.audit.context import AuditContext
    from residency.audit.registry import CheckMeta
    from residency.audit.runner import _run_check

    def boom(ctx: Any) -> Iterator[Any]:
        yield from ()
        raise RuntimeError("the check has a bug")

    meta = CheckMeta(**_meta(id="infra.boom"))
    ctx = AuditContext.__new__(AuditContext)
    ctx.options = type("O", (), {"progress": None})()
    findings = _run_check(ctx, Check(meta, boom))
    assert [(f.status, f.severity, f.check_id) for f in findings] == [
        ("ERROR", "low", "infra.boom")
    ]
    assert "RuntimeError" in findings[0].reason


def test_bad_arguments_are_config_errors(policy: Policy) -> None:
    with pytest.raises(UnknownRegion):
        run_audit(policy, NoAws(), policy_path=MINIMAL, regions=["ap-nowhere-9"])
    with pytest.raises(UnknownRegion):
        run_audit(policy, NoAws(), policy_path=MINIMAL, extra_regions=["xx-nowhere-1"])
    with pytest.raises(ConfigError, match="export"):
        run_audit(policy, NoAws(), policy_path=MINIMAL, source="export")
    with pytest.raises(ConfigError, match="sample"):
        run_audit(policy, NoAws(), policy_path=MINIMAL, sample=0)
    with pytest.raises(ConfigError):
        run_audit(policy, NoAws(), policy_path=ROOT / "no-such-policy.yaml", checks=["policy"])


# --- keys and messages ----------------------------------------------------------------------


def test_items_are_named_by_keyed_pseudonyms_that_cannot_be_confirmed_by_guessing() -> None:
    key = Pseudonymizer(bytes(range(32)))
    other = Pseudonymizer(bytes(range(1, 33)))
    email = {"S": "jane.doe@example.com"}
    shown = item_pseudonym(key, "content", email)
    assert shown.startswith("pn-") and len(shown) == 27
    assert "jane" not in shown
    assert shown == item_pseudonym(key, "content", email)  # stable: operators can find it
    assert shown != item_pseudonym(other, "content", email)  # keyed: a guess cannot be checked
    assert shown != item_pseudonym(key, "profiles", email)  # scoped to the table
    # an unkeyed hash of the guess does not match
    assert hashlib.sha256(b"jane.doe@example.com").hexdigest()[:24] not in shown
    assert item_pseudonym(key, "t", {"S": "a"}, {"N": "1"}) == key("a / 1", scope="t")


def test_error_reasons_are_built_by_regionkit_never_from_a_library_message() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError
    from pydantic import BaseModel

    from residency.audit.clients import error_reason

    secret = "zq-secret-value@example.test"
    err = ClientError(
        {"Error": {"Code": "ValidationException", "Message": f"bad key {secret}"}}, "Scan"
    )
    assert error_reason(err) == "failed: ValidationException in Scan (ClientError)"

    class M(BaseModel):
        n: int

    try:
        M.model_validate({"n": secret})
    except ValidationError as exc:
        assert secret in str(exc)  # pydantic quotes its input...
        assert secret not in error_reason(exc)  # ...regionkit does not
    down = EndpointConnectionError(endpoint_url="http://x.invalid")
    assert error_reason(down).startswith("unreachable")


def test_error_text_is_scrubbed() -> None:
    text = clean_text("ValidationException: bad value jane.doe@example.com or +49 151 2345 6789")
    assert "jane.doe" not in text and "2345" not in text
    long = clean_text("x" * 1000)
    assert len(long) == 500


# --- the export reader (in-process moto S3) ----------------------------------------------------


@pytest.fixture
def s3() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="exports")
        yield client


def _data(items: list[dict[str, Any]]) -> bytes:
    return gzip.compress("".join(json.dumps({"Item": i}) + "\n" for i in items).encode())


def _items(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"pk": {"S": f"k{i}"}, "n": {"N": str(i)}} for i in range(start, start + n)]


def _desc(prefix: str, export_id: str = "01700000000000-abcdef12", **extra: Any) -> dict[str, Any]:
    return {
        "ExportArn": f"arn:aws:dynamodb:us-east-1:123456789012:table/t/export/{export_id}",
        "S3Bucket": "exports",
        "S3Prefix": prefix,
        **extra,
    }


def test_export_reader_follows_the_documented_manifests(s3: Any) -> None:
    base = "audit/AWSDynamoDB/01700000000000-abcdef12"
    for part, rows in (("a", _items(3)), ("b", _items(2, 3)), ("empty", [])):
        s3.put_object(Bucket="exports", Key=f"{base}/data/{part}.json.gz", Body=_data(rows))
    files = "".join(
        json.dumps({"itemCount": n, "dataFileS3Key": f"{base}/data/{p}.json.gz"}) + "\n"
        for p, n in (("a", 3), ("b", 2), ("empty", 0))
    )
    s3.put_object(Bucket="exports", Key=f"{base}/manifest-files.json", Body=files.encode())
    s3.put_object(
        Bucket="exports",
        Key=f"{base}/manifest-summary.json",
        Body=json.dumps(
            {"itemCount": 5, "manifestFilesS3Key": f"{base}/manifest-files.json"}
        ).encode(),
    )
    got = [i["pk"]["S"] for i in iter_export_items(s3, _desc("audit"))]
    assert got == ["k0", "k1", "k2", "k3", "k4"]
    assert len(list(iter_export_items(s3, _desc("audit"), limit=2))) == 2
    # ExportManifest from DescribeExport is used when present
    desc = _desc("audit", "other-id", ExportManifest=f"{base}/manifest-summary.json")
    assert len(list(iter_export_items(s3, desc))) == 5


def test_export_reader_detects_a_short_export(s3: Any) -> None:
    base = "p/AWSDynamoDB/01700000000000-abcdef12"
    s3.put_object(Bucket="exports", Key=f"{base}/data/a.json.gz", Body=_data(_items(2)))
    s3.put_object(
        Bucket="exports",
        Key=f"{base}/manifest-files.json",
        Body=json.dumps({"dataFileS3Key": f"{base}/data/a.json.gz"}).encode(),
    )
    s3.put_object(
        Bucket="exports",
        Key=f"{base}/manifest-summary.json",
        Body=json.dumps(
            {"itemCount": 3, "manifestFilesS3Key": f"{base}/manifest-files.json"}
        ).encode(),
    )
    with pytest.raises(ExportFailed, match="promises 3 items"):
        list(iter_export_items(s3, _desc("p")))


def test_export_reader_without_a_manifest_needs_one_export_under_the_prefix(s3: Any) -> None:
    # moto's layout: data/<uuid>.gz under a directory that is not the export ID
    s3.put_object(Bucket="exports", Key="m/AWSDynamoDB/d1/data/x.gz", Body=_data(_items(4)))
    assert len(list(iter_export_items(s3, _desc("m")))) == 4
    s3.put_object(Bucket="exports", Key="m/AWSDynamoDB/d2/data/y.gz", Body=_data(_items(1)))
    with pytest.raises(ExportFailed, match="cannot tell"):
        list(iter_export_items(s3, _desc("m")))
    with pytest.raises(ExportFailed, match="no data files"):
        list(iter_export_items(s3, _desc("empty-prefix")))


def test_wait_for_export() -> None:
    class Ddb:
        def __init__(self, statuses: list[str]) -> None:
            self.statuses = statuses

        def describe_export(self, ExportArn: str) -> dict[str, Any]:
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return {
                "ExportDescription": {
                    "ExportArn": ExportArn,
                    "ExportStatus": status,
                    "FailureCode": "S3NoSuchBucket",
                }
            }

    slept: list[float] = []
    desc = wait_for_export(
        Ddb(["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]), "arn", poll_s=1.0, sleep=slept.append
    )
    assert desc["ExportStatus"] == "COMPLETED" and len(slept) == 2
    with pytest.raises(ExportFailed, match="S3NoSuchBucket"):
        wait_for_export(Ddb(["FAILED"]), "arn", sleep=slept.append)
    t = iter(range(0, 10_000, 100))
    with pytest.raises(ExportFailed, match="not complete"):
        wait_for_export(
            Ddb(["IN_PROGRESS"]),
            "arn",
            timeout_s=250,
            sleep=lambda s: None,
            clock=lambda: float(next(t)),
        )


# --- failures inside the scan's worker threads (in-process moto) -------------------------------


def test_a_worker_failure_becomes_an_error_finding(policy: Policy) -> None:
    from regions.local.sim import simulation

    class Flaky:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "scan":

                def scan(**kw: Any) -> Any:
                    if kw["TableName"] == "profiles":
                        raise RuntimeError("worker blew up")
                    return self.inner.scan(**kw)

                return scan
            return getattr(self.inner, name)

    class Clients:
        def __init__(self, sim_clients: Any) -> None:
            self.sim = sim_clients

        def client(self, service: str, region: str) -> Any:
            inner = self.sim.client(service, region)
            return Flaky(inner) if (service, region) == ("dynamodb", "eu-west-1") else inner

    with simulation(policy) as sim:
        report = run_audit(
            policy,
            Clients(sim.clients),
            policy_path=MINIMAL,
            checks=["data.pinned_placement"],
            now=datetime.now(UTC),
        )
    errors = [f for f in report.findings if f.status == "ERROR"]
    assert [(f.region, f.resource.rsplit("/", 1)[-1]) for f in errors] == [
        ("eu-west-1", "profiles")
    ]
    assert "RuntimeError" in errors[0].reason
    assert "worker blew up" not in errors[0].reason  # a library's message never reaches it
    assert {f.region for f in report.findings if f.status == "PASS"} == {
        "eu-central-1",
        "us-east-1",
    }


def test_the_conflict_count_is_an_error_where_the_detector_cannot_be_shown_healthy(
    policy: Policy,
) -> None:
    """AWS: missing detector alarms, or one in ALARM (its dead-letter queue holds a batch),
    make operations.conflicts ERROR in that region; healthy alarms let the count speak."""
    from regions.local.sim import simulation
    from residency.names import DETECTOR_ALARMS, detector_alarm_name

    def audit(clients: Any) -> dict[str, tuple[str, str]]:
        report = run_audit(
            policy,
            clients,
            policy_path=MINIMAL,
            checks=["operations.conflicts"],
            now=datetime.now(UTC),
            detector_alarms=True,
        )
        return {f.region: (f.status, f.reason) for f in report.findings}

    with simulation(policy) as sim:
        clients = sim.clients  # a ClientProvider as it is
        missing = audit(clients)
        assert {s for s, _ in missing.values()} == {"ERROR"}
        assert all("no alarm" in reason for _, reason in missing.values())
        for region in policy.regions:
            cw = clients.client("cloudwatch", region)
            for alarm in DETECTOR_ALARMS:
                cw.put_metric_alarm(
                    AlarmName=detector_alarm_name(policy.name, region, alarm),
                    MetricName="Errors",
                    Namespace="AWS/Lambda",
                    Statistic="Sum",
                    Period=300,
                    EvaluationPeriods=1,
                    Threshold=1,
                    ComparisonOperator="GreaterThanOrEqualToThreshold",
                )
                cw.set_alarm_state(
                    AlarmName=detector_alarm_name(policy.name, region, alarm),
                    StateValue="OK",
                    StateReason="test",
                )
        healthy = audit(clients)
        assert {s for s, _ in healthy.values()} == {"PASS"}
        clients.client("cloudwatch", "eu-west-1").set_alarm_state(
            AlarmName=detector_alarm_name(policy.name, "eu-west-1", "deadletters"),
            StateValue="ALARM",
            StateReason="a batch in the dead-letter queue",
        )
        sick = audit(clients)
    assert sick["eu-west-1"][0] == "ERROR"
    assert "deadletters" in sick["eu-west-1"][1] and "ALARM" in sick["eu-west-1"][1]
    assert sick["eu-central-1"][0] == sick["us-east-1"][0] == "PASS"


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _cli_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The CLI's signing key and evidence go to a temporary directory, not the tree."""
    global _HOME
    _HOME = tmp_path_factory.mktemp("cli-home")
    yield


_HOME = ROOT


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {
        **os.environ,
        "REGIONKIT_SIGNING_KEY_FILE": str(_HOME / "signing-key.pem"),
        "REGIONKIT_STATE_FILE": str(_HOME / "no-state.json"),
    }
    proc = subprocess.run(
        [str(REGIONKIT), "--policy", str(MINIMAL), *args],
        cwd=cwd or _HOME,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def test_cli_audit_checks_prints_checks_and_the_iam_policy() -> None:
    proc = run_cli("audit", "checks", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {c["id"] for c in data["checks"]} == {c.id for c in all_checks()}
    assert data["iam_policy"]["Version"] == "2012-10-17"
    text = run_cli("audit", "checks").stdout
    assert "infra.pitr" in text and "dynamodb:DescribeContinuousBackups" in text
    assert '"Statement"' in text


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--format", "yaml"], 2),
        (["--fail-on", "severe"], 2),
        (["--checks", "infra.nope"], 2),
        (["--checks", "policy", "--regions", "xx-nowhere-1"], 2),
        (["--checks", "policy", "--source", "tape"], 2),
        (["--checks", "policy"], 0),  # only an info-level FAIL: below --fail-on high
        (["--checks", "policy", "--fail-on", "info"], 1),
    ],
)
def test_cli_audit_run_exit_codes(args: list[str], code: int) -> None:
    proc = run_cli("audit", "run", "--no-progress", *args)
    assert proc.returncode == code, proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_audit_run_writes_a_report_file(tmp_path: Path) -> None:
    out = tmp_path / "r" / "audit.json"
    proc = run_cli("audit", "run", "--checks", "policy", "--format", "json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote json report" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert not verify_report(data)  # no key trusted: a signature alone proves nothing
    public = run_cli("audit", "public-key").stdout
    assert verify_report(data, trusted=[public])
    verified = run_cli("audit", "verify", str(out))  # trusts the tool's own key
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"signed by {data['signature']['key_id']}" in verified.stdout

    # every other format names the signed JSON written beside it, and verifies through it
    for fmt, name in (
        ("html", "a.html"),
        ("markdown", "a.md"),
        ("junit", "a.xml"),
        ("ocsf", "a.ocsf.json"),
        ("terminal", "a.txt"),
    ):
        target = tmp_path / fmt / name
        proc = run_cli("audit", "run", "--checks", "policy", "-f", fmt, "--out", str(target))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        beside = target.with_name("a.json")
        assert beside.exists(), fmt
        signed = json.loads(beside.read_text(encoding="utf-8"))
        text = target.read_text(encoding="utf-8")
        assert signed["report_sha256"] in text and signed["signature"]["value"] in text, fmt
        assert "a.json" in text, fmt
        ok = run_cli("audit", "verify", str(target))
        assert ok.returncode == 0, (fmt, ok.stdout + ok.stderr)

    # an edited report fails, and so does one whose digest was recomputed after the edit
    edited = dict(data)
    edited["summary"] = {**data["summary"], "total": 0}
    body = {k: v for k, v in edited.items() if k not in {"report_sha256", "signature"}}
    rehashed = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    edited["report_sha256"] = rehashed
    edited["signature"] = {**data["signature"], "digest_sha256": rehashed}
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(edited), encoding="utf-8")
    proc = run_cli("audit", "verify", str(bad))
    assert proc.returncode == 1 and "FAILED" in proc.stdout

    proc = run_cli("audit", "run", "--checks", "policy", "--format", "junit")
    assert proc.stdout.startswith("<?xml")
    assert "signed JSON report" in proc.stderr  # written to the evidence directory


def _signed_files(policy: Policy, where: Path, signer: LocalSigner) -> dict[str, Path]:
    """A policy audit's signed JSON and every rendering of it, as the CLI writes them."""
    from residency.audit import render

    report = run_audit(policy, NoAws(), policy_path=MINIMAL, checks=["policy"], signer=signer)
    files = {"json": where / "a.json"}
    files["json"].write_text(render(report, "json"), encoding="utf-8")
    for fmt, suffix in (("markdown", ".md"), ("html", ".html"), ("junit", ".xml")):
        files[fmt] = where / f"a{suffix}"
        files[fmt].write_text(render(report, fmt, signed_json="a.json"), encoding="utf-8")
    for fmt, name in (("ocsf", "a.ocsf.json"), ("terminal", "a.txt")):
        files[fmt] = where / name
        files[fmt].write_text(render(report, fmt, signed_json="a.json"), encoding="utf-8")
    return files


def test_verify_vouches_only_for_what_the_signed_json_says(policy: Policy, tmp_path: Path) -> None:
    """Review findings: an edited or made-up page passed if it quoted the digest and the
    signature; duplicate keys hid a value; a relabelled key_id was shown as the signer."""
    from residency.audit.verifying import check_evidence
    from residency.signing import TrustedKey

    signer = LocalSigner.load_or_create(tmp_path / "key.pem")
    trusted = [TrustedKey(signer.public_key_pem(), "the test's key")]
    files = _signed_files(policy, tmp_path, signer)
    for fmt, path in files.items():
        check = check_evidence(path, trusted)
        assert check, (fmt, check.reason)
        assert check.rendering == ("" if fmt == "json" else fmt)
        assert check.kind == "audit report" and check.signed_json == files["json"]
    assert not check_evidence(files["markdown"], [])  # no key trusted

    signed = json.loads(files["json"].read_text(encoding="utf-8"))
    sha, value = signed["report_sha256"], signed["signature"]["value"]
    forged = {
        "edited": files["markdown"].read_text(encoding="utf-8").replace("FAIL", "PASS"),
        "made-up": f"# All passed\n\nsigned JSON: a.json\n{sha}\n{value}\n",
    }
    for name, text in forged.items():
        page = tmp_path / f"{name}.md"
        page.write_text(text, encoding="utf-8")
        check = check_evidence(page, trusted)
        assert not check and "does not say what it says" in check.reason, name

    raw = files["json"].read_text(encoding="utf-8")
    cases = {
        "duplicate": raw.replace('"schema":', '"schema": "x", "schema":', 1),
        "nan": raw.replace('"summary": {', '"summary": {"x": NaN, ', 1),
        "surrogate": raw.replace('"summary": {', '"summary": {"x": "\\ud800", ', 1),
        "relabelled": raw.replace(
            f'"key_id": "{signed["signature"]["key_id"]}"',
            '"key_id": "arn:aws:kms:eu-west-1:111122223333:key/prod-hsm"',
        ),
    }
    for name, text in cases.items():
        assert text != raw, name
        bad = tmp_path / f"{name}.json"
        bad.write_text(text, encoding="utf-8")
        check = check_evidence(bad, trusted)
        assert not check, name
    assert "appears twice" in check_evidence(tmp_path / "duplicate.json", trusted).reason
    assert "calls its key" in check_evidence(tmp_path / "relabelled.json", trusted).reason


def test_verify_refuses_odd_labels_files_and_keys(policy: Policy, tmp_path: Path) -> None:
    """Round-2 review findings: a KMS-style signature's label could name any key; the page
    was compared with a second read of the JSON (swappable in between); a FIFO or
    /dev/zero hung or exhausted memory; a PEM of an unknown algorithm raised a traceback."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from residency.audit.model import AuditReport
    from residency.audit.verifying import check_evidence
    from residency.signing import TrustedKey, sign

    class Ecdsa:  # signs as KMS does (ECDSA_SHA_256 over the digest), labelled by ARN
        algorithm = "ECDSA_SHA_256"
        key_id = "arn:aws:kms:eu-west-1:111122223333:key/0f8e7d6c-5b4a-4938-8271-605f4e3d2c1b"

        def __init__(self) -> None:
            self._key = ec.generate_private_key(ec.SECP256R1())

        def public_key_pem(self) -> str:
            return (
                self._key.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            )

        def sign_digest(self, digest: bytes) -> bytes:
            from cryptography.hazmat.primitives import hashes

            return self._key.sign(digest, ec.ECDSA(hashes.SHA256()))

    kms = Ecdsa()
    report = run_audit(policy, NoAws(), policy_path=MINIMAL, checks=["policy"], signer=kms)  # type: ignore[arg-type]
    assert isinstance(report, AuditReport) and sign is not None
    good = tmp_path / "kms.json"
    good.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    pem_only = [TrustedKey(kms.public_key_pem(), "--public-key kept.pem")]
    check = check_evidence(good, pem_only)
    assert check and "cannot confirm" in check.reason  # an ARN label: said to be unchecked
    data = json.loads(good.read_text(encoding="utf-8"))
    for label in ("alias/prod-audit", "SHA256:" + "0" * 32, "arn:aws:kms:eu-west-1:1:key/x"):
        data["signature"]["key_id"] = label
        bad = tmp_path / "relabelled.json"
        bad.write_text(json.dumps(data), encoding="utf-8")
        assert not check_evidence(bad, pem_only), label
    named = [TrustedKey(kms.public_key_pem(), "KMS key", "arn:aws:kms:eu-west-1:1:key/other")]
    assert not check_evidence(good, named)  # a trusted KMS key's own ARN is checked

    mrk = json.loads(good.read_text(encoding="utf-8"))  # a multi-Region key's ARN
    mrk["signature"]["key_id"] = "arn:aws:kms:eu-west-1:111122223333:key/mrk-" + "0a" * 16
    (tmp_path / "mrk.json").write_text(json.dumps(mrk), encoding="utf-8")
    assert "cannot confirm" in check_evidence(tmp_path / "mrk.json", pem_only).reason
    # its replica in another region is the same key (same material, same mrk- ID) ...
    replica = "arn:aws:kms:us-east-1:111122223333:key/mrk-" + "0a" * 16
    assert check_evidence(tmp_path / "mrk.json", [TrustedKey(kms.public_key_pem(), "KMS", replica)])
    # ... another multi-Region key, or the same ID in another account, is not
    others = (
        replica.replace("0a", "0b"),
        replica.replace("111122223333", "444455556666"),
        replica.replace("arn:aws:", "arn:aws-cn:"),
    )
    for other in others:
        assert not check_evidence(
            tmp_path / "mrk.json", [TrustedKey(kms.public_key_pem(), "KMS", other)]
        )

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert "not a regular file" in check_evidence(fifo, pem_only).reason
    deep = tmp_path / "deep.json"  # round 3: a RecursionError traceback
    deep.write_text('{"signature": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    assert "nested too deeply" in check_evidence(deep, pem_only).reason
    long_name = tmp_path / "long.md"  # round 3: names a file the file system refuses
    long_name.write_text("signed JSON: " + "a" * 300 + ".json\n", encoding="utf-8")
    assert not check_evidence(long_name, pem_only)
    odd = tmp_path / "odd.pem"  # a well-formed PEM of an algorithm cryptography lacks
    odd.write_text(
        "-----BEGIN PUBLIC KEY-----\nMBQwDwYLKwYBBAGCN2UBAQEDAQA=\n-----END PUBLIC KEY-----\n"
    )
    assert not check_evidence(good, [TrustedKey(odd.read_text(), "odd")])


def test_verify_compares_the_page_with_the_json_it_verified(
    policy: Policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON is read once: swapping it after the signature check changes nothing."""
    from residency.audit import verifying
    from residency.signing import TrustedKey

    signer = LocalSigner.load_or_create(tmp_path / "key.pem")
    files = _signed_files(policy, tmp_path, signer)
    genuine = files["json"].read_text(encoding="utf-8")
    reads = []
    real_read = verifying._read

    def read_then_swap(path: Path) -> str:
        text = real_read(path)
        reads.append(path.name)
        if path == files["json"]:  # a writer replaces the JSON right after it is read
            path.write_text(genuine.replace('"FAIL"', '"PASS"'), encoding="utf-8")
        return text

    monkeypatch.setattr(verifying, "_read", read_then_swap)
    trusted = [TrustedKey(signer.public_key_pem(), "test")]
    assert verifying.check_evidence(files["markdown"], trusted)
    assert reads.count("a.json") == 1


def test_verify_trusts_only_the_public_keys_given(policy: Policy, tmp_path: Path) -> None:
    """A forger ships a report with a key file of their own where the tool looks for the
    deployment's; with --public-key the auditor's key alone is trusted (review finding)."""
    forger = tmp_path / "forger"
    (forger / ".regionkit").mkdir(parents=True)
    fake = LocalSigner.load_or_create(forger / ".regionkit" / "signing-key.pem")
    files = _signed_files(policy, forger, fake)
    kept = tmp_path / "auditor.pem"
    kept.write_text(LocalSigner.load_or_create(tmp_path / "real.pem").public_key_pem())

    def verify_in_forgers_directory(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REGIONKIT), "audit", "verify", *args],
            cwd=forger,
            env={k: v for k, v in os.environ.items() if k != "REGIONKIT_SIGNING_KEY_FILE"},
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )

    proc = verify_in_forgers_directory(str(files["json"]), "--public-key", str(kept))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not a trusted key" in proc.stdout and "Traceback" not in proc.stderr
    proc = verify_in_forgers_directory(str(files["markdown"]))  # names the key's source
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trusted as the local signing key .regionkit/signing-key.pem" in proc.stdout


def test_drill_journals_written_by_the_drill_runner_are_read(
    policy: Policy, tmp_path: Path
) -> None:
    from datetime import timedelta

    from regions.drills.journal import DrillJournal, save_journal

    now = datetime(2026, 6, 1, tzinfo=UTC)
    for i, (region, target, verdict, ended) in enumerate(
        [
            ("eu-central-1", "sim", "pass", None),  # a simulated drill, no end recorded
            ("eu-west-1", "local", "pass", now - timedelta(days=2)),
            ("us-east-1", "aws", "fail", now - timedelta(days=2)),
        ]
    ):
        save_journal(
            DrillJournal(
                drill_id=f"d{i}",
                scenario="region-outage",
                target=target,
                policy="minimal",
                policy_sha256="0" * 64,
                regions=[region],
                started_at=now - timedelta(days=3),
                ended_at=ended,
                verdict=verdict,
            ),
            tmp_path,
        )
    report = run_audit(
        policy,
        NoAws(),
        policy_path=MINIMAL,
        checks=["operations.drill_recency"],
        drill_history=tmp_path,
        now=now,
    )
    by_region = {f.region: f for f in report.findings}
    assert by_region["eu-central-1"].status == "PASS"
    assert "(region-outage, sim)" in by_region["eu-central-1"].reason
    assert by_region["eu-west-1"].status == "PASS"
    assert by_region["us-east-1"].status == "FAIL"  # its only drill failed
    assert not [f for f in report.findings if f.status == "ERROR"]


def test_the_cli_progress_bar_follows_scan_events() -> None:
    import io

    from rich.console import Console

    from _cli.audit import audit_progress
    from residency.audit import ProgressEvent

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    bar, on_event = audit_progress(console)
    bar.start()
    try:
        on_event(ProgressEvent("check", "infra.pitr"))  # ignored
        on_event(ProgressEvent("scan", "eu-west-1/profiles", total=10))
        on_event(ProgressEvent("scan", "eu-west-1/profiles", advance=4))
        on_event(ProgressEvent("scan", "eu-west-1/profiles", advance=3))
        on_event(ProgressEvent("scan", "eu-west-1/profiles", done=True))
    finally:
        bar.stop()
    (task,) = bar.tasks
    assert (task.description, task.completed, task.total) == ("eu-west-1/profiles", 7, 7)


def test_the_readme_severity_table_is_the_codes_table() -> None:
    from residency.audit.severity import HARMS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Audit severities", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.strip("|").split("|")
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| harm")
    ]
    table = {cells[0].strip(): cells[1].strip() for cells in rows}
    assert table == HARMS


def test_extra_regions_enabled_asks_the_account(policy: Policy) -> None:
    import boto3
    from moto import mock_aws

    from residency.audit.runner import _extra

    class Ec2Only:
        def client(self, service: str, region: str) -> Any:
            assert service == "ec2"
            return boto3.client("ec2", region_name=region)

    with mock_aws():
        regions = _extra(policy, ["enabled"], Ec2Only())
    assert "ap-south-1" in regions and "eu-central-1" not in regions  # policy regions dropped

    class Broken(Ec2Only):
        def client(self, service: str, region: str) -> Any:
            raise RuntimeError("no ec2 here")

    with pytest.raises(ConfigError, match="ec2:DescribeRegions"):
        _extra(policy, ["enabled"], Broken())


def test_the_iam_policy_names_the_signing_key(policy: Policy) -> None:
    arn = "arn:aws:kms:eu-central-1:123456789012:key/abcd"
    doc = iam_policy(all_checks(), policy=policy, signing_key=arn)
    signing = next(s for s in doc["Statement"] if s["Sid"] == "RegionkitAuditSigning")
    assert signing["Action"] == ["kms:GetPublicKey", "kms:Sign"] and signing["Resource"] == arn
    assert "Condition" not in signing
    assert "RegionkitAuditSigning" not in {s["Sid"] for s in iam_policy(all_checks())["Statement"]}


@pytest.mark.parametrize(
    ("key", "resource", "alias"),
    [
        ("alias/audit", "arn:aws:kms:*:*:key/*", "alias/audit"),
        (
            "arn:aws:kms:eu-central-1:123456789012:alias/audit",
            "arn:aws:kms:*:*:key/*",
            "alias/audit",
        ),
        ("1234abcd-12ab", "arn:aws:kms:*:*:key/1234abcd-12ab", None),
    ],
)
def test_the_iam_policy_names_a_signing_key_the_way_iam_can_match(
    policy: Policy, key: str, resource: str, alias: str | None
) -> None:
    """IAM matches a KMS key by its key ARN only: an alias or an alias ARN in Resource
    would deny kms:Sign, so an alias becomes the kms:ResourceAliases condition."""
    doc = iam_policy(all_checks(), policy=policy, signing_key=key)
    signing = next(s for s in doc["Statement"] if s["Sid"] == "RegionkitAuditSigning")
    assert signing["Resource"] == resource
    condition = signing.get("Condition", {}).get("ForAnyValue:StringEquals", {})
    assert condition.get("kms:ResourceAliases") == alias
