"""Queries, indexes, cursors and batches through the router (deterministic local cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from regions import Sort
from regions.local.sim import Simulation, simulation
from regions.router import RegionRouter
from residency.errors import ConfigError, StaleWrite
from residency.policy import load_policy

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"


@pytest.fixture(scope="module")
def sim(root: Any) -> Iterator[Simulation]:
    with simulation(load_policy(root / "policies" / "feed.yaml"), seed=9, detect=False) as s:
        yield s


class Counting:
    """A client provider that counts requests per (region, operation)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def client(self, service: str, region: str) -> Any:
        inner, calls = self.inner.client(service, region), self.calls
        if service != "dynamodb":
            return inner

        class C:
            def __getattr__(self, name: str) -> Any:
                target = getattr(inner, name)
                if name.startswith("_") or not callable(target):
                    return target

                def call(*a: Any, **kw: Any) -> Any:
                    calls.append((region, name))
                    return target(*a, **kw)

                return call

        return C()


def test_a_feed_page_is_one_request_with_a_sealed_cursor(sim: Simulation) -> None:
    r = sim.routers[EU1]
    for i in range(25):
        r.put("feed", {"pk": "reader-1", "sk": f"2026-11-{i:02d}#p{i}", "post": f"p{i}"})
    counting = Counting(sim.clients)
    router = RegionRouter(sim.policy, region=EU1, clients=counting, config=r.config)
    first = router.query("feed", "reader-1", descending=True, limit=10)
    assert [i["post"] for i in first] == [f"p{i}" for i in range(24, 14, -1)]
    assert len(counting.calls) == 1 and first.cursor
    assert "reader-1" not in first.cursor and "2026" not in first.cursor
    second = router.query("feed", "reader-1", descending=True, limit=10, cursor=first.cursor)
    assert [i["post"] for i in second] == [f"p{i}" for i in range(14, 4, -1)]
    third = router.query("feed", "reader-1", descending=True, limit=10, cursor=second.cursor)
    assert len(third) == 5 and third.cursor is None  # the end
    assert len(counting.calls) == 3  # one request per page
    ranged = router.query("feed", "reader-1", sort=Sort.between("2026-11-03", "2026-11-06"))
    assert [i["post"] for i in ranged] == ["p3", "p4", "p5"]
    assert [
        i["post"] for i in router.query("feed", "reader-1", sort=Sort.begins_with("2026-11-2"))
    ] == [f"p{i}" for i in range(20, 25)]
    with pytest.raises(ConfigError, match="cursor is invalid"):
        router.query("feed", "reader-2", limit=10, cursor=first.cursor)  # another partition
    with pytest.raises(ConfigError, match="cursor is invalid"):
        router.query("feed", "reader-1", limit=10, cursor=first.cursor[:-4] + "AAAA")


def test_followers_through_a_policy_declared_index(sim: Simulation) -> None:
    r = sim.routers[US]
    for follower in ("u-a", "u-b", "u-c"):
        r.put("follows", {"pk": "star", "sk": follower})
    r.put("follows", {"pk": "other", "sk": "u-a"})
    followers = r.query("follows", "star")
    assert [i["sk"] for i in followers] == ["u-a", "u-b", "u-c"]
    following = r.query("follows", "u-a", index="by-follower")
    assert sorted(i["pk"] for i in following) == ["other", "star"]
    with pytest.raises(ConfigError, match="declares no index 'nope'"):
        r.query("follows", "u-a", index="nope")
    with pytest.raises(ConfigError, match="no consistent reads"):
        r.query("follows", "u-a", index="by-follower", consistent=True)


def test_batch_get_routes_each_pinned_key_to_its_own_home(sim: Simulation) -> None:
    r = sim.routers[US]
    users = []
    for country in ("DE", "US", "FR", "US"):
        uid = r.new_user_id(country=country)
        r.assign_home(uid, country=country)
        r.put("profile", {"pk": uid, "email": f"{country}@example.test"})
        users.append(uid)
    counting = Counting(sim.clients)
    router = RegionRouter(sim.policy, region=US, clients=counting, config=r.config)
    for uid in users:  # warm the directory cache, then count only the batch
        router.home_of(uid)
    counting.calls.clear()
    got = router.batch_get("profile", [{"pk": u} for u in users])
    assert sorted(i["pk"] for i in got.items) == sorted(users) and not got.unread
    assert sorted(counting.calls) == [(EU1, "batch_get_item"), (US, "batch_get_item")]


