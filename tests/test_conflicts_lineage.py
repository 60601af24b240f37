"""Per-region detectors share parents through the lineage table (regions.lineage).

On AWS each region's detector reads only its own region's streams. A blind write
replicated into another region says nothing about what it replaced where it
landed; the detector of its landing region publishes that parent, and the others
look it up. These tests drive the Lambda handler on recorded stream events:

* a replicated blind write whose entry has not replicated yet is reported in
  ``batchItemFailures`` (retried by Lambda), never judged by guess;
* once the entry is there, a sequential blind write is no conflict, and a blind
  write over a version its landing region never held is one;
* an entry that never arrives leaves the record *undetermined* (counted, logged),
  not a conflict, once the record is older than the bound;
* the local cluster's detector, which reads every stream, writes no lineage.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regions.codec import to_ddb
from regions.conflicts import ConflictDetector, ConflictLog
from regions.detector_lambda import handler
from regions.hlc import HLC
from regions.lineage import SharedLineage
from regions.local.sim import Simulation, simulation
from residency.policy import load_policy

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"
ROOT = Path(__file__).resolve().parent.parent
LINEAGE = "regionkit-lineage"


def v(ms: int, region: str, node: str = "0000000a") -> str:
    return f"{ms:012x}.0000.{node}.{region}"


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with simulation(load_policy(ROOT / "policies" / "minimal.yaml"), seed=3, detect=False) as s:
        yield s


def _detector(sim: Simulation, **kw: Any) -> ConflictDetector:
    return ConflictDetector(
        sim.policy,
        sim.clients,
        clock=lambda r: HLC(r, node="0000000e"),
        shared=SharedLineage(sim.clients, LINEAGE),
        **kw,
    )


def _event(
    region: str,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    seq: str,
    created: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Keys": to_ddb({"pk": new["pk"]}),
        "NewImage": to_ddb(new),
        "SequenceNumber": seq,
        "ApproximateCreationDateTime": (created or datetime.now(UTC)).timestamp(),
    }
    if old is not None:
        body["OldImage"] = to_ddb(old)
    return {
        "eventName": "MODIFY" if old else "INSERT",
        "awsRegion": region,
        "eventSourceARN": f"arn:aws:dynamodb:{region}:123456789012:table/content/stream/x",
        "dynamodb": body,
    }


def _entries(sim: Simulation, region: str) -> dict[str, Any]:
    items = sim.clients.raw(region).scan(TableName=LINEAGE)["Items"]
    return {i["pk"]["S"]: i.get("parent", {}).get("S") for i in items}


def _replicate_lineage(sim: Simulation) -> None:
    sim.clients.mark_dirty(US, LINEAGE)
    sim.settle()


def test_a_replicated_blind_write_waits_for_its_parent_then_is_no_conflict(
    sim: Simulation,
) -> None:
    first = {"pk": "q", "rk_v": v(1, EU1), "rk_at": EU1, "body": "0"}
    blind = {"pk": "q", "rk_v": v(5, US), "rk_at": US, "body": "1"}  # no rk_base, no vector
    us, eu2 = _detector(sim), _detector(sim)
    # EU2's detector sees the replicated write before US's entry reached EU2
    out = handler({"Records": [_event(EU2, first, blind, "41")]}, None, detector=eu2)
    assert out == {"batchItemFailures": [{"itemIdentifier": "41"}], "conflicts": 0}
    # the landing region publishes what the write replaced there
    assert handler({"Records": [_event(US, first, blind, "42")]}, None, detector=us) == {
        "batchItemFailures": [],
        "conflicts": 0,
    }
    assert _entries(sim, US) == {f"content#{v(5, US)}": v(1, EU1)}
    _replicate_lineage(sim)
    assert _entries(sim, EU2) == _entries(sim, US)
    out = handler({"Records": [_event(EU2, first, blind, "41")]}, None, detector=eu2)
    assert out == {"batchItemFailures": [], "conflicts": 0}
    assert ConflictLog(sim.policy, sim.clients).scan(EU2) == []
    assert eu2.counts["lineage_lookups"] >= 1 and eu2.counts["undetermined"] == 0


def test_a_blind_write_over_a_version_it_never_replaced_is_a_lost_write(sim: Simulation) -> None:
    first = {"pk": "k", "rk_v": v(1, EU1), "rk_at": EU1, "body": "0"}
    ours = {"pk": "k", "rk_v": v(3, EU2), "rk_at": EU2, "body": "eu2"}  # EU2's own edit
    blind = {"pk": "k", "rk_v": v(5, US), "rk_at": US, "body": "us"}  # replaced `first` in US
    us, eu2 = _detector(sim), _detector(sim)
    handler({"Records": [_event(US, first, blind, "51")]}, None, detector=us)
    handler({"Records": [_event(EU2, first, ours, "52")]}, None, detector=eu2)
    _replicate_lineage(sim)
    out = handler({"Records": [_event(EU2, ours, blind, "53")]}, None, detector=eu2)
    assert out == {"batchItemFailures": [], "conflicts": 1}
    (rec,) = ConflictLog(sim.policy, sim.clients).scan(EU2)
    assert (rec.loser_version, rec.winner_version) == (v(3, EU2), v(5, US))


def test_a_parent_that_never_arrives_is_undetermined_not_a_conflict(sim: Simulation) -> None:
    first = {"pk": "u", "rk_v": v(1, EU1), "rk_at": EU1, "body": "0"}
    blind = {"pk": "u", "rk_v": v(5, US), "rk_at": US, "body": "1"}
    eu2 = _detector(sim, lineage_max_age_s=60)
    young = _event(EU2, first, blind, "61", created=datetime.now(UTC) - timedelta(seconds=30))
    assert handler({"Records": [young]}, None, detector=eu2)["batchItemFailures"]
    old = _event(EU2, first, blind, "61", created=datetime.now(UTC) - timedelta(seconds=61))
    assert handler({"Records": [old]}, None, detector=eu2) == {
        "batchItemFailures": [],
        "conflicts": 0,
    }
    assert eu2.counts["undetermined"] == 1
    assert ConflictLog(sim.policy, sim.clients).scan(EU2) == []


def test_lookups_of_a_batch_go_in_one_batch_get(sim: Simulation) -> None:
    us, eu2 = _detector(sim), _detector(sim)
    pairs = []
    for i in range(150):
        first = {"pk": f"b{i}", "rk_v": v(1, EU1), "rk_at": EU1, "body": "0"}
        blind = {"pk": f"b{i}", "rk_v": v(10 + i, US), "rk_at": US, "body": "1"}
        pairs.append((first, blind))
    landing = [_event(US, a, b, str(100 + i)) for i, (a, b) in enumerate(pairs)]
    assert us.shared is not None and eu2.shared is not None
    handler({"Records": landing[:100]}, None, detector=us)
    handler({"Records": landing[100:]}, None, detector=us)
    assert us.shared.requests == 6  # 150 entries, 25 a BatchWriteItem
    _replicate_lineage(sim)
    replicated = [_event(EU2, a, b, str(300 + i)) for i, (a, b) in enumerate(pairs[:100])]
    before = eu2.shared.requests
    out = handler({"Records": replicated}, None, detector=eu2)
    assert out == {"batchItemFailures": [], "conflicts": 0}
    assert eu2.shared.requests - before == 1  # 100 parents, one BatchGetItem


def test_the_local_cluster_detector_reads_every_stream_and_writes_no_lineage(
    sim: Simulation,
) -> None:
    first = {"pk": "l", "rk_v": v(1, EU1), "rk_at": EU1, "body": "0"}
    blind = {"pk": "l", "rk_v": v(5, US), "rk_at": US, "body": "1"}
    det = sim.detector
    assert det.shared is None
    events = [_event(US, first, blind, "71"), _event(EU2, first, blind, "72")]
    assert handler({"Records": events}, None, detector=det)["conflicts"] == 0
    assert _entries(sim, US) == {}


def test_a_repair_read_by_a_cold_detector_is_not_taken_for_a_landing(sim: Simulation) -> None:
    """An inversion's repair writes the HLC winner O back over N in O's landing region.
    A detector that starts cold (a new execution environment, a shard rollover) and
    reads that record never saw O land: it must not publish N as O's parent over the
    right entry (P), or another region later logs P as lost to O."""
    from regions.codec import from_ddb

    p, n, o = v(1, EU1), v(3, US), v(5, EU1)
    first = {"pk": "k", "rk_v": p, "rk_at": EU1, "body": "p"}
    theirs = {"pk": "k", "rk_v": n, "rk_at": US, "body": "n"}  # US never had P
    ours = {"pk": "k", "rk_v": o, "rk_at": EU1, "body": "o"}  # a blind write over P
    handler({"Records": [_event(US, None, theirs, "61")]}, None, detector=_detector(sim))
    _replicate_lineage(sim)
    warm = _detector(sim)
    handler({"Records": [_event(EU1, first, ours, "62")]}, None, detector=warm)
    assert _entries(sim, EU1)[f"content#{o}"] == p
    raw = sim.clients.raw(EU1)
    raw.put_item(TableName="content", Item=to_ddb(theirs))  # N replicated in over O
    handler({"Records": [_event(EU1, ours, theirs, "63")]}, None, detector=warm)  # repairs
    back = from_ddb(raw.get_item(TableName="content", Key=to_ddb({"pk": "k"}))["Item"]) or {}
    assert back["rk_v"] == o  # O was written back
    cold = _detector(sim)  # the repair's own record, read by a fresh detector
    handler({"Records": [_event(EU1, theirs, back, "64")]}, None, detector=cold)
    assert _entries(sim, EU1)[f"content#{o}"] == p  # still P, not N
    _replicate_lineage(sim)
    eu2 = _detector(sim)  # EU2 still held P; O arrives over it: no conflict
    out = handler({"Records": [_event(EU2, first, ours, "65")]}, None, detector=eu2)
    assert out["conflicts"] == 0
    assert [r for r in ConflictLog(sim.policy, sim.clients).scan(EU2) if r.loser_version == p] == []
