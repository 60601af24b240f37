"""Explain a policy for one country: where each data class of its residents lives.

Pure functions of the policy, shared by ``regionkit policy explain`` and the
router's own failover order, so what the CLI explains is what the router does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from residency.aws_regions import AWS_REGIONS, distance_km
from residency.errors import UnknownCountry
from residency.policy import GlobalDataClass, Policy

__all__ = [
    "ChainStep",
    "CountryExplanation",
    "DataClassPlacement",
    "explain_country",
    "failover_chain",
]


@dataclass(frozen=True)
class ChainStep:
    region: str
    reason: str


@dataclass(frozen=True)
class DataClassPlacement:
    data_class: str
    kind: str
    table: str
    regions: list[str]
    chain: list[ChainStep]
    stop: str


@dataclass(frozen=True)
class CountryExplanation:
    country: str
    jurisdiction: str
    law: str
    by_default: bool
    home_regions: list[str]
    data_classes: list[DataClassPlacement] = field(default_factory=list)


def failover_chain(policy: Policy, data_class: str, jurisdiction: str) -> DataClassPlacement:
    """The ordered regions a subject of ``jurisdiction`` is served from, with reasons."""
    dc = policy.data_class(data_class)
    j = policy.jurisdictions[jurisdiction]
    home = j.home_regions[0]
    if isinstance(dc, GlobalDataClass):
        ordered = policy.nearest_first(home, list(dc.replicas))
        chain = []
        for i, r in enumerate(ordered):
            if r == home:
                why = "the subject's home region holds a replica"
            else:
                km = distance_km(home, r)
                why = f"replica #{i + 1} nearest to {home} ({km:,.0f} km)"
            chain.append(ChainStep(r, why))
        return DataClassPlacement(
            data_class,
            "global",
            dc.table,
            list(dc.replicas),
            chain,
            "no replica left: the data class is unavailable",
        )
    chain = [
        ChainStep(
            r, "home region" if i == 0 else f"failover inside {jurisdiction}, home choice #{i + 1}"
        )
        for i, r in enumerate(j.home_regions)
    ]
    for r in j.regions:
        if r not in j.home_regions:
            chain.append(ChainStep(r, f"other region of {jurisdiction}, last resort"))
    if len(j.regions) == 1:
        stop = (
            f"{jurisdiction} has a single region: no compliant failover; "
            f"{data_class} stays in {j.regions[0]}"
        )
    else:
        stop = f"no region outside {jurisdiction} may hold {data_class}"
    return DataClassPlacement(data_class, "pinned", dc.table, list(j.regions), chain, stop)


def explain_country(
    policy: Policy, country: str, data_classes: list[str] | None = None
) -> CountryExplanation:
    from iso3166 import countries_by_alpha2

    code = country.strip().upper()
    if code not in countries_by_alpha2:
        raise UnknownCountry(country=country)
    jid = policy.jurisdiction_of_country(code)
    by_default = all(code not in j.countries for j in policy.jurisdictions.values())
    j = policy.jurisdictions[jid]
    names = data_classes or list(policy.data_classes)
    for n in names:
        policy.data_class(n)  # raises UnknownDataClass with the known names
    return CountryExplanation(
        country=code,
        jurisdiction=jid,
        law=j.law,
        by_default=by_default,
        home_regions=list(j.home_regions),
        data_classes=[failover_chain(policy, n, jid) for n in names],
    )


def region_label(code: str) -> str:
    info = AWS_REGIONS.get(code)
    return f"{code} ({info.location})" if info else code
