"""The audit against what real AWS returns and refuses, where moto does not.

moto answers every call it can and returns no MRSC witness and no replica status, so
these tests put real AWS's shapes and refusals (as botocore's service models define
them) in front of in-process moto:

* an unlisted table whose tags and sample cannot be read (an SCP, a resource policy,
  ``ListTagsOfResource``'s 10 calls a second) is unknown, never silently "other";
* an MRSC witness outside the jurisdiction is data outside it; a replica that stopped
  replicating is not a replica;
* a KMS key that cannot sign is refused before the audit runs, and a failed
  ``kms:Sign`` is a regionkit error, never a traceback; an erasure's receipt that
  cannot be signed is kept unsigned, never lost.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from regions.ids import mint_user_id
from residency.audit import run_audit
from residency.errors import BackendError, OperationError
from residency.policy import Policy, load_policy
from residency.pseudonym import Pseudonymizer
from residency.receipts import write_receipt
from residency.signing import KmsSigner, LocalSigner

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "policies" / "minimal.yaml"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _refused(code: str, operation: str) -> ClientError:
    # the message quotes what AWS saw, as real ones do; none of it may reach a finding
    error = {"Code": code, "Message": "User arn:aws:iam::1:user/ada is not authorized"}
    return ClientError({"Error": error}, operation)


class _Shaped:
    """A moto client with some methods replaced (real AWS's answer or refusal)."""

    def __init__(self, inner: Any, replaced: dict[str, Callable[..., Any]]) -> None:
        self._inner, self._replaced = inner, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name) or getattr(self._inner, name)


class _Clients:
    def __init__(self, shape: Callable[[str, str, Any], Any]) -> None:
        self.shape = shape
        self._made: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        import boto3

        key = (service, region)
        if key not in self._made:
            self._made[key] = self.shape(service, region, boto3.client(service, region_name=region))
        return self._made[key]


def _table(region: str, name: str) -> Any:
    import boto3

    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb


@pytest.fixture
def policy() -> Iterator[Policy]:
    from moto import mock_aws

    with mock_aws():
        p = load_policy(MINIMAL)
        for name in ("profiles", "content", "directory"):
            for region in p.regions:
                _table(region, name)
        yield p


def _audit(policy: Policy, clients: _Clients, checks: list[str], **kw: Any) -> Any:
    return run_audit(
        policy,
        clients,
        policy_path=MINIMAL,
        checks=checks,
        now=NOW,
        signer=LocalSigner.generate(),
        pseudonymizer=Pseudonymizer(bytes(range(32))),
        **kw,
    )


def _copy_in_us_west_2() -> None:
    """A renamed copy of EU profiles, tagged as one, in a region outside the policy."""
    ddb = _table("us-west-2", "tmp-2024-q3")
    arn = ddb.describe_table(TableName="tmp-2024-q3")["Table"]["TableArn"]
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "regionkit:data-class", "Value": "profile"}])
    for _ in range(3):
        ddb.put_item(TableName="tmp-2024-q3", Item={"pk": {"S": str(mint_user_id("eu-central-1"))}})


def _placement(policy: Policy, shape: Callable[[str, str, Any], Any]) -> list[Any]:
    report = _audit(policy, _Clients(shape), ["infra.table_placement"], extra_regions=["us-west-2"])
    return [f for f in report.findings if f.resource.endswith("/tmp-2024-q3")]


def test_a_copy_found_is_critical(policy: Policy) -> None:
    _copy_in_us_west_2()
    [found] = _placement(policy, lambda service, region, c: c)
    assert (found.status, found.severity) == ("FAIL", "critical")


def test_a_table_that_cannot_be_classed_is_an_error_not_silence(policy: Policy) -> None:
    _copy_in_us_west_2()

    def refuse(service: str, region: str, c: Any) -> Any:
        if (service, region) != ("dynamodb", "us-west-2"):
            return c

        def scan(**_: Any) -> Any:
            raise _refused("AccessDeniedException", "Scan")

        def list_tags_of_resource(**_: Any) -> Any:
            raise _refused("ThrottlingException", "ListTagsOfResource")

        return _Shaped(c, {"scan": scan, "list_tags_of_resource": list_tags_of_resource})

    [unknown] = _placement(policy, refuse)
    assert unknown.status == "ERROR"
    assert "could not be classed" in unknown.reason
    assert "its tags" in unknown.reason and "a sample of its items" in unknown.reason
    assert "ada" not in json.dumps(unknown.model_dump(mode="json"))


def _replica_findings(policy: Policy, replicas: dict[str, Any]) -> list[Any]:
    """infra.replica_sets with ``replicas[(region, table)]`` merged into DescribeTable."""

    def shape(service: str, region: str, c: Any) -> Any:
        if service != "dynamodb":
            return c

        def describe_table(**kw: Any) -> Any:
            out = c.describe_table(**kw)
            out["Table"].update(replicas.get((region, kw["TableName"]), {}))
            return out

        return _Shaped(c, {"describe_table": describe_table})

    report = _audit(policy, _Clients(shape), ["infra.replica_sets"])
    return [
        f
        for f in report.findings
        if (f.region, f.resource.rsplit("/", 1)[1]) in {(r, t) for r, t in replicas}
    ]


