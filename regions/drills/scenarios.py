"""Drill scenarios, registered by name.

Each scenario declares its parameters (a pydantic model, validated against the
policy), says which regions it faults, and injects and heals through a
:class:`~regions.drills.backends.DrillBackend`, so one scenario runs on the
local cluster, on the deterministic simulation, and (for replication pauses) as
an AWS FIS experiment.

    regionkit drill run region-outage --region ap-south-1 --duration 5
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from residency.errors import ConfigError, UnknownName
from residency.policy import Policy

if TYPE_CHECKING:
    from regions.drills.backends import DrillBackend

__all__ = ["SCENARIOS", "Scenario", "get_scenario", "scenario"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = Field(description="The region the fault hits.")


class OutageParams(Params):
    mode: Literal["stop", "refuse"] = Field(
        "stop", description="stop: SIGSTOP, clients time out; refuse: connections refused."
    )


class SkewParams(Params):
    ms: int = Field(300, description="How far ahead (positive) or behind the writers' clocks run.")


class PartitionParams(Params):
    groups: list[list[str]] | None = Field(
        None, description="Groups of regions cut apart; default: the region against the rest."
    )


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    params: type[Params]
    inject: Callable[[DrillBackend, Any], None]
    heal: Callable[[DrillBackend, Any], None]
    fis_action: str | None = None

    def parse(self, policy: Policy, raw: dict[str, Any]) -> Params:
        try:
            params = self.params.model_validate({k: v for k, v in raw.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(x) for x in err["loc"])
            raise ConfigError(
                message=f"scenario {self.name}: parameter {field}: {err['msg']}"
            ) from None
        policy.check_region(params.region)
        if isinstance(params, PartitionParams) and params.groups:
            for g in params.groups:
                for r in g:
                    policy.check_region(r)
        return params


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, description: str, params: type[Params], *, fis_action: str | None = None
) -> Callable[[Any], Any]:
    """Register a scenario class providing ``inject`` and ``heal`` static methods."""

    def register(cls: Any) -> Any:
        SCENARIOS[name] = Scenario(name, description, params, cls.inject, cls.heal, fis_action)
        return cls

    return register


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownName(kind="scenario", name=name, known=", ".join(sorted(SCENARIOS))) from None


@scenario(
    "region-outage",
    "A region stops answering: its DynamoDB endpoint times out or "
    "refuses. Routers fail over; pinned data only inside its jurisdiction.",
    OutageParams,
)
class RegionOutage:
    @staticmethod
    def inject(b: DrillBackend, p: OutageParams) -> None:
        b.outage(p.region, p.mode)

    @staticmethod
    def heal(b: DrillBackend, p: OutageParams) -> None:
        b.restore(p.region)


@scenario(
    "replication-pause",
    "Replication into and out of a region pauses, like the FIS "
    "action aws:dynamodb:global-table-pause-replication; it resumes where it stopped.",
    Params,
    fis_action="aws:dynamodb:global-table-pause-replication",
)
class ReplicationPause:
    @staticmethod
    def inject(b: DrillBackend, p: Params) -> None:
        b.pause(src=p.region)
        b.pause(dst=p.region)

    @staticmethod
    def heal(b: DrillBackend, p: Params) -> None:
        b.resume(src=p.region)
        b.resume(dst=p.region)


@scenario(
    "partition",
    "Two groups of regions are cut apart: no replication between them.",
    PartitionParams,
)
class Partition:
    @staticmethod
    def inject(b: DrillBackend, p: PartitionParams) -> None:
        groups = p.groups or [[p.region], [r for r in b.policy.regions if r != p.region]]
        b.partition(groups)

    @staticmethod
    def heal(b: DrillBackend, p: PartitionParams) -> None:
        b.heal_links()


@scenario(
    "clock-skew",
    "One region's writers run with a skewed clock; HLC keeps order and "
    "the detector repairs inversions.",
    SkewParams,
)
class ClockSkew:
    @staticmethod
    def inject(b: DrillBackend, p: SkewParams) -> None:
        b.skew(p.region, p.ms)

    @staticmethod
    def heal(b: DrillBackend, p: SkewParams) -> None:
        b.skew(p.region, 0)


@scenario(
    "failback",
    "A failed region recovers and catches up: an outage, then the region "
    "returns and must converge with everything written meanwhile.",
    OutageParams,
)
class Failback(RegionOutage):
    """The same fault as region-outage; the runner adds the failback phase after heal."""
