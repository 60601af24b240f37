"""Transport and failover: send one request to its route, with the router's one retry policy.

botocore makes **one attempt** inside the router (see :class:`regions.pool.ClientPool`);
every retry decision is taken here, from the kind of answer:

=====================  =================================================================
answer                 what the transport does
=====================  =================================================================
throttling             retry **in the same region**, with jittered exponential backoff,
                       up to ``RetryPolicy.throttle_attempts``, then raise ``Throttled``
                       (the last answer as its cause); it proves the region alive
timeout, connection    record a failure in :class:`~regions.health.RegionHealth` and fail
error, HTTP 5xx        over through tenacity to the next candidate the decision offers
                       (excluding the regions that just failed)
any other answer       a failed condition, a validation error: it proves the region is
                       alive (the breaker counts it as a success) and is returned to the
                       caller untouched, tagged with the region that answered it
=====================  =================================================================

Optional **hedged reads** (``RouterConfig.hedge_reads``, tail-at-scale) are
:mod:`regions.hedging`: a slow read of a global class is sent to the next replica
as well, and the first answer wins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from regions.health import RegionHealth
from regions.hedging import HedgedReads, HedgePolicy, LatencyTracker
from regions.metrics import RequestMetrics
from regions.routing import Op, Route
from residency.clients import error_code
from residency.errors import (
    BackendError,
    RegionTimeout,
    RegionUnavailable,
    RegionUnreachable,
    Throttled,
)
from residency.logs import get_logger

if TYPE_CHECKING:
    from residency.settings import RouterConfig

__all__ = [
    "HedgePolicy",  # from regions.hedging, where it lives
    "RetryPolicy",
    "Transport",
    "classify",
    "error_code",
    "is_retryable",
    "is_throttle",
    "region_of",
]

log = get_logger("regionkit.router")

T = TypeVar("T")
Decide = Callable[[tuple[str, ...]], Route]
Kind = Literal["throttle", "failover", "answer", "other"]

_SERVER_FAULT_CODES = frozenset(
    {"InternalServerError", "ServiceUnavailable", "InternalFailure", "503", "500", "502", "504"}
)
_THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "ReplicatedWriteConflictException",  # MRSC: retryable in the same region
    }
)


@dataclass(frozen=True)
class _Attempt:
    """What a tenacity wait strategy reads of a retry's state: the attempt that failed."""

    attempt_number: int


def classify(exc: BaseException) -> Kind:
    """The kind of answer ``exc`` is (see the module docstring)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return "failover"  # refused, reset, connect or read timeout: no answer
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in _THROTTLE_CODES:
            return "throttle"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _SERVER_FAULT_CODES or (isinstance(status, int) and status >= 500):
            return "failover"
        return "answer"
    return "other"


def is_retryable(exc: BaseException) -> bool:
    """Connection trouble and server faults fail over (throttling retries in place)."""
    return classify(exc) == "failover"


def is_throttle(exc: BaseException) -> bool:
    return classify(exc) == "throttle"


def backend_error(op: str, region: str, exc: BaseException, reason: str) -> BackendError:
    """The typed regionkit error for a failure (raise it ``from exc``)."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    cls: type[BackendError] = BackendError
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        cls = RegionTimeout
    elif classify(exc) == "failover":
        cls = RegionUnreachable
    elif classify(exc) == "throttle":
        cls = Throttled
    return cls(operation=op, region=region, code=error_code(exc), reason=reason)


def _still_throttled(op: str, exc: BaseException) -> BackendError:
    return backend_error(op, region_of(exc, "?"), exc, "still throttled after the retries")


def region_of(exc: BaseException, default: str) -> str:
    """The region that answered ``exc`` (tagged by the transport), else ``default``."""
    return str(getattr(exc, "regionkit_region", None) or default)


def _tag_region(exc: BaseException, region: str) -> None:
    try:
        exc.regionkit_region = region  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - an exception type with __slots__
        pass