def test_an_mrsc_witness_outside_the_jurisdiction_is_data_outside_it(policy: Policy) -> None:
    [found] = _replica_findings(
        policy,
        {
            ("eu-central-1", "profiles"): {
                "MultiRegionConsistency": "STRONG",
                "Replicas": [{"RegionName": "eu-west-1", "ReplicaStatus": "ACTIVE"}],
                "GlobalTableWitnesses": [{"RegionName": "us-east-1", "WitnessStatus": "ACTIVE"}],
            }
        },
    )
    assert (found.status, found.severity) == ("FAIL", "critical")
    assert "us-east-1 (a witness)" in found.reason


def test_a_replica_that_stopped_replicating_is_not_a_pass(policy: Policy) -> None:
    found = _replica_findings(
        policy,
        {
            ("us-east-1", "content"): {
                "Replicas": [
                    {"RegionName": "eu-central-1", "ReplicaStatus": "ACTIVE"},
                    {"RegionName": "eu-west-1", "ReplicaStatus": "REPLICATION_NOT_AUTHORIZED"},
                ]
            }
        },
    )
    assert [(f.status, f.severity) for f in found] == [("FAIL", "high")]
    assert "eu-west-1 is REPLICATION_NOT_AUTHORIZED" in found[0].reason


class _Kms:
    """KMS as real KMS answers (the ARN as KeyId, KeyUsage); ``sign`` refuses if asked."""

    ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    def __init__(self, usage: str, refuse: str | None = None) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        self.der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.usage, self.refuse = usage, refuse

    def get_public_key(self, KeyId: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"KeyId": self.ARN, "PublicKey": self.der, "KeyUsage": self.usage}
        if self.usage == "SIGN_VERIFY":
            answer["SigningAlgorithms"] = ["ECDSA_SHA_256"]
        return answer

    def sign(self, **_: Any) -> Any:
        raise _refused(self.refuse or "KMSInternalException", "Sign")


def test_a_kms_key_that_cannot_sign_is_refused_before_the_audit() -> None:
    with pytest.raises(ValueError, match=r"KeyUsage KEY_AGREEMENT.*SIGN_VERIFY"):
        KmsSigner(_Kms("KEY_AGREEMENT"), "alias/regionkit-audit")


def test_a_failed_kms_sign_is_a_regionkit_error(policy: Policy) -> None:
    signer = KmsSigner(_Kms("SIGN_VERIFY", refuse="ThrottlingException"), "alias/audit")
    with pytest.raises(BackendError) as info:
        run_audit(
            policy,
            _Clients(lambda service, region, c: c),
            policy_path=MINIMAL,
            checks=["policy.valid"],
            now=NOW,
            signer=signer,
            pseudonymizer=Pseudonymizer(bytes(range(32))),
        )
    err = info.value
    assert (err.operation, err.region, err.code) == ("kms:Sign", "eu-west-1", "ThrottlingException")
    assert "ada" not in str(err)


def test_a_receipt_that_cannot_be_signed_is_kept_unsigned(tmp_path: Path) -> None:
    body = {"kind": "erasure receipt", "subject": "u-3f2a", "finished_at": "2026-06-01T00:00:00Z"}
    with pytest.raises(OperationError, match=r"kept unsigned in .*\.unsigned\.json") as info:
        write_receipt(body, KmsSigner(_Kms("SIGN_VERIFY"), "alias/audit"), tmp_path)
    [kept] = tmp_path.iterdir()
    assert kept.name.endswith(".unsigned.json") and str(kept) in str(info.value)
    assert json.loads(kept.read_text()) == body
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def _refusing(opted_in: bool) -> Callable[[str, str, Any], Any]:
    """ap-east-1 (an opt-in region) and eu-west-1 refuse the credentials; EC2 says
    whether the account opted in to ap-east-1."""

    def shape(service: str, region: str, c: Any) -> Any:
        if service == "ec2":
            status = "opted-in" if opted_in else "not-opted-in"
            regions = [
                {"RegionName": "ap-east-1", "OptInStatus": status},
                {"RegionName": "eu-west-1", "OptInStatus": "opt-in-not-required"},
            ]
            return _Shaped(c, {"describe_regions": lambda **_: {"Regions": regions}})
        if service != "dynamodb" or region not in ("ap-east-1", "eu-west-1"):
            return c

        def list_tables(**_: Any) -> Any:
            raise _refused("UnrecognizedClientException", "ListTables")

        return _Shaped(c, {"list_tables": list_tables})

    return shape


def test_an_opt_in_region_not_enabled_is_one_low_error_not_a_flood(policy: Policy) -> None:
    """Every call in a region the account has not enabled is refused with
    UnrecognizedClientException: one low finding for the region, not one critical
    finding per policy table; a policy region refused so stays critical."""
    shape = _refusing(opted_in=False)
    report = _audit(policy, _Clients(shape), ["infra.table_placement"], extra_regions=["ap-east-1"])
    opt_in = [f for f in report.findings if f.region == "ap-east-1"]
    assert [(f.status, f.severity) for f in opt_in] == [("ERROR", "low")]
    assert "has not enabled" in opt_in[0].reason and "ada" not in opt_in[0].reason
    in_policy = [f for f in report.findings if f.region == "eu-west-1"]
    assert in_policy and {(f.status, f.severity) for f in in_policy} == {("ERROR", "critical")}


