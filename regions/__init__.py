"""regionkit's region router: what services import.

    from regions import RegionRouter
    router = RegionRouter.from_env()               # REGIONKIT_* env, .env, `local up` state
    # or, reading nothing from the environment:
    # RegionRouter(policy, config=RouterConfig(mode="aws", region="ap-south-1"))
    uid = router.new_user_id(country="IN")
    router.assign_home(uid, country="IN")
    router.put("profile", {"pk": uid, "display_name": "..."})   # stays in India
    router.put("content", {"pk": "post-1", "body": "..."})       # nearest replica

Importing this package pulls in neither aws_cdk nor moto.
"""

from regions.directory import DirectoryEntry
from regions.health import BreakerState, HealthState, RegionHealth, RegionStatus
from regions.hlc import HLC, ClockDriftError, Stamp
from regions.ids import mint_user_id, parse_user_id
from regions.pool import ClientPool
from regions.queries import BatchGetResult, BatchWriteResult, Page, Sort
from regions.router import MoveResult, RegionRouter, Route, Written
from residency.clients import ClientProvider
from residency.errors import (
    RegionkitError,
    RegionUnavailable,
    ResidencyViolation,
    StaleWrite,
    UnassignedUser,
)
from residency.settings import RouterConfig

__all__ = [
    "HLC",
    "BatchGetResult",
    "BatchWriteResult",
    "BreakerState",
    "ClientPool",
    "ClientProvider",
    "ClockDriftError",
    "DirectoryEntry",
    "HealthState",
    "MoveResult",
    "Page",
    "RegionHealth",
    "RegionRouter",
    "RegionStatus",
    "RegionUnavailable",
    "RegionkitError",
    "ResidencyViolation",
    "Route",
    "RouterConfig",
    "Sort",
    "StaleWrite",
    "Stamp",
    "UnassignedUser",
    "Written",
    "mint_user_id",
    "parse_user_id",
]
