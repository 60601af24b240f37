"""Transport and failover: send one request to its route, fail over on connection trouble.

The first attempt goes straight to the decided route. Connection errors and
server faults mark the region in :class:`~regions.health.RegionHealth` and fail
over through tenacity to the next candidate the decision function offers
(excluding the regions that just failed). Throttling is botocore's to retry.
Any other answer (a failed condition, a validation error) proves the region is
alive and is returned to the caller untouched, tagged with the region that
answered it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from regions.health import RegionHealth
from regions.routing import Op, Route
from residency.errors import BackendError, RegionUnavailable
from residency.logs import get_logger

__all__ = ["Transport", "error_code", "is_retryable", "region_of"]

log = get_logger("regionkit.router")

T = TypeVar("T")
Decide = Callable[[tuple[str, ...]], Route]

_RETRYABLE_CODES = frozenset(
    {"InternalServerError", "ServiceUnavailable", "InternalFailure", "503", "500"}
)


def is_retryable(exc: BaseException) -> bool:
    """Connection trouble and server faults fail over; throttling is botocore's to retry."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "") in _RETRYABLE_CODES
    return False


def error_code(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


def region_of(exc: BaseException, default: str) -> str:
    """The region that answered ``exc`` (tagged by the transport), else ``default``."""
    return str(getattr(exc, "regionkit_region", None) or default)


def _tag_region(exc: BaseException, region: str) -> None:
    try:
        exc.regionkit_region = region  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - an exception type with __slots__
        pass


class Transport:
    """Calls ``fn(route, client)`` on the decided route, with failover."""

    def __init__(self, clients: Any, health: RegionHealth, *, failover_attempts: int = 3) -> None:
        self.clients = clients
        self.health = health
        self.failover_attempts = failover_attempts
        self.failovers = 0
        self._lock = threading.Lock()

    def call(self, decide: Decide, op: Op, fn: Callable[[Route, Any], T]) -> tuple[T, Route]:
        route = decide(())
        try:
            result = fn(route, self.clients.dynamodb(route.region))
        except Exception as exc:
            if not is_retryable(exc):
                _tag_region(exc, route.region)
                raise
            self.health.record_failure(route.region, error_code(exc))
            return self._failover(decide, op, fn, [route.region], exc)
        self.health.record_success(route.region)
        return result, route

    def call_at(self, route: Route, fn: Callable[[Route, Any], T]) -> T:
        """One request to one named region, no failover (moves, erasure, verification)."""
        try:
            result = fn(route, self.clients.dynamodb(route.region))
        except Exception as exc:
            if is_retryable(exc):
                self.health.record_failure(route.region, error_code(exc))
            _tag_region(exc, route.region)
            raise
        self.health.record_success(route.region)
        return result

    def _failover(
        self,
        decide: Decide,
        op: Op,
        fn: Callable[[Route, Any], T],
        tried: list[str],
        first: BaseException,
    ) -> tuple[T, Route]:
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.failover_attempts - 1)),
            wait=wait_random_exponential(multiplier=0.01, max=0.2),
            retry=retry_if_exception(is_retryable),
            reraise=True,
        )
        last: list[Route] = []

        def attempt() -> T:
            route = decide(tuple(tried))
            last[:] = [route]
            try:
                out = fn(route, self.clients.dynamodb(route.region))
            except Exception as exc:
                if is_retryable(exc):
                    self.health.record_failure(route.region, error_code(exc))
                    tried.append(route.region)
                else:
                    _tag_region(exc, route.region)
                raise
            self.health.record_success(route.region)
            return out

        try:
            result = retrying(attempt)
        except RegionUnavailable:
            raise
        except Exception as exc:
            if is_retryable(exc):
                raise BackendError(
                    operation=op,
                    region=", ".join(tried),
                    code=error_code(exc),
                    reason="every region tried failed",
                ) from exc
            raise
        with self._lock:
            self.failovers += 1
        route = last[0]
        log.info("failed over", region=route.region, tried=tried, error=error_code(first))
        return result, route