def test_an_enabled_region_that_refuses_the_credentials_stays_critical(policy: Policy) -> None:
    """The same refusal in a region the account did enable (a v1 STS token, say) could
    hide a copy of personal data: every table there stays a critical ERROR."""
    shape = _refusing(opted_in=True)
    report = _audit(policy, _Clients(shape), ["infra.table_placement"], extra_regions=["ap-east-1"])
    refused = [f for f in report.findings if f.region == "ap-east-1"]
    assert len(refused) > 1 and {(f.status, f.severity) for f in refused} == {("ERROR", "critical")}


def test_every_region_botocore_knows_is_known_here() -> None:
    """`--extra-regions all` and the region checks cover every commercial DynamoDB region
    of the installed botocore: a new region fails this test until it is added."""
    import botocore.session

    from residency.aws_regions import AWS_REGIONS

    known = set(botocore.session.get_session().get_available_regions("dynamodb"))
    assert known - set(AWS_REGIONS) == set()


class _GovIdentity:
    def get_caller_identity(self) -> dict[str, str]:
        return {"Account": "123456789012", "Arn": "arn:aws-us-gov:sts::123456789012:assumed-role/a"}


def test_resources_are_named_in_the_caller_s_partition(policy: Policy) -> None:
    from residency.audit import render

    def gov(service: str, region: str, c: Any) -> Any:
        if service == "sts":
            return _GovIdentity()
        if service != "dynamodb":
            return c

        def describe_table(**kw: Any) -> Any:  # as DescribeTable answers in GovCloud
            out = c.describe_table(**kw)
            arn = out["Table"]["TableArn"]
            out["Table"]["TableArn"] = arn.replace("arn:aws:", "arn:aws-us-gov:", 1)
            return out

        return _Shaped(c, {"describe_table": describe_table})

    report = _audit(policy, _Clients(gov), ["infra.table_placement"])
    tables = [f.resource for f in report.findings if ":table/" in f.resource]
    assert tables and all(r.startswith("arn:aws-us-gov:dynamodb:") for r in tables)
    ocsf = json.loads(render(report, "ocsf"))
    rows = ocsf if isinstance(ocsf, list) else ocsf.get("findings", [])
    partitions = {res.get("cloud_partition") for row in rows for res in row.get("resources", [])}
    assert partitions == {"aws-us-gov"}


def test_a_region_that_stopped_answering_leaves_later_tables_unknown(policy: Policy) -> None:
    """One connection error marks the region down; every later unlisted table there was
    not sampled either, so an untagged copy (only its items show it) is an ERROR."""
    from botocore.exceptions import EndpointConnectionError

    _table("us-west-2", "aaa-scratch")
    ddb = _table("us-west-2", "tmp-2024-q3")
    for _ in range(3):
        ddb.put_item(TableName="tmp-2024-q3", Item={"pk": {"S": str(mint_user_id("eu-central-1"))}})

    def blip(service: str, region: str, c: Any) -> Any:
        if (service, region) != ("dynamodb", "us-west-2"):
            return c

        def list_tags_of_resource(**kw: Any) -> Any:
            if kw["ResourceArn"].endswith("/aaa-scratch"):
                raise EndpointConnectionError(
                    endpoint_url="https://dynamodb.us-west-2.amazonaws.com"
                )
            return c.list_tags_of_resource(**kw)

        return _Shaped(c, {"list_tags_of_resource": list_tags_of_resource})

    [copy] = _placement(policy, blip)
    assert copy.status == "ERROR" and "a sample of its items" in copy.reason


@pytest.mark.parametrize("status", ["CREATING", "DELETING"])
def test_a_replica_being_created_or_deleted_is_no_failover_yet(policy: Policy, status: str) -> None:
    found = _replica_findings(
        policy,
        {
            ("us-east-1", "content"): {
                "Replicas": [
                    {"RegionName": "eu-central-1", "ReplicaStatus": "ACTIVE"},
                    {"RegionName": "eu-west-1", "ReplicaStatus": status},
                ]
            }
        },
    )
    assert [(f.status, f.severity) for f in found] == [("FAIL", "high")]
    assert "lacks replicas in eu-west-1" in found[0].reason


def test_a_kept_receipt_is_private_even_over_an_old_file(tmp_path: Path) -> None:
    body = {"kind": "erasure receipt", "subject": "u-3f2a", "finished_at": "2026-06-01T00:00:00Z"}
    old = tmp_path / "erasure-u-3f2a-20260601T000000Z.unsigned.json"
    old.write_text("{}")
    old.chmod(0o644)
    with pytest.raises(OperationError):
        write_receipt(body, KmsSigner(_Kms("SIGN_VERIFY"), "alias/audit"), tmp_path)
    assert stat.S_IMODE(old.stat().st_mode) == 0o600 and json.loads(old.read_text()) == body
