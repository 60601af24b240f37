"""Reading the conflict log as `regionkit conflicts list | stats` do: nearest region that
answers, filters, counts (the CLI only renders what these return)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from regions.conflict_reading import CONFLICT_KINDS, ConflictFilter, read_nearest, summarize
from regions.conflicts import ConflictLogScan
from residency.errors import OperationError
from residency.policy import load_policy
from residency.records import ConflictRecord

POLICY = load_policy(Path(__file__).resolve().parent.parent / "policies" / "social-network.yaml")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _record(i: int, kind: str, data_class: str, key: str, minutes: int) -> ConflictRecord:
    return ConflictRecord(
        conflict_id=f"c{i}",
        table=data_class,
        data_class=data_class,
        key=key,
        kind=kind,  # type: ignore[arg-type]
        winner_version="w",
        loser_version="l",
        winner_region="eu-west-1",
        loser_region="us-east-1" if i % 2 else "eu-central-1",
        resolution="lww",
        repaired=i % 3 == 0,
        occurred_at=T0 + timedelta(minutes=minutes),
        detected_at=T0 + timedelta(minutes=minutes, seconds=1),
        detected_in="eu-west-1",
    )


class _Log:
    """A ConflictLog whose regions in ``down`` do not answer."""

    def __init__(self, down: set[str], scan: ConflictLogScan) -> None:
        self.policy, self.down, self.scan, self.asked = POLICY, down, scan, []  # type: ignore[var-annotated]

    def read(self, region: str) -> ConflictLogScan:
        self.asked.append(region)
        if region in self.down:
            raise EndpointConnectionError(endpoint_url=f"http://{region}")
        return self.scan


def test_the_log_is_read_where_asked_first_then_nearest_first() -> None:
    scan = ConflictLogScan(records=[], unreadable=[])
    log: Any = _Log({"eu-west-1", "eu-central-1"}, scan)
    region, got = read_nearest(log, "eu-west-1")
    assert got is scan
    assert log.asked[0] == "eu-west-1" and region == log.asked[-1]
    assert region not in {"eu-west-1", "eu-central-1"}
    assert log.asked[:2] == ["eu-west-1", "eu-central-1"]  # the nearest after the first


def test_no_region_answering_is_an_operation_error_naming_each() -> None:
    log: Any = _Log(set(POLICY.regions), ConflictLogScan(records=[], unreadable=[]))
    with pytest.raises(OperationError) as info:
        read_nearest(log, None)
    assert all(f"{r}: EndpointConnectionError" in str(info.value) for r in POLICY.regions)


@given(
    records=st.lists(
        st.tuples(
            st.sampled_from(CONFLICT_KINDS),
            st.sampled_from(["content", "reactions"]),
            st.sampled_from(["a", "b"]),
            st.integers(0, 100),
        ),
        max_size=30,
    ),
    kind=st.none() | st.sampled_from(CONFLICT_KINDS),
    data_class=st.none() | st.just("content"),
    key=st.none() | st.just("a"),
    since=st.none() | st.integers(0, 100),
)
def test_a_filter_keeps_exactly_the_records_matching_every_field_given(
    records: list[tuple[str, str, str, int]],
    kind: str | None,
    data_class: str | None,
    key: str | None,
    since: int | None,
) -> None:
    recs = [_record(i, *r) for i, r in enumerate(records)]
    after = None if since is None else T0 + timedelta(minutes=since)
    got = ConflictFilter(since=after, data_class=data_class, kind=kind, key=key).select(recs)
    expected = [
        r
        for r, (k, dc, pk, m) in zip(recs, records, strict=True)
        if (kind is None or k == kind)
        and (data_class is None or dc == data_class)
        and (key is None or pk == key)
        and (since is None or m >= since)
    ]
    assert got == expected


def test_the_summary_counts_every_record_once_per_view() -> None:
    recs = [_record(i, CONFLICT_KINDS[i % 3], "content", "a", i) for i in range(7)]
    s = summarize(ConflictLogScan(records=recs, unreadable=[]))
    assert s["total"] == 7
    for view in ("by_kind", "by_data_class", "by_resolution", "by_regions"):
        assert sum(s[view].values()) == 7
    assert s["by_kind"] == {"concurrent": 3, "inversion": 2, "lost_write": 2}
    assert s["repaired"] == 3  # records 0, 3, 6
    assert (s["first"], s["last"]) == (
        recs[0].occurred_at.isoformat(),
        recs[-1].occurred_at.isoformat(),
    )
    assert summarize(ConflictLogScan(records=[], unreadable=[]))["first"] is None
