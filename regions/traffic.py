"""Sign-ups and a traffic mix through the router: what the demo and examples run.

Everything goes through :class:`~regions.router.RegionRouter`, one per region, as
services in those regions would: profiles (PII) to the subject's home region,
posts and reactions to the nearest replica, some posts edited concurrently from
several regions (conflicts the detector logs), reactions counted from several
regions at once (merged, none lost). Returns counts only; no PII leaves here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from regions.merges import increment_counter
from regions.router import RegionRouter
from residency.errors import RegionkitError, StaleWrite
from residency.policy import GlobalDataClass, PinnedDataClass, Policy

__all__ = ["SignUp", "TrafficStats", "run_traffic", "sign_up_users"]

_FIRST = ["Asha", "Bruno", "Chidi", "Dana", "Elif", "Farah", "Goran", "Hana", "Ines", "Jin"]


@dataclass(frozen=True)
class SignUp:
    user_id: str
    country: str
    jurisdiction: str
    home_region: str


@dataclass
class TrafficStats:
    signups: Counter[str] = field(default_factory=Counter)  # by jurisdiction
    profile_writes: Counter[str] = field(default_factory=Counter)  # by landing region
    profile_reads: int = 0
    posts: int = 0
    post_regions: Counter[str] = field(default_factory=Counter)
    reads: int = 0
    concurrent_edits: int = 0
    stale_writes: int = 0
    reactions: int = 0
    merged_writes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # jurisdiction -> landing regions of its profiles (must stay inside)
    profile_placement: dict[str, set[str]] = field(default_factory=dict)


def _countries(policy: Policy) -> list[str]:
    """A country for each jurisdiction, and one for the default (rest of the world)."""
    out = [c for j in policy.jurisdictions.values() for c in j.countries[:2]]
    listed = {c for j in policy.jurisdictions.values() for c in j.countries}
    for extra in ("NG", "KE", "JP", "AR"):
        if extra not in listed:
            out.append(extra)
            break
    return out


def sign_up_users(
    routers: Mapping[str, RegionRouter], policy: Policy, *, per_country: int = 3, seed: int = 0
) -> list[SignUp]:
    """Sign up residents of every jurisdiction, each from a random region's service."""
    rng = random.Random(seed)
    out: list[SignUp] = []
    regions = list(routers)
    for country in _countries(policy):
        for i in range(per_country):
            router = routers[rng.choice(regions)]
            uid = router.new_user_id(country=country, idempotency_key=f"demo-{seed}-{country}-{i}")
            entry = router.assign_home(uid, country=country)
            out.append(SignUp(uid, country, entry.jurisdiction, entry.home_region))
    return out


def run_traffic(
    routers: Mapping[str, RegionRouter],
    policy: Policy,
    users: list[SignUp],
    *,
    rounds: int = 3,
    seed: int = 0,
) -> TrafficStats:
    glob = [
        n
        for n, dc in policy.data_classes.items()
        if isinstance(dc, GlobalDataClass) and n != policy.system.directory
    ]
    traffic = _Traffic(
        routers,
        policy,
        users,
        seed,
        rng=random.Random(seed),
        pinned=[n for n, dc in policy.data_classes.items() if isinstance(dc, PinnedDataClass)],
        posts_dc=next((n for n in glob if n == "content"), glob[0] if glob else None),
        merge_dc=next(
            (
                n
                for n, dc in policy.data_classes.items()
                if isinstance(dc, GlobalDataClass) and not isinstance(dc.conflicts, str)
            ),
            None,
        ),
    )
    for u in users:
        traffic.stats.signups[u.jurisdiction] += 1
    for r in range(rounds):
        traffic.round(r)
    return traffic.stats


