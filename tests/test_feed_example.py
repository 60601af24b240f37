"""The feed example service end to end, from two regions, on the real local cluster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regions.router import RegionRouter
from residency.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.feed_service import FeedService  # noqa: E402


@pytest.fixture(scope="module")
def feed_cluster() -> Iterator[Any]:
    from regions.local.cluster import LocalCluster

    with LocalCluster(load_policy(ROOT / "policies" / "feed.yaml"), replicate=True) as c:
        yield c


def test_the_feed_service_from_two_regions(feed_cluster: Any) -> None:
    c = feed_cluster
    eu = FeedService(RegionRouter(c.policy, region="eu-west-1", config=c.config()))
    us = FeedService(RegionRouter(c.policy, region="us-east-1", config=c.config()))
    alice = eu.sign_up(country="DE", name="Alice", email="alice@example.test")
    bob = us.sign_up(country="US", name="Bob", email="bob@example.test")
    us.follow(bob, alice)
    assert c.replicator.wait_converged(30)
    assert eu.followers(alice) == [bob] and us.following(bob) == [alice]
    posts = [eu.post(alice, f"hello {i}") for i in range(25)]
    assert c.replicator.wait_converged(30)
    page = us.feed(bob, limit=20)
    assert [p["pk"] for p in page.posts] == posts[::-1][:20] and page.cursor
    rest = us.feed(bob, limit=20, cursor=page.cursor)
    assert [p["pk"] for p in rest.posts] == posts[::-1][20:] and rest.cursor is None
    eu.react(posts[0], "like")
    us.react(posts[0], "like")
    assert c.replicator.wait_converged(30)
    assert eu.reactions(posts[0], "like") == us.reactions(posts[0], "like") == 2
    # Alice's profile stayed in the EU; Bob's in the US (raw reads of every region).
    for region in c.policy.regions:
        items = c.client(region).scan(TableName=c.table_name("profiles"))["Items"]
        pks = {i["pk"]["S"] for i in items}
        assert (alice in pks) == region.startswith("eu-")
        assert (bob in pks) == (region == "us-east-1")
