"""Routed-request metrics, published as CloudWatch Embedded Metric Format (EMF).

What a drill must not break is the service, not replication: a replication pause
fails no routed request by design (writes land in the local replica; only
cross-region visibility is late). So the stop condition of an FIS drill is the
**error rate of the requests the routers of a region serve**, and the routers
publish the two counts it is made of, per minute:

* ``RoutedRequests``: calls the router made for the service (a read, a write, a
  batch, a query page), whatever region served them;
* ``RoutedRequestErrors``: those that failed for the caller: every region tried
  was unavailable, timed out or refused (``RegionUnavailable`` and the typed
  backend errors). An answer is not an error: a refused stale write, a failed
  condition or a validation error proves the region served the request.

Both go under the namespace ``regionkit/router`` with the dimensions ``Policy``
and ``Region`` (the router's own region), which is what the CDK app's
customer-harm alarm (:func:`residency.fis_template.customer_harm_alarm`) reads.

EMF is a JSON log line that CloudWatch Logs turns into metrics; no API call, no
permission, no extra latency. Where the line goes is the application's choice
(:class:`RequestMetrics` takes an ``emit`` callable): ``REGIONKIT_METRICS=emf-stdout``
writes it to standard output, as EMF in Lambda and ECS (awslogs) expects;
``emf-log`` hands it to the ``regionkit.metrics`` logger for a host that routes
logs itself; ``off`` (the default) counts nothing. A line carries counts only,
never a key or a value.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["METRICS", "NAMESPACE", "RequestMetrics", "emf_document", "router_metrics", "sink"]

NAMESPACE = "regionkit/router"
METRICS = ("RoutedRequests", "RoutedRequestErrors")


def emf_document(
    policy: str, region: str, requests: int, errors: int, *, timestamp_ms: int
) -> dict[str, object]:
    """One minute's counts as an EMF document (the CloudWatch EMF specification)."""
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Policy", "Region"]],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in METRICS],
                }
            ],
        },
        "Policy": policy,
        "Region": region,
        METRICS[0]: requests,
        METRICS[1]: errors,
    }


def _to_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _to_logger(line: str) -> None:
    logging.getLogger("regionkit.metrics").info(line)


def sink(kind: str) -> Callable[[str], None] | None:
    """The ``emit`` of a ``REGIONKIT_METRICS`` setting: ``emf-stdout``, ``emf-log`` or
    ``off`` (None: publish nothing)."""
    return {"emf-stdout": _to_stdout, "emf-log": _to_logger, "off": None}[kind]


def router_metrics(policy_name: str, region: str | None, setting: str) -> RequestMetrics | None:
    """A router's request metrics for the ``REGIONKIT_METRICS`` setting (None: off, or no
    region to publish them for)."""
    emit = sink(setting)
    return RequestMetrics(policy_name, region, emit) if emit and region else None


class RequestMetrics:
    """Counts routed requests and failures; emits one EMF line per ``interval_s``.

    Thread-safe. A line is emitted by the first call after the interval ends (so an
    idle router emits nothing: no data is not harm) and by :meth:`flush`, which
    :meth:`regions.router.RegionRouter.close` calls.
    """

    def __init__(
        self,
        policy: str,
        region: str,
        emit: Callable[[str], None],
        *,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy, self.region, self.emit = policy, region, emit
        self.interval_s, self.clock = interval_s, clock
        self._lock = threading.Lock()
        self._start = clock()
        self.requests = self.errors = 0

    def record(self, *, failed: bool) -> None:
        now = self.clock()
        with self._lock:
            if now - self._start >= self.interval_s and self.requests:
                line = self._take(now)
            else:
                line = None
            self.requests += 1
            self.errors += failed
        if line is not None:
            self.emit(line)

    def flush(self) -> None:
        """Emit what was counted since the last line (nothing if nothing was)."""
        with self._lock:
            line = self._take(self.clock()) if self.requests else None
        if line is not None:
            self.emit(line)

    def _take(self, now: float) -> str:
        doc = emf_document(
            self.policy,
            self.region,
            self.requests,
            self.errors,
            timestamp_ms=int(self._start * 1000),
        )
        self._start, self.requests, self.errors = now, 0, 0
        return json.dumps(doc, separators=(",", ":"))
