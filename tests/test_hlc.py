"""Hybrid logical clock invariants (Kulkarni et al. 2014), checked with hypothesis."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regions.hlc import HLC, ClockDriftError, Stamp
from residency.errors import MalformedId

MAX_OFFSET = 500


class FakePhysical:
    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.t = start

    def __call__(self) -> int:
        return self.t


# An event: ("tick", node, dt) moves a physical clock forward (monotonic, as the model assumes),
# ("send", node) makes a local event, ("recv", src, dst) delivers src's last stamp to dst.
events = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(min_value=0, max_value=2), st.integers(0, 400)),
        st.tuples(st.just("send"), st.integers(min_value=0, max_value=2)),
        st.tuples(
            st.just("recv"),
            st.integers(min_value=0, max_value=2),
            st.integers(min_value=0, max_value=2),
        ),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_hlc_invariants(evts: list[tuple[object, ...]]) -> None:
    phys = [FakePhysical(), FakePhysical(1_700_000_000_100), FakePhysical(1_699_999_999_900)]
    clocks = [HLC(f"r{i}", physical=phys[i], max_offset_ms=MAX_OFFSET) for i in range(3)]
    last: list[Stamp | None] = [None, None, None]
    # happened-before edges: (earlier stamp, later stamp)
    edges: list[tuple[Stamp, Stamp]] = []
    for ev in evts:
        if ev[0] == "tick":
            _, node, dt = ev
            assert isinstance(node, int) and isinstance(dt, int)
            phys[node].t += dt
            continue
        if ev[0] == "send":
            node = ev[1]
            assert isinstance(node, int)
            before = clocks[node].peek()
            s = clocks[node].now()
        else:
            _, src, dst = ev
            assert isinstance(src, int) and isinstance(dst, int)
            remote = last[src]
            if remote is None:
                continue
            node = dst
            before = clocks[node].peek()
            try:
                s = clocks[node].observe(remote)
            except ClockDriftError:
                assert remote.l - phys[node]() > MAX_OFFSET
                assert clocks[node].peek() == before  # refused, not adopted
                continue
            edges.append((remote, s))
        pt = phys[node]()
        # monotonic per clock
        assert (s.l, s.c) > (before.l, before.c)
        # l >= pt, and the drift is bounded
        assert s.l >= pt
        assert s.l - pt <= MAX_OFFSET
        if last[node] is not None:
            edges.append((last[node], s))  # type: ignore[arg-type]
        last[node] = s
    for a, b in edges:
        assert a < b, "happened-before must imply a smaller stamp"


@given(
    st.integers(0, 2**48 - 1),
    st.integers(0, 0xFFFF),
    st.sampled_from(["us-east-1", "eu-west-1", "ap-south-2"]),
)
def test_text_form_round_trips_and_sorts(l: int, c: int, region: str) -> None:  # noqa: E741
    s = Stamp(l, c, region)
    assert Stamp.parse(str(s)) == s


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**48 - 1),
            st.integers(0, 0xFFFF),
            st.sampled_from(["us-east-1", "eu-west-1", "ap-south-2"]),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_text_order_equals_stamp_order(raw: list[tuple[int, int, str]]) -> None:
    stamps = [Stamp(*r) for r in raw]
    assert sorted(stamps) == sorted(stamps, key=str)


def test_remote_stamp_too_far_ahead_is_refused() -> None:
    phys = FakePhysical()
    clock = HLC("eu-west-1", physical=phys, max_offset_ms=100)
    far = Stamp(phys.t + 101, 0, "us-east-1")
    with pytest.raises(ClockDriftError) as err:
        clock.observe(far)
    assert err.value.ahead_ms == 101  # type: ignore[attr-defined]
    near = Stamp(phys.t + 100, 7, "us-east-1")
    assert clock.observe(near) == Stamp(phys.t + 100, 8, "eu-west-1", clock.node)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**48 - 1),
            st.integers(0, 3),
            st.sampled_from(["us-east-1", "eu-west-1", "ap-south-2"]),
            st.sampled_from(["", "00000000", "0a0b0c0d", "ffffffff", "a1b2c3d4"]),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_node_stamps_parse_back_and_sort_as_text(raw: list[tuple[int, int, str, str]]) -> None:
    stamps = [Stamp(*r) for r in raw]
    assert [Stamp.parse(str(s)) for s in stamps] == stamps
    assert str(stamps[0]).rsplit(".", 1)[-1] == stamps[0].region
    assert sorted(stamps) == sorted(stamps, key=str)


def test_two_clocks_in_one_region_never_mint_the_same_stamp() -> None:
    phys = FakePhysical()
    a, b = HLC("eu-west-1", physical=phys), HLC("eu-west-1", physical=phys)
    assert a.node != b.node and a.now() != b.now()


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    phys = FakePhysical()
    clock = HLC("eu-west-1", physical=phys)
    stamps = [clock.now() for _ in range(0x10002)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[-1].l == phys.t + 1


def test_malformed_stamp() -> None:
    with pytest.raises(MalformedId):
        Stamp.parse("not-a-stamp")


def test_thread_safe_and_unique() -> None:
    clock = HLC("us-east-1")
    out: list[Stamp] = []
    lock = threading.Lock()

    def work() -> None:
        local = [clock.now() for _ in range(2000)]
        with lock:
            out.extend(local)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == len(out) == 16000
