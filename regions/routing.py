"""Routing decisions: pure, precomputed, and checked by the residency guard.

For every (data class, origin) the candidate routes are computed once, in order:

* **pinned** data: the subject's home region first, then the other regions *of the
  same jurisdiction* (home regions first). Never a region across the border.
* **global** data: the replicas of the class, nearest to the origin first.

A cached decision is then a dict lookup and a walk of a short tuple, allocating
nothing. No I/O happens here: the directory lookup that supplies a pinned
subject's home lives in :mod:`regions.users`, the calls in :mod:`regions.transport`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal, NoReturn

from regions.health import RegionHealth
from residency.errors import RegionUnavailable
from residency.guard import ResidencyGuard
from residency.policy import GlobalDataClass, Policy

__all__ = ["Op", "Route", "RouteTable"]

Op = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes, and why."""

    region: str
    table_name: str
    reason: str
    failover: bool
    data_class: str = ""


class RouteTable:
    """Precomputed candidate chains and allowed regions for every data class."""

    def __init__(
        self, policy: Policy, tables: dict[str, str], guard: ResidencyGuard, health: RegionHealth
    ) -> None:
        self.policy = policy
        self.guard = guard
        self.health = health
        self.tables = tables
        self.kinds = {n: dc.kind for n, dc in policy.data_classes.items()}
        self._chains = self._precompute()
        self._allowed: dict[tuple[str, str], frozenset[str]] = {}
        for n, dc in policy.data_classes.items():
            if isinstance(dc, GlobalDataClass):
                self._allowed[(n, "")] = guard.allowed(n, None)
            else:
                for jid in policy.jurisdictions:
                    self._allowed[(n, jid)] = guard.allowed(n, jid)
        # (class, origin, jurisdiction or "") -> the chain's head, where the guard allows
        # it: the decision while every region is healthy, one dict lookup.
        self._heads: dict[tuple[str, str, str], Route] = {
            (n, origin, jid): chain[0]
            for (n, origin), chain in self._chains.items()
            for (m, jid), allowed in self._allowed.items()
            if m == n and chain and chain[0].region in allowed
        }

    def _precompute(self) -> dict[tuple[str, str], tuple[Route, ...]]:
        """(data class, origin region) → ordered candidate routes."""
        p, chains = self.policy, {}
        for name, dc in p.data_classes.items():
            table = self.tables[name]
            if isinstance(dc, GlobalDataClass):
                for origin in p.regions:
                    ordered = p.nearest_first(origin, list(dc.replicas))
                    chains[(name, origin)] = tuple(
                        Route(r, table, _global_reason(origin, r, i), i > 0, name)
                        for i, r in enumerate(ordered)
                    )
                continue
            for jid, j in p.jurisdictions.items():
                order = list(j.home_regions) + [r for r in j.regions if r not in j.home_regions]
                for home in j.regions:
                    ordered = [home] + [r for r in order if r != home]
                    chains[(name, home)] = tuple(
                        Route(
                            r,
                            table,
                            f"home region of the subject ({jid})"
                            if i == 0
                            else f"failover inside {jid}: home region unavailable",
                            i > 0,
                            name,
                        )
                        for i, r in enumerate(ordered)
                    )
        return chains

    def pick(
        self,
        data_class: str,
        origin: str,
        jurisdiction: str | None,
        op: Op,
        exclude: Collection[str] = (),
    ) -> Route:
        """The first healthy candidate for ``data_class`` from ``origin``.

        ``origin`` is the subject's home region (pinned) or the caller's region (global);
        ``jurisdiction`` is the subject's (pinned) or None (global).
        """
        health = self.health
        if not exclude and not health.unavailable:
            head = self._heads.get((data_class, origin, jurisdiction or ""))
            if head is not None:
                return head
        chain = self._chains[(data_class, origin)]
        allowed = self._allowed[(data_class, jurisdiction or "")]
        unavailable = health.unavailable
        for route in chain:
            r = route.region
            if r in exclude or (r in unavailable and not health.available(r)):
                continue
            if r not in allowed:  # never true by construction; the guard is the last word
                self.guard.check(op=op, data_class=data_class, region=r, jurisdiction=jurisdiction)
            return route
        self.raise_unavailable(data_class, jurisdiction, chain, exclude)

    def look(self, data_class: str, origin: str, jurisdiction: str | None, op: Op) -> Route:
        """:meth:`pick`, as a look only: it takes no half-open probe lease."""
        if not self.health.unavailable:  # nothing to probe: no need to hold the lease back
            head = self._heads.get((data_class, origin, jurisdiction or ""))
            return head if head is not None else self.pick(data_class, origin, jurisdiction, op)
        with self.health.peeking():
            return self.pick(data_class, origin, jurisdiction, op)

    def at(self, data_class: str, region: str, jurisdiction: str | None, op: Op) -> Route:
        """A route to one named region (moves, erasure, verification), guard-checked."""
        self.guard.check(op=op, data_class=data_class, region=region, jurisdiction=jurisdiction)
        return Route(region, self.tables[data_class], "named region", False, data_class)

    def raise_unavailable(
        self,
        data_class: str,
        jurisdiction: str | None,
        chain: tuple[Route, ...],
        exclude: Collection[str],
    ) -> NoReturn:
        reasons = "; ".join(
            f"{r.region} failed just now"
            if r.region in exclude
            else self.health.why_unavailable(r.region)
            for r in chain
        )
        if jurisdiction is None:
            raise RegionUnavailable(
                data_class=data_class, scope="any replica", reason=f"{reasons}; no replica left"
            )
        j = self.policy.jurisdictions[jurisdiction]
        if len(j.regions) == 1:
            tail = (
                f"{jurisdiction} has a single region, and {j.law} does not allow "
                f"{data_class} to fail over outside {jurisdiction}"
            )
        else:
            tail = (
                f"every region of {jurisdiction} is unavailable, and {j.law} "
                f"does not allow {data_class} to fail over outside it"
            )
        raise RegionUnavailable(
            data_class=data_class, scope=f"jurisdiction {jurisdiction}", reason=f"{reasons}; {tail}"
        )

    def chain(self, data_class: str, origin: str) -> tuple[Route, ...]:
        return self._chains[(data_class, origin)]

    def items(self) -> Iterator[tuple[tuple[str, str], tuple[Route, ...]]]:
        yield from self._chains.items()


def _global_reason(origin: str, region: str, i: int) -> str:
    if region == origin:
        return "local replica"
    if i == 0:
        return f"nearest replica to {origin}"
    return f"failover: replica #{i + 1} nearest to {origin}"
