"""PII detection (residency.pii_detect), KMS signing, and the shipped report schema.

No cluster: the detector on a seeded corpus, names at any depth, and KMS signing
against in-process moto.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from residency.pii_detect import PiiDetector, normalize_name

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from audit_pii_corpus import ordinary_values, pii_values

# The countries of the example policy's jurisdictions (IN, BR, the EU, US).
COUNTRIES = [
    *("IN", "BR", "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR"),
    *("HU", "IE", "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES"),
    *("SE", "US"),
]
RECALL_GOAL, FALSE_POSITIVE_GOAL = 0.99, 0.01


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector(["email", "phone", "display_name", "birth_date"], countries=COUNTRIES)


def measure(detector: PiiDetector, seed: int) -> tuple[float, float, dict[str, float]]:
    pii = pii_values(seed)
    ordinary = ordinary_values(seed)
    hits = [detector.value_kind(v) is not None for _, v in pii]
    by_kind: dict[str, list[bool]] = {}
    for (kind, _), hit in zip(pii, hits, strict=True):
        by_kind.setdefault(kind, []).append(hit)
    fp = sum(detector.value_kind(v) is not None for v in ordinary)
    return (
        sum(hits) / len(hits),
        fp / len(ordinary),
        {k: sum(v) / len(v) for k, v in by_kind.items()},
    )


@pytest.mark.parametrize("seed", [17, 2026])
def test_value_detection_meets_its_goals_on_the_seeded_corpus(
    detector: PiiDetector, seed: int
) -> None:
    recall, fp_rate, by_kind = measure(detector, seed)
    print(f"seed {seed}: recall {recall:.4f}, false positives {fp_rate:.4f}, {by_kind}")
    assert recall >= RECALL_GOAL, by_kind
    assert fp_rate <= FALSE_POSITIVE_GOAL
    assert min(by_kind.values()) >= 0.98, by_kind


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("jane.doe@example.com", "email"),
        ("write to Jane.Doe+news@mail.example.co.uk today", "email"),
        ("+49 151 23456789", "phone"),
        ("+919876543210", "phone"),
        ("(415) 555-0132", "phone"),
        ("98765 43210", "phone"),
        ("(11) 91234-5678", "phone"),
        ("030 1234567", "phone"),
        ("529.982.247-25", "cpf"),
        ("4111 1111 1111 1111", "card"),
        ("378282246310005", "card"),
        ("123-45-6789", "ssn"),
        ("2026-12-01T14:10:55Z", None),
        ("1764598255", None),
        ("1764598255123", None),
        ("u-eu-central-1-01JD3X9Q4M8V2R6T0BNC5K7H1E", None),
        ("0000018f3a2b.0000.eu-central-1", None),
        ("192.168.100.200", None),
        ("3f2a9b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c", None),
        ("ORD-2026-004512", None),
        ("4111 1111 1111 1112", None),  # Luhn fails
        ("hello world", None),
    ],
)
def test_value_kinds(detector: PiiDetector, value: str, kind: str | None) -> None:
    assert detector.value_kind(value) == kind


def test_check_digits_decide_national_ids(detector: PiiDetector) -> None:
    assert detector.value_kind("529.982.247-25") == "cpf"
    assert detector.value_kind("529.982.247-26") != "cpf"  # check digit fails


def test_an_aadhaar_number_with_its_verhoeff_check_digit(detector: PiiDetector) -> None:
    from stdnum import verhoeff

    body = "23456789012"[:11]
    valid = body + verhoeff.calc_check_digit(body)
    assert detector.value_kind(valid) == "aadhaar"
    assert detector.value_kind(f"{valid[:4]} {valid[4:8]} {valid[8:]}") == "aadhaar"
    wrong = body + str((int(verhoeff.calc_check_digit(body)) + 1) % 10)
    assert detector.value_kind(wrong) != "aadhaar"


def test_names_match_case_insensitively_at_any_depth(detector: PiiDetector) -> None:
    item: dict[str, Any] = {
        "pk": {"S": "post-1"},
        "Email": {"S": "x"},
        "author": {"M": {"displayName": {"S": "x"}, "id": {"S": "u-1"}}},
        "replies": {"L": [{"M": {"PHONE": {"S": "x"}}}]},
        "rk_v": {"S": "0000018f3a2b.0000.eu-central-1"},
        "e_mail": {"S": "x"},
        "body": {"S": "nothing here"},
    }
    hits = {(h.path, h.match) for h in detector.scan(item, values=False)}
    assert hits == {
        ("Email", "name"),
        ("author.displayName", "name"),
        ("replies[].PHONE", "name"),
        ("e_mail", "name"),
    }
    assert normalize_name("Display-Name") == normalize_name("display_name")
    assert not detector.is_pii_name("rk_email")  # regionkit's own attributes


def test_values_at_any_depth_and_map_keys_that_are_values(detector: PiiDetector) -> None:
    item: dict[str, Any] = {
        "pk": {"S": "post-1"},
        "meta": {"M": {"contact": {"S": "a@b.example"}}},
        "followers": {"M": {"someone@example.com": {"N": "1"}}},
        "numbers": {"SS": ["+14155550132"]},
        # A map keyed by people: the keys are data, whatever they look like.
        "contacts": {"M": {"Jane_Doe": {"M": {"email": {"S": "x"}, "note": {"S": "hi"}}}}},
    }
    hits = {(h.path, h.match, h.kind) for h in detector.scan(item)}
    assert hits == {
        # Below the top level, only names of the PII vocabulary are shown.
        ("meta.{key}", "value", "email"),
        ("followers.{key}", "value", "email"),  # the path never shows the key itself
        ("numbers[]", "value", "phone"),
        ("contacts.{key}.email", "name", "name"),
    }
    assert all("@" not in h.path and "Jane" not in h.path for h in detector.scan(item))
    assert [h.path for h in detector.scan(item, values=False)] == ["contacts.{key}.email"]


def test_describe_never_returns_the_value(detector: PiiDetector) -> None:
    for value in ("+49 151 23456789", "jane@example.com", "Quintessa Vondrakovich", None, 7):
        text = detector.describe(value)
        assert str(value) not in text or value is None


def test_kms_signing_with_moto(tmp_path: Path) -> None:
    import boto3
    from moto import mock_aws

    from residency.signing import KmsSigner, sign, verify

    with mock_aws():
        kms = boto3.client("kms", region_name="eu-central-1")
        for spec in ("ECC_NIST_P256", "RSA_2048"):
            arn = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec=spec)["KeyMetadata"]["Arn"]
            signer = KmsSigner(kms, arn)
            body = {"receipt": "erasure", "n": 1}
            sig = sign(body, signer)
            assert sig.key_id == arn
            result = verify(body, sig, trusted=[signer.public_key_pem()])
            assert result, result.reason
            assert not verify({**body, "n": 2}, sig, trusted=[signer.public_key_pem()])


def test_the_shipped_report_schema_is_the_models_schema() -> None:
    from residency.audit.model import SCHEMA_PATH, report_json_schema

    shipped = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert shipped == json.loads(json.dumps(report_json_schema())), (
        "regenerate residency/audit/report.schema.json from report_json_schema()"
    )
