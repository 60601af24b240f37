"""The live emulator's pollers: each table at its own pace, and honest about catching up.

A region holds several replicated tables, most of them quiet. A poller that read
every table on every round while one was busy spent most of the emulator's CPU on
empty reads. These tests drive one region's poll loop over a fake engine (no
servers): which tables it reads, and when it calls the region caught up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from regions.local.replication import Replicator
from residency.policy import Policy, load_policy


class _NoClients:
    def client(self, service: str, region: str) -> Any:
        raise AssertionError("the fake engine sends no request")


def _replicator(policy: Policy) -> Replicator:
    return Replicator(policy, _NoClients(), poll_interval=0.001, max_idle_interval=0.05)


def test_a_busy_table_does_not_make_the_quiet_ones_be_read(minimal_policy_path: Any) -> None:
    rep = _replicator(load_policy(minimal_policy_path))
    region = rep.regions[0]
    tables = rep.engine.tables_in(region)
    busy = "content"
    assert busy in tables and len(tables) >= 3
    reads: Counter[str] = Counter()

    def poll(r: str, table: str | None = None, *, now: float | None = None) -> int:
        assert r == region and table is not None  # one table at a time
        reads[table] += 1
        if table == busy and reads[busy] >= 300:
            rep._stop.set()
        return 1 if table == busy else 0

    rep.engine.poll = poll  # type: ignore[method-assign]
    rep._poll_loop(region)
    quiet = {t: n for t, n in reads.items() if t != busy}
    assert reads[busy] == 300
    assert set(quiet) == set(tables) - {busy}  # every table is still read
    assert max(quiet.values()) <= 100, quiet  # but the quiet ones far less often


def test_a_region_is_caught_up_only_after_every_table_read_nothing(
    minimal_policy_path: Any,
) -> None:
    rep = _replicator(load_policy(minimal_policy_path))
    region = rep.regions[0]
    records = {"content": 5}  # waiting in one table
    started = time.monotonic()

    def poll(r: str, table: str | None = None, *, now: float | None = None) -> int:
        assert table is not None
        n = records.get(table, 0)
        records[table] = 0
        return n

    rep.engine.poll = poll  # type: ignore[method-assign]
    loop = threading.Thread(target=rep._poll_loop, args=(region,), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while not rep._idle.get(region) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rep._idle.get(region)
        caught_up = rep._caught_up[region]
        assert caught_up >= started
        # a write after that point: the region is no longer caught up as of then
        written = time.monotonic()
        records["content"] = 1
        while rep._caught_up.get(region, -1.0) < written and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rep._caught_up[region] >= written and records["content"] == 0
    finally:
        rep._stop.set()
        loop.join(timeout=5)


def _quiet_region(
    policy_path: Any, *, deep_after: float, deep_every: float
) -> tuple[Replicator, str, Counter[str]]:
    """A replicator whose fake engine finds nothing anywhere, its reads counted."""
    rep = Replicator(
        load_policy(policy_path),
        _NoClients(),
        poll_interval=0.001,
        max_idle_interval=0.005,
        deep_idle_after=deep_after,
        deep_idle_interval=deep_every,
    )
    reads: Counter[str] = Counter()

    def poll(r: str, table: str | None = None, *, now: float | None = None) -> int:
        assert table is not None
        reads[table] += 1
        return 0

    rep.engine.poll = poll  # type: ignore[method-assign]
    return rep, rep.regions[0], reads


@contextlib.contextmanager
def _polling(rep: Replicator, region: str) -> Iterator[None]:
    """``region``'s poll loop on a thread, stopped (and woken to see it) on the way out."""
    loop = threading.Thread(target=rep._poll_loop, args=(region,), daemon=True)
    loop.start()
    try:
        yield
    finally:
        rep._stop.set()
        rep.nudge()
        loop.join(timeout=5)


def test_a_long_quiet_table_is_read_rarely(minimal_policy_path: Any) -> None:
    """An idle cluster read each table 20 times a second (0.7 of a core); after
    ``deep_idle_after`` a quiet table is read every ``deep_idle_interval`` only."""
    rep, region, reads = _quiet_region(minimal_policy_path, deep_after=0.05, deep_every=0.2)
    with _polling(rep, region):
        time.sleep(0.2)  # past deep_idle_after, however slowly the loop ran
        before, start = Counter(reads), time.monotonic()
        time.sleep(1.0)
        after, window = Counter(reads), time.monotonic() - start
    later = {t: after[t] - before[t] for t in after}
    # At most one read per 0.2 s of the window as it really lasted (a loaded machine
    # stretches it), plus the read in flight at each end; at max_idle_interval (5 ms)
    # it would be about 200 a second.
    assert later and max(later.values()) <= window / 0.2 + 2, (later, window)


def test_a_waiter_wakes_every_poller(minimal_policy_path: Any) -> None:
    """A table in deep idle (read every 60 s here) is read at once when wait_converged
    starts, so a write made just before is seen and the wait does not last 60 s."""
    rep, region, reads = _quiet_region(minimal_policy_path, deep_after=0.0, deep_every=60.0)
    rep.regions = [region]  # wait_converged looks at this region only
    with _polling(rep, region):
        deadline = time.monotonic() + 30
        while not rep._idle.get(region) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.1)  # every table now waits 60 s for its next read
        before = Counter(reads)
        assert rep.wait_converged(30)  # needs every table read after the call
        assert all(reads[t] > before[t] for t in before), (before, reads)
