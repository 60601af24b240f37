"""Fake users for a local cluster (``regionkit users seed``): every jurisdiction, fake PII.

Countries cycle through every jurisdiction's countries plus one that only the default
jurisdiction covers (NG if no jurisdiction lists it). Each user gets a directory entry
and a profile in every pinned class of its home region, with fake PII-looking values.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from residency.policy import PinnedDataClass, Policy

if TYPE_CHECKING:
    from regions.router import RegionRouter

__all__ = ["SeedResult", "fake_value", "seed_countries", "seed_users"]


def seed_countries(policy: Policy) -> list[str]:
    """One round of countries: each jurisdiction's next country, then a default-jurisdiction
    one (a country no jurisdiction lists, NG if possible)."""
    from iso3166 import countries_by_alpha2

    listed = {c for j in policy.jurisdictions.values() for c in j.countries}
    unlisted = "NG"
    if unlisted in listed:
        unlisted = next(c for c in countries_by_alpha2 if c not in listed)
    lists = [list(j.countries) for j in policy.jurisdictions.values() if j.countries]
    longest = max((len(c) for c in lists), default=1)
    out: list[str] = []
    for i in range(longest):
        out += [c[i % len(c)] for c in lists]
        out.append(unlisted)
    return out


def fake_value(attribute: str, i: int) -> str:
    """A PII-looking but fake value (never printed)."""
    a = attribute.lower()
    if "mail" in a:
        return f"seed.user{i:05d}@example.invalid"
    if "phone" in a:
        return f"+1 555 01{i % 100:02d} {i % 10_000:04d}"
    if "birth" in a or "date" in a:
        return f"19{70 + i % 30}-{1 + i % 12:02d}-{1 + i % 28:02d}"
    if "address" in a:
        return f"{i} Example Street, Springfield"
    if "name" in a:
        return f"Seed User {i}"
    return f"fake {attribute} {i}"


@dataclass(frozen=True)
class SeedResult:
    """The users created: ``user_id``, ``country``, ``jurisdiction`` and ``home_region``."""

    users: list[dict[str, str]]
    fake_pii_attributes: list[str]

    def by_jurisdiction(self) -> dict[str, int]:
        return dict(sorted(Counter(u["jurisdiction"] for u in self.users).items()))

    def by_home(self) -> dict[tuple[str, str], int]:
        """Users per (jurisdiction, home region), sorted."""
        return dict(
            sorted(Counter((u["jurisdiction"], u["home_region"]) for u in self.users).items())
        )


def seed_users(router: RegionRouter, count: int, *, workers: int = 8) -> SeedResult:
    """Create ``count`` fake users through ``router``; the first alone, to fail fast."""
    policy = router.policy
    pinned = {n: d for n, d in policy.data_classes.items() if isinstance(d, PinnedDataClass)}
    rounds = seed_countries(policy)
    countries = [rounds[i % len(rounds)] for i in range(count)]

    def create(i: int) -> dict[str, str]:
        country = countries[i]
        uid = router.new_user_id(country=country)
        entry = router.assign_home(uid, country=country)
        for name, d in pinned.items():
            fake = {a: fake_value(a, i) for a in d.pii_attributes}
            router.put(name, {d.partition_key: uid, **fake})
        return {
            "user_id": uid,
            "country": country,
            "jurisdiction": entry.jurisdiction,
            "home_region": entry.home_region,
        }

    first = create(0)  # fail fast, and clearly, when the cluster does not answer
    with ThreadPoolExecutor(max_workers=workers) as pool:
        users = [first, *pool.map(create, range(1, count))]
    attrs = sorted({a for d in pinned.values() for a in d.pii_attributes})
    return SeedResult(users, attrs)
