"""Why a request for a user's data goes where it goes: ``regionkit route`` without a terminal.

:func:`explain_route` returns a :class:`RouteExplanation`: the user's home and where it
was learnt, the route the router takes now (or why it refuses), and the failover chain
with each region's health. The decision needs no cluster: when the directory cannot be
reached, the home region comes from the hint inside the user ID, and the explanation
says so. The CLI renders it; nothing here prints.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regions.directory import DirectoryEntry
from regions.ids import parse_user_id
from regions.routing import Op, Route
from residency.errors import RegionkitError, RegionUnavailable
from residency.policy import Jurisdiction, PinnedDataClass, Policy

if TYPE_CHECKING:
    from regions.router import RegionRouter

__all__ = ["ChainStep", "RouteExplanation", "default_data_class", "explain_route", "probe_regions"]


@dataclass(frozen=True)
class ChainStep:
    """One region of the failover chain, with what a probe found."""

    region: str
    reason: str
    health: str  # "up", "unreachable (...)", or "not probed (no cluster)"
    available: bool | None  # to the router now; None when nothing was probed


@dataclass(frozen=True)
class RouteExplanation:
    """Where a request for a user's data goes now, and why."""

    user_id: str
    data_class: str
    kind: str
    op: Op
    from_region: str | None
    home: DirectoryEntry
    directory_reachable: bool
    directory_note: str
    chain: tuple[ChainStep, ...]
    decision: Route | None
    refused: RegionUnavailable | None  # why no region may serve it now
    jurisdiction: Jurisdiction | None  # pinned data classes only

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``regionkit route --json``)."""
        d = self.decision
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "data_class": self.data_class,
            "kind": self.kind,
            "op": self.op,
            "from_region": self.from_region,
            "home": {
                "region": self.home.home_region,
                "jurisdiction": self.home.jurisdiction,
                "status": self.home.status,
                "source": self.home.source,
            },
            "directory": {"reachable": self.directory_reachable, "note": self.directory_note},
            "decision": None
            if d is None
            else {
                "region": d.region,
                "table": d.table_name,
                "failover": d.failover,
                "reason": d.reason,
            },
            "error": None if self.refused is None else str(self.refused),
            "chain": [vars(step).copy() for step in self.chain],
        }
        if self.jurisdiction is not None:
            out["jurisdiction"] = {
                "id": self.home.jurisdiction,
                "law": self.jurisdiction.law,
                "regions": list(self.jurisdiction.regions),
            }
        return out


def default_data_class(policy: Policy, data_class: str | None) -> str:
    """``data_class``, else the policy's first pinned class, else the directory."""
    if data_class is not None:
        return data_class
    pinned = [n for n, d in policy.data_classes.items() if isinstance(d, PinnedDataClass)]
    return pinned[0] if pinned else policy.system.directory


def probe_regions(router: RegionRouter, regions: list[str]) -> dict[str, str]:
    """Ask each region a cheap question, in parallel; mark the silent ones down for the router."""

    def ask(region: str) -> str:
        try:
            router.clients.client("dynamodb", region).list_tables(Limit=1)
        except Exception as exc:  # any failure to answer is the answer
            router.health.mark_down(region, f"did not answer a probe: {type(exc).__name__}")
            return f"unreachable ({type(exc).__name__})"
        router.health.mark_up(region, "answered a probe")
        return "up"

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(regions)))) as pool:
        return dict(zip(regions, pool.map(ask, regions), strict=True))


def _home(
    router: RegionRouter, user_id: str, offline: str | None
) -> tuple[DirectoryEntry, str | None, str]:
    """The user's home, why the directory could not say (or None), and a note for people."""
    from botocore.exceptions import BotoCoreError, ClientError

    unreachable, entry = offline, None
    if offline is None:
        try:
            entry = router.home_of(user_id)
        except (RegionkitError, BotoCoreError, ClientError) as exc:
            unreachable = f"the directory cannot be reached ({type(exc).__name__}: {exc})"
    if entry is None:
        hint = parse_user_id(user_id).home_hint
        jid = router.policy.jurisdiction_of_region(hint)
        entry = DirectoryEntry(user_id, hint, jid, source="id-hint")
        router.directory.put(entry)
        return entry, unreachable, f"{unreachable}; using the home region in the user ID"
    if entry.source == "id-hint" and router.health.unavailable:
        return (
            entry,
            unreachable,
            f"the directory could not be read ({', '.join(sorted(router.health.unavailable))} "
            "did not answer); using the home region in the user ID",
        )
    if entry.source == "id-hint":
        return (
            entry,
            unreachable,
            "the directory has no entry for this user here (not assigned, or not replicated "
            "yet); using the home region in the user ID",
        )
    return entry, unreachable, "from the directory"


def explain_route(
    router: RegionRouter,
    user_id: str,
    data_class: str | None = None,
    op: Op = "read",
    *,
    offline: str | None = None,
) -> RouteExplanation:
    """Explain where ``router`` sends ``op`` on ``user_id``'s ``data_class`` now.

    ``offline`` is why nothing can be reached (no cluster): then neither the directory
    nor the regions are asked, and the home comes from the hint inside the user ID.
    Otherwise each region of the chain is probed first, and the router learns which
    answer.
    """
    policy = router.policy
    data_class = default_data_class(policy, data_class)
    dc = policy.data_class(data_class)
    policy.check_region(parse_user_id(user_id).home_hint)
    entry, unreachable, note = _home(router, user_id, offline)
    pinned = isinstance(dc, PinnedDataClass)
    origin = entry.home_region if pinned else (router.region or entry.home_region)
    chain = router.chain(data_class, origin)
    regions = [r.region for r in chain]
    health = (
        probe_regions(router, regions)
        if offline is None
        else dict.fromkeys(regions, "not probed (no cluster)")
    )
    decision, refused = None, None
    try:
        decision = router.route(data_class, user_id, op)
    except RegionUnavailable as exc:
        refused = exc
    steps = tuple(
        ChainStep(
            r.region,
            r.reason,
            health[r.region],
            (r.region not in router.health.unavailable) if offline is None else None,
        )
        for r in chain
    )
    return RouteExplanation(
        user_id=user_id,
        data_class=data_class,
        kind=dc.kind,
        op=op,
        from_region=router.region,
        home=entry,
        directory_reachable=unreachable is None,
        directory_note=note,
        chain=steps,
        decision=decision,
        refused=refused,
        jurisdiction=policy.jurisdictions[entry.jurisdiction] if pinned else None,
    )
