"""A small feed service that uses only the region router (policy: ``policies/feed.yaml``).

Sign-up, a post, a follow (followers found through a GSI), a feed page with a cursor,
a batch get of the feed's posts, and a reaction. Every call goes through
``RegionRouter``, so the residency guard, the HLC versions and the move fences apply
to all of it; nothing here touches boto3.

    from examples.feed_service import FeedService
    svc = FeedService(RegionRouter.from_env())   # REGIONKIT_* env, .env, `local up` state
    alice = svc.sign_up(country="DE", name="Alice", email="...")
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from regions import RegionRouter, Sort
from regions.merges import increment_counter
from residency.merges import total


@dataclass(frozen=True)
class FeedPage:
    posts: list[dict[str, Any]]
    cursor: str | None


class FeedService:
    def __init__(self, router: RegionRouter, *, clock: Any = None) -> None:
        self.router = router
        self.clock = clock or (lambda: datetime.now(UTC))

    def sign_up(self, *, country: str, name: str, email: str, request_id: str | None = None) -> str:
        uid = self.router.new_user_id(country=country, idempotency_key=request_id)
        self.router.assign_home(uid, country=country)
        self.router.put("profile", {"pk": uid, "display_name": name, "email": email})
        return uid

    def follow(self, follower: str, followee: str) -> None:
        self.router.put("follows", {"pk": followee, "sk": follower})

    def followers(self, user: str) -> list[str]:
        return [i["sk"] for i in self.router.query("follows", user)]

    def following(self, user: str) -> list[str]:
        return [i["pk"] for i in self.router.query("follows", user, index="by-follower")]

    def post(self, author: str, body: str) -> str:
        """Store the post, then fan it out to each follower's feed (one partition each)."""
        post_id = f"post-{uuid.uuid4().hex[:12]}"
        self.router.put("posts", {"pk": post_id, "author_id": author, "body": body})
        stamp = self.clock().strftime("%Y-%m-%dT%H:%M:%S.%f")
        entries = [
            {"pk": reader, "sk": f"{stamp}#{post_id}", "post": post_id}
            for reader in self.followers(author)
        ]
        if entries:
            self.router.batch_write("feed", puts=entries)
        return post_id

    def feed(self, reader: str, *, limit: int = 20, cursor: str | None = None) -> FeedPage:
        """The newest posts first: one query page, then one batch get of the posts."""
        page = self.router.query("feed", reader, descending=True, limit=limit, cursor=cursor)
        got = self.router.batch_get("posts", [{"pk": e["post"]} for e in page])
        by_id = {p["pk"]: p for p in got.items}
        return FeedPage([by_id[e["post"]] for e in page if e["post"] in by_id], page.cursor)

    def feed_since(self, reader: str, since: datetime) -> list[str]:
        page = self.router.query("feed", reader, sort=Sort.ge(since.isoformat()[:19]))
        return [e["post"] for e in page]

    def react(self, post_id: str, emoji: str) -> None:
        """A grow-only counter per region; concurrent reactions merge (no reaction lost)."""
        current = self.router.get("reactions", {"pk": post_id})
        region = self.router.region or self.router.policy.regions[0]
        item = increment_counter(current or {"pk": post_id}, emoji, region)
        body = {k: v for k, v in item.items() if not k.startswith("rk_")}
        self.router.put("reactions", body, based_on=current)

    def reactions(self, post_id: str, emoji: str) -> int:
        return total(self.router.get("reactions", {"pk": post_id}) or {}, emoji)