def test_batch_get_of_fifty_posts_and_batch_write_never_walks_through_a_fence(
    sim: Simulation,
) -> None:
    r = sim.routers[EU2]
    done = r.batch_write("posts", puts=[{"pk": f"bp-{i}", "body": "x"} for i in range(50)])
    assert len(done.written) == 50 and not done.failed
    got = r.batch_get("posts", [{"pk": f"bp-{i}"} for i in range(50)] + [{"pk": "missing"}])
    assert len(got.items) == 50
    r.delete("posts", {"pk": "bp-0"})
    assert len(r.batch_get("posts", [{"pk": "bp-0"}]).items) == 0  # tombstones hidden
    uid = r.new_user_id(country="DE")
    r.assign_home(uid, country="DE")
    r.put("profile", {"pk": uid, "email": "x@example.test"})
    stale = RegionRouter(sim.policy, region=US, clients=sim.clients, config=r.config)
    stale.home_of(uid)  # cached: EU
    assert r.move_user(uid, country="US").status == "done"
    out = stale.batch_write("profile", puts=[{"pk": uid, "email": "y@example.test"}])
    assert [w.route.region for w in out.written] == [US]  # followed the fence
    first = r.put("posts", {"pk": "cas", "body": "1"})
    r.put("posts", {"pk": "cas", "body": "2"}, based_on=first.version)
    older = r.batch_write("posts", puts=[{"pk": "cas", "body": "3"}])
    assert not older.failed  # a blind write with a newer stamp is plain LWW
    with pytest.raises(StaleWrite):
        r.put("posts", {"pk": "cas", "body": "4"}, based_on=first.version)


def test_put_with_an_expiry_sets_the_ttl_attribute(sim: Simulation) -> None:
    r = sim.routers[EU1]
    when = datetime(2030, 1, 1, tzinfo=UTC)
    r.put("posts", {"pk": "ttl-1", "body": "x"}, expires_at=when)
    assert int(sim.items(EU1, "posts")["ttl-1"]["expires_at"]) == int(when.timestamp())


def test_a_transaction_is_all_or_nothing_inside_one_region(sim: Simulation) -> None:
    r = sim.routers[EU1]
    first = r.put("posts", {"pk": "tx-a", "body": "1"})
    w = r.transact(
        [
            ("put", "posts", {"pk": "tx-a", "body": "2"}),
            ("put", "feed", {"pk": "rd", "sk": "1", "post": "tx-a"}),
        ],
        based_on={0: first.version},
    )
    assert w.route.region == EU1
    assert sim.items(EU1, "posts")["tx-a"]["body"] == "2"
    with pytest.raises(StaleWrite) as err:  # op 0 is based on a version that is gone
        r.transact(
            [
                ("put", "posts", {"pk": "tx-a", "body": "3"}),
                ("put", "posts", {"pk": "tx-b", "body": "x"}),
            ],
            based_on={0: first.version},
        )
    assert "tx-b" not in sim.items(EU1, "posts")  # nothing applied
    assert "tx-a" not in str(err.value)
    us_user = r.new_user_id(country="US")
    r.assign_home(us_user, country="US")
    with pytest.raises(ConfigError, match="different regions"):
        r.transact([("put", "profile", {"pk": us_user}), ("put", "posts", {"pk": "tx-c"})])
    with pytest.raises(ConfigError, match="twice"):
        r.transact([("put", "posts", {"pk": "tx-d"}), ("delete", "posts", {"pk": "tx-d"})])


def test_a_batch_get_goes_through_the_transport_retries_and_typed_errors(
    sim: Simulation,
) -> None:
    from botocore.exceptions import ClientError

    from residency.errors import Throttled

    r = sim.routers[EU2]
    r.put("posts", {"pk": "bt-0", "body": "x"})
    real = sim.clients.client
    throttles = {"left": 1}

    class Throttling:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            method = getattr(self.client, name)
            if name != "batch_get_item":
                return method

            def call(**kw: Any) -> Any:
                if throttles["left"]:
                    throttles["left"] -= 1
                    error = {"Code": "ThrottlingException", "Message": "slow down"}
                    raise ClientError({"Error": error}, "BatchGetItem")
                return method(**kw)

            return call

    sim.clients.client = lambda s, reg: (
        Throttling(real(s, reg)) if s == "dynamodb" else real(s, reg)
    )  # type: ignore[method-assign]
    try:
        assert len(r.batch_get("posts", [{"pk": "bt-0"}]).items) == 1  # retried in place
        throttles["left"] = 10**6
        with pytest.raises(Throttled):  # throttling that outlasts the retries, typed
            r.batch_get("posts", [{"pk": "bt-0"}])
    finally:
        sim.clients.client = real  # type: ignore[method-assign]