@dataclass(frozen=True)
class RetryPolicy:
    """The router's single retry policy (botocore itself makes one attempt)."""

    throttle_attempts: int = 3
    """Attempts in the same region when it throttles (the first one included)."""
    throttle_base_s: float = 0.025
    throttle_max_s: float = 1.0
    failover_attempts: int = 3
    """Regions tried per call (the first one included)."""
    failover_wait_max_s: float = 0.05
    """Jitter between two regions; small, as the next region is a different server."""

    @classmethod
    def from_config(cls, config: RouterConfig) -> RetryPolicy:
        return cls(
            throttle_attempts=config.max_attempts,
            failover_attempts=config.failover_attempts,
        )


class Transport(HedgedReads):
    """Calls ``fn(route, client)`` on the decided route, with the router's retry policy."""

    def __init__(
        self,
        clients: Any,
        health: RegionHealth,
        *,
        failover_attempts: int | None = None,
        policy: RetryPolicy | None = None,
        hedge: HedgePolicy | None = None,
        metrics: RequestMetrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.clients = clients
        self.health = health
        policy = policy or RetryPolicy()
        if failover_attempts is not None:
            policy = replace(policy, failover_attempts=failover_attempts)
        self.policy = policy
        self._throttle_wait = wait_random_exponential(
            multiplier=policy.throttle_base_s, max=policy.throttle_max_s
        )
        self.failover_attempts = policy.failover_attempts
        self.hedging = hedge
        self.metrics: RequestMetrics | None = metrics
        self.sleep = sleep
        self.timer = timer
        self.latency = LatencyTracker()
        self.failovers = 0
        self.throttle_retries = 0
        self.hedges_sent = 0
        self.hedges_won = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # --- lifecycle ---

    def close(self) -> None:
        """Stop the hedging threads (calls still running finish in the background)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # --- one region ---

    def _send(
        self, route: Route, fn: Callable[[Route, Any], T], timing: list[float] | None = None
    ) -> T:
        """One request to ``route``; throttling retried here, in the same region.

        Records the outcome in the breaker: an answer (a result, or a ClientError that is
        not a server fault) is a success; no answer is a failure. Anything else (a
        KeyboardInterrupt, a bug before the request left) gives back a probe lease unused.
        The answer's latency feeds the hedging p95, or goes to ``timing`` when given (a
        hedged read records only the winner's: a slow region's losing answers must not
        raise the p95 that decides when to hedge away from it).

        Every request takes this path, so the first attempt is sent inline; the retries
        of a throttled one are in :meth:`_throttled` (``bench_router`` (b): the router's
        own work runs on the cold caches each request leaves behind, so every frame and
        closure on this path shows in the routed/raw ratio).
        """
        region = route.region
        timer = self.timer
        try:
            start = timer()
            failed: Exception | None = None
            try:
                result = fn(route, self.clients.client("dynamodb", region))
            except Exception as first:
                failed = first
            if failed is not None:  # retried outside the handler: no exception chained
                result, start = self._throttled(route, fn, failed)
            elapsed = timer() - start
        except BaseException as exc:
            kind = classify(exc) if isinstance(exc, Exception) else "other"
            if kind == "failover":
                self.health.record_failure(region, error_code(exc))
            elif kind in ("answer", "throttle"):
                self.health.record_success(region)  # the region answered: proof of life
            elif region in self.health.unavailable:
                self.health.release_probe(region)
            if isinstance(exc, Exception):
                _tag_region(exc, region)
            raise
        if timing is None:
            self.latency.record(region, elapsed)
        else:
            timing.append(elapsed)
        self.health.record_success(region)
        return result

    def _throttled(
        self, route: Route, fn: Callable[[Route, Any], T], exc: Exception
    ) -> tuple[T, float]:
        """After a first attempt failed with ``exc``: while it is throttling, wait and send
        again (tenacity's full-jitter exponential wait), up to the policy's attempts.
        Returns the answer and the start time of the attempt that got it.

        A plain loop, not ``tenacity.Retrying``: that costs about 45 us a call (a
        Future, a Condition and its action list per call), half of the router's own
        work on a put, for a retry that almost never happens (``bench_router``).
        The wait is tenacity's own strategy, so the policy is the same either way.
        """
        attempts = max(1, self.policy.throttle_attempts)
        attempt = 1
        while True:
            if attempt >= attempts or not is_throttle(exc):
                raise exc
            with self._lock:
                self.throttle_retries += 1
            # The strategy reads only ``attempt_number`` of the state it is given.
            self.sleep(self._throttle_wait(cast("RetryCallState", _Attempt(attempt))))
            attempt += 1
            start = self.timer()
            try:
                return fn(route, self.clients.client("dynamodb", route.region)), start
            except Exception as again:
                exc = again

    # --- with failover ---

    def call(
        self, decide: Decide, op: Op, fn: Callable[[Route, Any], T], *, hedge: bool = False
    ) -> tuple[T, Route]:
        """:meth:`_call`, counted in :attr:`metrics` (a request; an error if no region served
        it). Throttling that outlasts the retries is :class:`Throttled`, reads and writes
        alike, with DynamoDB's error as ``__cause__``."""
        metrics = self.metrics
        try:
            out = self._call(decide, op, fn, hedge=hedge)
        except Exception as exc:
            throttled = is_throttle(exc)
            if metrics is not None:  # an answer (a failed condition ...) was served
                metrics.record(
                    failed=throttled or isinstance(exc, (RegionUnavailable, BackendError))
                )
            if throttled:
                raise _still_throttled(op, exc) from exc
            raise
        if metrics is not None:
            metrics.record(failed=False)
        return out

    def _call(
        self, decide: Decide, op: Op, fn: Callable[[Route, Any], T], *, hedge: bool = False
    ) -> tuple[T, Route]:
        """``fn`` on the decided route; on no answer, the next candidate (``decide(tried)``).

        ``hedge=True`` (a read that may be served by any replica) sends a second read after
        the region's p95 when hedging is configured for the route's data class.
        """
        route = decide(())
        h = self.hedging
        if hedge and h is not None and op == "read" and route.data_class in h.classes:
            return self._hedged(decide, op, route, fn, h)
        try:
            result = self._send(route, fn)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            return self._failover(decide, op, fn, [route.region], exc)
        return result, route

    def _retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    def call_at(self, route: Route, fn: Callable[[Route, Any], T]) -> T:
        """One request to one named region, no failover (moves, erasure, verification)."""
        try:
            return self._send(route, fn)
        except Exception as exc:
            if is_throttle(exc):
                raise _still_throttled("request", exc) from exc
            raise

    def _failover(
        self,
        decide: Decide,
        op: Op,
        fn: Callable[[Route, Any], T],
        tried: list[str],
        first: BaseException,
    ) -> tuple[T, Route]:
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.failover_attempts - len(tried))),
            wait=wait_random_exponential(multiplier=0.01, max=self.policy.failover_wait_max_s),
            retry=retry_if_exception(is_retryable),
            sleep=self.sleep,
            reraise=True,
        )
        last: list[Route] = []

        def attempt() -> T:
            route = decide(tuple(tried))
            last[:] = [route]
            try:
                return self._send(route, fn)
            except Exception as exc:
                if is_retryable(exc):
                    tried.append(route.region)
                raise

        try:
            result = retrying(attempt)
        except RegionUnavailable:
            raise
        except Exception as exc:
            if is_retryable(exc):
                raise backend_error(op, ", ".join(tried), exc, "every region tried failed") from exc
            raise
        with self._lock:
            self.failovers += 1
        route = last[0]
        log.info("failed over", region=route.region, tried=tried, error=error_code(first))
        return result, route
