"""The detector as a Lambda: recorded stream events, durable de-duplication, alarms.

* A record whose handling failed (the conflict log unreachable) is reported in
  ``batchItemFailures``; when Lambda delivers it again it is handled, not skipped:
  de-duplication is the conditional put of the conflict ID, not a set in memory.
* A merge-class conflict whose merge failed is merged on the retry.
* The synthesized detector of every region has alarms on its errors, its iterator
  age, its dead-letter queue and the records it left undetermined.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from regions.codec import to_ddb
from regions.conflicts import ConflictLog
from regions.detector_lambda import handler
from regions.local.sim import Simulation, simulation
from regions.merges import total
from residency.policy import Policy, load_policy

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"
ROOT = Path(__file__).resolve().parent.parent


def v(ms: int, region: str, node: str = "0000000a") -> str:
    return f"{ms:012x}.0000.{node}.{region}"


def _policy(tmp: Path) -> Policy:
    raw = yaml.safe_load((ROOT / "policies" / "minimal.yaml").read_text())
    raw["data_classes"]["reactions"] = {
        "kind": "global",
        "table": "reactions",
        "replicas": list(raw["regions"]),
        "conflicts": {"merge": "regions.merges:merge_counters"},
    }
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_policy(path)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulation]:
    with simulation(_policy(tmp_path), seed=2, detect=False) as s:
        yield s


def _event(region: str, table: str, old: dict[str, Any] | None, new: dict[str, Any], seq: str):
    arn = f"arn:aws:dynamodb:{region}:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"
    body: dict[str, Any] = {
        "Keys": to_ddb({"pk": new["pk"]}),
        "NewImage": to_ddb(new),
        "SequenceNumber": seq,
    }
    if old is not None:
        body["OldImage"] = to_ddb(old)
    return {
        "eventName": "MODIFY" if old else "INSERT",
        "awsRegion": region,
        "eventSourceARN": arn,
        "dynamodb": body,
    }


def test_a_failed_record_is_retried_not_skipped(sim: Simulation) -> None:
    base = v(1, EU1)
    a = {"pk": "d", "rk_v": v(2, EU1), "rk_base": base, "rk_at": EU1, "body": "a"}
    b = {"pk": "d", "rk_v": v(3, US), "rk_base": base, "rk_at": US, "body": "b"}
    record = _event(EU2, "content", a, b, "11")
    det = sim.detector
    real = det.log.record
    det.log.record = lambda region, rec: (_ for _ in ()).throw(OSError("log unreachable"))  # type: ignore[method-assign]
    record["dynamodb"]["SequenceNumber"] = "4900000000000000000012345678901"  # as Streams'
    with structlog.testing.capture_logs() as logs:
        out = handler({"Records": [record]}, None, detector=det)
    assert out["batchItemFailures"] == [{"itemIdentifier": "4900000000000000000012345678901"}]
    [line] = [x for x in logs if x["event"] == "record retried"]  # said, with what to find
    assert (line["log_level"], line["error"]) == ("warning", "OSError")
    assert line["sequence"] == 4900000000000000000012345678901
    det.log.record = real  # type: ignore[method-assign]
    assert handler({"Records": [record]}, None, detector=det)["conflicts"] == 1
    assert handler({"Records": [record]}, None, detector=det)["conflicts"] == 0  # once
    assert len(ConflictLog(sim.policy, sim.clients).scan(EU2)) == 1


def test_a_merge_that_failed_is_merged_on_the_retry(sim: Simulation) -> None:
    base = v(1, EU1)
    ours = {"pk": "r", "rk_v": v(2, EU1), "rk_base": base, "rk_at": EU1, "counts": {"like#a": 2}}
    theirs = {"pk": "r", "rk_v": v(3, US), "rk_base": base, "rk_at": US, "counts": {"like#b": 5}}
    client = sim.clients.client("dynamodb", EU2)
    client.put_item(TableName="reactions", Item=to_ddb(theirs))  # what EU2 holds now
    record = _event(EU2, "reactions", ours, theirs, "21")
    det = sim.detector
    calls = {"n": 0}
    real_put = client.put_item

    def flaky_put(**kw: Any) -> Any:
        if kw.get("TableName") == "reactions" and calls["n"] == 0:
            calls["n"] += 1
            raise OSError("throttled")
        return real_put(**kw)

    client.put_item = flaky_put
    try:
        assert handler({"Records": [record]}, None, detector=det)["batchItemFailures"]
        assert ConflictLog(sim.policy, sim.clients).scan(EU2) == []  # not logged as done
        assert handler({"Records": [record]}, None, detector=det)["conflicts"] == 1
    finally:
        client.put_item = real_put
    merged = sim.items(EU2, "reactions")["r"]
    assert total(merged, "like") == 7  # both sides, nothing lost
    assert handler({"Records": [record]}, None, detector=det)["conflicts"] == 0


def test_the_landing_record_decides_a_blind_write(sim: Simulation) -> None:
    """A blind write's parent comes from its landing region's stream record."""
    first = {"pk": "q", "rk_v": v(1, EU1), "rk_at": EU1, "body": "0"}
    blind = {"pk": "q", "rk_v": v(5, US), "rk_at": US, "body": "1"}  # no rk_base
    det = sim.detector
    events = [
        _event(US, "content", first, blind, "31"),  # where it landed: it replaced `first`
        _event(EU2, "content", first, blind, "32"),  # replicated over the same version
    ]
    assert handler({"Records": events}, None, detector=det)["conflicts"] == 0


@pytest.mark.cdk  # a real CDK synth
def test_every_detector_has_error_age_dead_letter_and_undetermined_alarms(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import AppOptions, build_app

    policy_path = ROOT / "policies" / "minimal.yaml"
    app = cdk.App(outdir=str(tmp_path / "out"))
    built = build_app(app, load_policy(policy_path), AppOptions(policy_path=policy_path))
    app.synth()
    seen = 0
    for stack in built.stacks():
        resources = Template.from_stack(stack).to_json().get("Resources", {})
        functions = [
            r
            for r in resources.values()
            if r["Type"] == "AWS::Lambda::Function"
            and r["Properties"].get("Handler") == "regions.detector_lambda.handler"
        ]
        if not functions:
            continue
        seen += 1
        alarms = [
            r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"
        ]
        metrics = {(a.get("Namespace"), a.get("MetricName")) for a in alarms}
        assert ("AWS/Lambda", "Errors") in metrics
        assert ("AWS/Lambda", "IteratorAge") in metrics
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in metrics
        # a record left undetermined (its lineage entry never arrived), from the logs
        assert ("regionkit/minimal", "ConflictsUndetermined") in metrics
        (flt,) = [
            r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::MetricFilter"
        ]
        assert "conflict undetermined" in flt["FilterPattern"]
        assert flt["MetricTransformations"][0]["MetricName"] == "ConflictsUndetermined"
    assert seen == len(load_policy(policy_path).regions)