@dataclass
class _Traffic:
    """One run of demo traffic: who writes what, from where, and what it counted."""

    routers: Mapping[str, RegionRouter]
    policy: Policy
    users: list[SignUp]
    seed: int
    rng: random.Random
    pinned: list[str]  # profiles
    posts_dc: str | None  # posts and concurrent edits
    merge_dc: str | None  # reactions, merged
    stats: TrafficStats = field(default_factory=TrafficStats)

    @property
    def regions(self) -> list[str]:
        return list(self.routers)

    def attempt(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None when it fails (counted)."""
        try:
            return fn(*args, **kwargs)
        except StaleWrite:
            self.stats.stale_writes += 1
        except RegionkitError as exc:
            self.stats.errors[f"{what}: {type(exc).__name__}"] += 1
        return None

    def round(self, r: int) -> None:
        self.profiles(r)
        if self.posts_dc is None:
            return
        self.posts(r, self.posts_dc)
        self.edits(r, self.posts_dc)
        if self.merge_dc is not None:
            self.reactions(r, self.merge_dc)

    def profiles(self, r: int) -> None:
        """Profiles: written from wherever the user happens to be, routed home."""
        stats, policy, attempt = self.stats, self.policy, self.attempt
        for n, u in enumerate(self.users):
            router = self.routers[self.rng.choice(self.regions)]
            for dc in self.pinned:
                pk = policy.data_classes[dc].partition_key
                profile = {
                    pk: u.user_id,
                    "display_name": f"{_FIRST[n % len(_FIRST)]} {n}",
                    "email": f"user{n}@example.org",
                    "phone": f"+1 555 01{n:02d} {r}",
                    "round": r,
                }
                w = attempt("profile", router.put, dc, profile, subject=u.user_id)
                if w is not None:
                    stats.profile_writes[w.route.region] += 1
                    stats.profile_placement.setdefault(u.jurisdiction, set()).add(w.route.region)
                if attempt("profile read", router.get, dc, {pk: u.user_id}) is not None:
                    stats.profile_reads += 1

    def posts(self, r: int, posts_dc: str) -> None:
        """Posts from every region, read back where they landed."""
        stats, attempt = self.stats, self.attempt
        pk = self.policy.data_classes[posts_dc].partition_key
        for region in self.regions:
            key = f"post-{self.seed}-{r}-{region}"
            author = self.rng.choice(self.users).user_id if self.users else "anon"
            body = {pk: key, "author": author, "body": f"hello from {region}"}
            w = attempt("post", self.routers[region].put, posts_dc, body)
            if w is not None:
                stats.posts += 1
                stats.post_regions[w.route.region] += 1
            if attempt("read", self.routers[region].get, posts_dc, {pk: key}, consistent=True):
                stats.reads += 1

    def edits(self, r: int, posts_dc: str) -> None:
        """Concurrent edits: several regions edit one post before replication catches up."""
        routers, attempt, regions = self.routers, self.attempt, self.regions
        pk = self.policy.data_classes[posts_dc].partition_key
        hot = f"post-{self.seed}-{r}-{regions[0]}"
        editors = self.rng.sample(regions, k=min(3, len(regions)))
        seen = {e: attempt("edit read", routers[e].get, posts_dc, {pk: hot}) for e in editors}
        for e in editors:
            edit: dict[str, Any] = {pk: hot, "body": f"edited in {e}", "round": r}
            if attempt("edit", routers[e].put, posts_dc, edit, based_on=seen[e] or None):
                self.stats.concurrent_edits += 1

    def reactions(self, r: int, merge_dc: str) -> None:
        """Reactions from several regions at once: merged by per-region counters."""
        attempt, regions = self.attempt, self.regions
        mpk = self.policy.data_classes[merge_dc].partition_key
        target = f"reactions-{self.seed}-{r}"
        for region in self.rng.sample(regions, k=min(4, len(regions))):
            router = self.routers[region]
            current = attempt("reaction read", router.get, merge_dc, {mpk: target}) or {}
            body = increment_counter(
                {k: v for k, v in current.items() if not k.startswith("rk_")}, "like", region
            )
            body[mpk] = target
            w = attempt("reaction", router.put, merge_dc, body, based_on=current or None)
            if w is not None:
                self.stats.reactions += 1
                self.stats.merged_writes += int(w.merged)
