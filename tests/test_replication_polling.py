"""The live emulator's pollers: each table at its own pace, and honest about catching up.

A region holds several replicated tables, most of them quiet. A poller that read
every table on every round while one was busy spent most of the emulator's CPU on
empty reads. These tests drive one region's poll loop over a fake engine (no
servers): which tables it reads, and when it calls the region caught up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
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
