"""The region router: every read and write goes straight to the right region.

``route(data_class, subject, op)`` decides; the data-access helpers (``get``,
``put``, ``update``, ``delete``, ``query``) decide, check and call, with failover:

* **pinned** data (a profile) goes to its subject's home region. If that region
  is unavailable it fails over to the next home region *of the same
  jurisdiction*, never across the border. With no region left it raises
  :class:`~residency.errors.RegionUnavailable` naming the jurisdiction.
* **global** data goes to the nearest healthy replica of the service's own
  region (``settings.region``), in the order ``regionkit policy explain`` shows.

Every request passes the residency guard before it leaves the process.

Decisions are precomputed per (data class, origin) into tuples of ``Route``
objects, so a cached decision is a few dict lookups and allocates nothing.

Writes are stamped with an HLC version and are conditional: a write never
overwrites a newer version in the region it lands in (``StaleWrite``), and a
write retried in another region after a timeout is idempotent (the same stamp
succeeds again instead of applying twice).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, cast

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from regions.codec import (
    AT_ATTR,
    BASE_ATTR,
    RESERVED,
    VERSION_ATTR,
    VV_ATTR,
    from_ddb,
    to_ddb,
    to_ddb_value,
)
from regions.directory import DirectoryCache, DirectoryEntry
from regions.health import RegionHealth
from regions.hlc import HLC, ClockDriftError, Stamp, wall_clock_ms
from regions.ids import mint_user_id, parse_user_id
from regions.pool import ClientPool, ClientProvider
from residency.errors import (
    BackendError,
    ConfigError,
    MalformedId,
    RegionUnavailable,
    StaleWrite,
    UnknownCountry,
)
from residency.guard import ResidencyGuard
from residency.logs import get_logger
from residency.policy import GlobalDataClass, MergeConflicts, PinnedDataClass, Policy
from residency.settings import Settings, load_settings

__all__ = ["MoveResult", "RegionRouter", "Route", "Written"]

log = get_logger("regionkit.router")
audit_log = get_logger("regionkit.audit")

Op = Literal["read", "write"]

_RETRYABLE_CODES = frozenset(
    {
        "InternalServerError",
        "ServiceUnavailable",
        "InternalFailure",
        "503",
        "500",
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes, and why."""

    region: str
    table_name: str
    reason: str
    failover: bool
    data_class: str = ""


@dataclass(frozen=True, slots=True)
class Written:
    version: str
    route: Route
    merged: bool = False


@dataclass(frozen=True)
class MoveResult:
    user_id: str
    from_region: str
    to_region: str
    from_jurisdiction: str
    to_jurisdiction: str
    profile_copied: bool
    steps: list[str] = field(default_factory=list)


def _vv_value(vv: dict[str, str], region: str, stamp: str) -> dict[str, Any]:
    """The version vector of a write, as DynamoDB JSON: its ancestors only, not itself."""
    del region, stamp  # the write itself is identified by rk_v and rk_at
    return {"M": {r: {"S": v} for r, v in vv.items()}}


def _is_retryable(exc: BaseException) -> bool:
    """Connection trouble and server faults fail over; throttling is botocore's to retry."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "") in _RETRYABLE_CODES
    return False


def _tag_region(exc: BaseException, region: str) -> None:
    """Remember on the exception which region answered it (for StaleWrite/BackendError)."""
    try:
        exc.regionkit_region = region  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - an exception type with __slots__
        pass


def _error_code(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


class RegionRouter:
    """Routes and performs reads and writes for every data class of a policy."""

    def __init__(
        self,
        policy: Policy,
        *,
        region: str | None = None,
        clients: ClientProvider | None = None,
        health: RegionHealth | None = None,
        settings: Settings | None = None,
        clock: HLC | None = None,
        physical_clock: Callable[[], int] | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings or load_settings()
        s = self.settings
        self.region = region if region is not None else s.region
        if self.region is not None:
            policy.check_region(self.region)
        self.clients: ClientProvider = clients or ClientPool(s)
        self.health = health or RegionHealth(
            policy.regions, failures=s.breaker_failures, reset_seconds=s.breaker_reset_seconds
        )
        self.guard = ResidencyGuard(policy)
        self.clock = clock or HLC(
            self.region or policy.regions[0],
            physical=physical_clock or wall_clock_ms,
            max_offset_ms=s.hlc_max_offset_ms,
        )
        self.directory = DirectoryCache(s.directory_cache_size, s.directory_cache_ttl_seconds)
        self._dir_class = policy.system.directory
        self._tables = {n: s.table_name(dc.table) for n, dc in policy.data_classes.items()}
        self._pk = {n: dc.partition_key for n, dc in policy.data_classes.items()}
        self._sk = {n: dc.sort_key for n, dc in policy.data_classes.items()}
        self._merge: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {}
        self._chains = self._precompute_chains()
        self._kinds = {n: dc.kind for n, dc in policy.data_classes.items()}
        self._allowed: dict[tuple[str, str], frozenset[str]] = {}
        for n, dc in policy.data_classes.items():
            if isinstance(dc, GlobalDataClass):
                self._allowed[(n, "")] = self.guard.allowed(n, None)
            else:
                for jid in policy.jurisdictions:
                    self._allowed[(n, jid)] = self.guard.allowed(n, jid)
        self._lock = threading.Lock()
        self.drift_flags = 0
        self.failovers = 0
        self._vv_cache: dict[str, dict[str, str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> RegionRouter:
        from residency.policy import load_policy

        s = settings or load_settings()
        return cls(load_policy(s.policy), settings=s, **kwargs)

    # --- precomputed decisions ---

    def _precompute_chains(self) -> dict[tuple[str, str], tuple[Route, ...]]:
        """(data class, origin region or jurisdiction) → ordered candidate routes."""
        p, chains = self.policy, {}
        for name, dc in p.data_classes.items():
            table = self._tables[name]
            if isinstance(dc, GlobalDataClass):
                for origin in p.regions:
                    ordered = p.nearest_first(origin, list(dc.replicas))
                    chains[(name, origin)] = tuple(
                        Route(
                            r,
                            table,
                            "local replica"
                            if r == origin
                            else f"nearest replica to {origin}"
                            if i == 0
                            else f"failover: replica #{i + 1} nearest to {origin}",
                            i > 0,
                            name,
                        )
                        for i, r in enumerate(ordered)
                    )
            else:
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

    # --- users and the directory ---

    def jurisdiction_for_country(self, country: str) -> str:
        from iso3166 import countries_by_alpha2

        code = country.strip().upper()
        if code not in countries_by_alpha2:
            raise UnknownCountry(country=country)
        return self.policy.jurisdiction_of_country(code)

    def new_user_id(self, *, country: str, idempotency_key: str | None = None) -> str:
        """Mint a user ID for a resident of ``country``, homed in the first healthy home region.

        With an ``idempotency_key`` (a sign-up request ID) the same ID comes back on retry.
        """
        jid = self.jurisdiction_for_country(country)
        homes = self.policy.jurisdictions[jid].home_regions
        home = next((r for r in homes if self.health.available(r)), homes[0])
        return mint_user_id(home, idempotency_key=idempotency_key)

    def assign_home(self, user_id: str, *, country: str) -> DirectoryEntry:
        """Record the user's home in the directory. Idempotent: an existing entry is kept."""
        uid = parse_user_id(user_id)
        jid = self.jurisdiction_for_country(country)
        if self.policy.jurisdiction_of_region(uid.home_hint) != jid:
            raise ConfigError(
                message=(
                    f"user ID {user_id} was minted for {uid.home_hint} "
                    f"({self.policy.jurisdiction_of_region(uid.home_hint)}) but the country maps "
                    f"to {jid}; mint the ID with new_user_id(country=...) for the same country"
                )
            )
        entry = DirectoryEntry(user_id, uid.home_hint, jid)
        try:
            written = self.put(
                self._dir_class,
                {self._pk[self._dir_class]: user_id, **entry.to_item()},
                create_only=True,
            )
            entry = DirectoryEntry(user_id, uid.home_hint, jid, version=written.version)
        except StaleWrite:
            existing = self._read_directory(user_id)
            if existing is not None:
                entry = existing
        self.directory.put(entry)
        return entry

    def home_of(self, user_id: str) -> DirectoryEntry:
        """The subject's home: the cache, else the directory, else the hint inside the ID."""
        entry = self.directory.get(user_id)
        if entry is not None:
            return entry
        return self._lookup_home(user_id)

    def _lookup_home(self, user_id: str) -> DirectoryEntry:
        """home_of after a cache miss: the directory, else the hint inside the ID."""
        uid = parse_user_id(user_id)
        found = self._read_directory(user_id)
        if found is None:
            # Not replicated here yet (or never assigned): trust the hint, briefly.
            jid = self.policy.jurisdiction_of_region(uid.home_hint)
            found = DirectoryEntry(user_id, uid.home_hint, jid, source="id-hint")
            self.directory.put(found, ttl=min(5.0, self.directory.ttl))
        else:
            self.directory.put(found)
        return found

    def _read_directory(self, user_id: str) -> DirectoryEntry | None:
        try:
            item = self.get(self._dir_class, {self._pk[self._dir_class]: user_id})
        except RegionUnavailable:
            return None
        return DirectoryEntry.from_item(user_id, item) if item else None

    # --- routing ---

    def _origin(self, data_class: str, subject: str | None) -> str:
        if self.region is not None:
            return self.region
        if subject is not None:
            return self.home_of(subject).home_region
        return self.policy.regions[0]

    def route(self, data_class: str, subject: str | None = None, op: Op = "read") -> Route:
        """Where a request for ``data_class`` (of ``subject``) goes now, and why."""
        return self._route(data_class, subject, op, ())

    def _route(
        self, data_class: str, subject: str | None, op: Op, exclude: tuple[str, ...] | list[str]
    ) -> Route:
        kind = self._kinds.get(data_class)
        if kind is None:
            self.policy.data_class(data_class)  # raises UnknownDataClass naming the known ones
        jurisdiction: str | None
        if kind == "pinned":
            if subject is None:
                raise MalformedId(
                    kind="subject",
                    value="None",
                    reason=f"{data_class} is pinned: pass the subject's user ID",
                )
            entry = self.directory.get(subject) or self._lookup_home(subject)
            chain = self._chains[(data_class, entry.home_region)]
            jurisdiction = entry.jurisdiction
            allowed = self._allowed[(data_class, jurisdiction)]
        else:
            origin = self.region or (
                self.home_of(subject).home_region if subject else self.policy.regions[0]
            )
            chain = self._chains[(data_class, origin)]
            jurisdiction = None
            allowed = self._allowed[(data_class, "")]
        unavailable = self.health.unavailable
        for route in chain:
            r = route.region
            if r in exclude or (r in unavailable and not self.health.available(r)):
                continue
            if r not in allowed:  # never true by construction; the guard is the last word
                self.guard.check(op=op, data_class=data_class, region=r, jurisdiction=jurisdiction)
            return route
        self._raise_unavailable(data_class, jurisdiction, chain, exclude)

    def _raise_unavailable(
        self, data_class: str, jurisdiction: str | None, chain: tuple[Route, ...], exclude: Any
    ) -> NoReturn:
        reasons = "; ".join(
            f"{r.region} failed just now"
            if r.region in exclude
            else self.health.why_unavailable(r.region)
            for r in chain
        )
        if jurisdiction is not None:
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
                data_class=data_class,
                scope=f"jurisdiction {jurisdiction}",
                reason=f"{reasons}; {tail}",
            )
        raise RegionUnavailable(
            data_class=data_class, scope="any replica", reason=f"{reasons}; no replica left"
        )

    # --- the call path: first try direct, then tenacity-driven failover ---

    def _call(
        self, data_class: str, subject: str | None, op: Op, fn: Callable[[Route, Any], Any]
    ) -> tuple[Any, Route]:
        route = self._route(data_class, subject, op, ())
        try:
            result = fn(route, self.clients.dynamodb(route.region))
        except Exception as exc:
            if not _is_retryable(exc):
                _tag_region(exc, route.region)
                raise
            self.health.record_failure(route.region, _error_code(exc))
            return self._failover(data_class, subject, op, fn, [route.region], exc)
        self.health.record_success(route.region)
        return result, route

    def _failover(
        self,
        data_class: str,
        subject: str | None,
        op: Op,
        fn: Callable[[Route, Any], Any],
        tried: list[str],
        first: BaseException,
    ) -> tuple[Any, Route]:
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.settings.failover_attempts - 1)),
            wait=wait_random_exponential(multiplier=0.01, max=0.2),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        last_route: list[Route] = []

        def attempt() -> Any:
            route = self._route(data_class, subject, op, tried)
            last_route[:] = [route]
            try:
                out = fn(route, self.clients.dynamodb(route.region))
            except Exception as exc:
                if _is_retryable(exc):
                    self.health.record_failure(route.region, _error_code(exc))
                    tried.append(route.region)
                else:
                    _tag_region(exc, route.region)
                raise
            self.health.record_success(route.region)
            return out

        try:
            result = retrying(attempt)
        except RetryError as exc:  # pragma: no cover - reraise=True re-raises the cause
            raise BackendError(
                operation=op, region=",".join(tried), code="RetryError", reason=str(exc)
            ) from exc
        except RegionUnavailable:
            raise
        except Exception as exc:
            if _is_retryable(exc):
                raise BackendError(
                    operation=op,
                    region=", ".join(tried),
                    code=_error_code(exc),
                    reason="every region tried failed",
                ) from exc
            raise
        with self._lock:
            self.failovers += 1
        route = last_route[0]
        log.info(
            "failed over",
            data_class=data_class,
            region=route.region,
            tried=tried,
            error=_error_code(first),
        )
        return result, route

    # --- helpers ---

    def _subject_of(self, data_class: str, key: dict[str, Any], subject: str | None) -> str | None:
        if subject is not None:
            return subject
        dc = self.policy.data_classes[data_class]
        if isinstance(dc, PinnedDataClass):
            value = key.get(dc.partition_key)
            if not isinstance(value, str):
                raise MalformedId(
                    kind="key",
                    value=str(type(value).__name__),
                    reason=f"{data_class}.{dc.partition_key} must be the subject's user ID",
                )
            return value
        return None

    def _key(self, data_class: str, item: dict[str, Any]) -> dict[str, Any]:
        pk, sk = self._pk[data_class], self._sk[data_class]
        if pk not in item:
            raise ConfigError(message=f"{data_class} items need the partition key {pk!r}")
        key = {pk: item[pk]}
        if sk is not None:
            if sk not in item:
                raise ConfigError(message=f"{data_class} items need the sort key {sk!r}")
            key[sk] = item[sk]
        return key

    def observe(self, item: dict[str, Any] | None) -> None:
        """Merge a read item's stamp into our clock, flagging (not adopting) a drifted one."""
        if not item or VERSION_ATTR not in item:
            return
        vv = item.get(VV_ATTR)
        if isinstance(vv, dict):
            own = dict(vv)
            at = item.get(AT_ATTR)
            if isinstance(at, str):
                own[at] = max(str(item[VERSION_ATTR]), str(own.get(at, "")))
            with self._lock:
                self._vv_cache[str(item[VERSION_ATTR])] = own
                if len(self._vv_cache) > 10_000:
                    self._vv_cache.pop(next(iter(self._vv_cache)))
        try:
            self.clock.observe(Stamp.parse(str(item[VERSION_ATTR])))
        except ClockDriftError as exc:
            with self._lock:
                self.drift_flags += 1
            log.warning(
                "clock drift flagged",
                stamp_region=getattr(exc, "region", None),
                ahead_ms=getattr(exc, "ahead_ms", None),
            )
        except MalformedId:
            log.warning("unparseable version stamp ignored")

    # --- data access ---

    def get(
        self,
        data_class: str,
        key: dict[str, Any],
        *,
        subject: str | None = None,
        consistent: bool = False,
    ) -> dict[str, Any] | None:
        """Read one item (as Python values), or None."""
        subject = self._subject_of(data_class, key, subject)
        ddb_key = to_ddb(key)

        def call(route: Route, client: Any) -> Any:
            return client.get_item(
                TableName=route.table_name, Key=ddb_key, ConsistentRead=consistent
            ).get("Item")

        raw, _ = self._call(data_class, subject, "read", call)
        item = from_ddb(raw)
        self.observe(item)
        return item

    def put(
        self,
        data_class: str,
        item: dict[str, Any],
        *,
        subject: str | None = None,
        based_on: str | dict[str, Any] | None = None,
        create_only: bool = False,
    ) -> Written:
        """Write a whole item, stamped and conditional.

        ``based_on``: the item you read, or its version (``item["rk_v"]``), for a
        compare-and-set; without it the write succeeds unless the item already
        holds a newer version. ``create_only``:
        fail if the item exists. Raises StaleWrite, or merges where the data class
        names a merge function.
        """
        bad = RESERVED & item.keys()
        if bad:
            raise ConfigError(message=f"attributes {sorted(bad)} are managed by regionkit")
        key = self._key(data_class, item)
        subject = self._subject_of(data_class, key, subject)
        stamp = str(self.clock.now())
        based_on, vv = self._causal_past(based_on, stamp)
        body = dict(item)
        body[VERSION_ATTR] = stamp
        if based_on:
            body[BASE_ATTR] = based_on
        ddb_body = to_ddb(body)
        cond, values = self._condition(based_on, create_only, stamp)

        def call(route: Route, client: Any) -> Any:
            # The landing region is known only now (a retry may fail over).
            ddb_item = dict(ddb_body)
            ddb_item[AT_ATTR] = {"S": route.region}
            ddb_item[VV_ATTR] = _vv_value(vv, route.region, stamp)
            return client.put_item(
                TableName=route.table_name,
                Item=ddb_item,
                ConditionExpression=cond,
                ExpressionAttributeNames={"#v": VERSION_ATTR},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

        return self._write(data_class, key, subject, stamp, based_on, call, item)

    def update(
        self,
        data_class: str,
        key: dict[str, Any],
        changes: dict[str, Any],
        *,
        subject: str | None = None,
        based_on: str | dict[str, Any] | None = None,
    ) -> Written:
        """Set attributes of one item (stamped, conditional like ``put``)."""
        bad = RESERVED & changes.keys()
        if bad or not changes:
            raise ConfigError(message=f"update needs attributes to set, none of {sorted(RESERVED)}")
        subject = self._subject_of(data_class, key, subject)
        stamp = str(self.clock.now())
        based_on, vv = self._causal_past(based_on, stamp)
        names = {"#v": VERSION_ATTR, "#vv": VV_ATTR, "#at": AT_ATTR}
        cond, values = self._condition(based_on, False, stamp)
        sets = ["#v = :v", "#vv = :vv", "#at = :at"]
        for i, (k, v) in enumerate(changes.items()):
            names[f"#a{i}"] = k
            values[f":a{i}"] = to_ddb_value(v)
            sets.append(f"#a{i} = :a{i}")
        if based_on:
            names["#b"] = BASE_ATTR
            values[":b"] = to_ddb_value(based_on)
            sets.append("#b = :b")
        ddb_key = to_ddb(key)
        expr = "SET " + ", ".join(sets)

        def call(route: Route, client: Any) -> Any:
            attempt = dict(values)
            attempt[":at"] = {"S": route.region}
            attempt[":vv"] = _vv_value(vv, route.region, stamp)
            return client.update_item(
                TableName=route.table_name,
                Key=ddb_key,
                UpdateExpression=expr,
                ConditionExpression=cond,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attempt,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

        return self._write(data_class, key, subject, stamp, based_on, call, None)

    def delete(
        self,
        data_class: str,
        key: dict[str, Any],
        *,
        subject: str | None = None,
        based_on: str | dict[str, Any] | None = None,
    ) -> Written:
        """Delete one item unless it holds a version newer than this delete."""
        subject = self._subject_of(data_class, key, subject)
        stamp = str(self.clock.now())
        based_on, _ = self._causal_past(based_on, stamp)
        cond, values = self._condition(based_on, False, stamp)
        cond = f"attribute_not_exists(#v) OR ({cond})"
        ddb_key = to_ddb(key)

        def call(route: Route, client: Any) -> Any:
            return client.delete_item(
                TableName=route.table_name,
                Key=ddb_key,
                ConditionExpression=cond,
                ExpressionAttributeNames={"#v": VERSION_ATTR},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

        return self._write(data_class, key, subject, stamp, based_on, call, None)

    def query(
        self,
        data_class: str,
        partition_value: Any,
        *,
        subject: str | None = None,
        limit: int | None = None,
        consistent: bool = False,
    ) -> list[dict[str, Any]]:
        """All items of one partition (paginated for you)."""
        pk = self._pk[data_class]
        subject = self._subject_of(data_class, {pk: partition_value}, subject)
        value = to_ddb_value(partition_value)

        def call(route: Route, client: Any) -> Any:
            items: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {
                "TableName": route.table_name,
                "KeyConditionExpression": "#pk = :pk",
                "ExpressionAttributeNames": {"#pk": pk},
                "ExpressionAttributeValues": {":pk": value},
                "ConsistentRead": consistent,
            }
            while True:
                if limit is not None:
                    kwargs["Limit"] = max(1, limit - len(items))
                page = client.query(**kwargs)
                items.extend(page.get("Items", []))
                start = page.get("LastEvaluatedKey")
                if not start or (limit is not None and len(items) >= limit):
                    return items
                kwargs["ExclusiveStartKey"] = start

        raw, _ = self._call(data_class, subject, "read", call)
        out = [from_ddb(i) or {} for i in raw]
        for item in out:
            self.observe(item)
        return out

    def _causal_past(
        self, based_on: str | dict[str, Any] | None, stamp: str
    ) -> tuple[str | None, dict[str, str]]:
        """The base version and the version vector of a new write stamped ``stamp``."""
        if isinstance(based_on, dict):
            base = based_on.get(VERSION_ATTR)
            vv = dict(based_on.get(VV_ATTR) or {})
            if base:
                at = str(based_on.get(AT_ATTR) or str(base).rsplit(".", 1)[-1])
                vv[at] = max(str(base), vv.get(at, ""))
            based_on = str(base) if base else None
        elif based_on:
            with self._lock:
                vv = dict(self._vv_cache.get(based_on, {}))
            if not vv:  # never read here: its landing region is unknown, assume its writer's
                region = based_on.rsplit(".", 1)[-1]
                vv[region] = based_on
        else:
            vv = {}
        if based_on and Stamp.parse(based_on) >= Stamp.parse(stamp):
            # The version we read is ahead of our clock by more than the allowed offset
            # (observe() refused to adopt it). Writing now would order our write before
            # the one it is based on: refuse instead.
            base = Stamp.parse(based_on)
            raise ClockDriftError(
                stamp=based_on,
                region=base.region,
                ahead_ms=base.l - Stamp.parse(stamp).l,
                max_offset_ms=self.clock.max_offset_ms,
            )
        return based_on, vv

    @staticmethod
    def _condition(
        based_on: str | None, create_only: bool, stamp: str
    ) -> tuple[str, dict[str, Any]]:
        """The write condition. Each form also accepts its own stamp: a retry is idempotent."""
        values: dict[str, Any] = {":v": {"S": stamp}}
        if create_only:
            return "attribute_not_exists(#v) OR #v = :v", values
        if based_on:
            values[":base"] = {"S": based_on}
            return "#v = :base OR #v = :v", values
        return "attribute_not_exists(#v) OR #v <= :v", values

    def _write(
        self,
        data_class: str,
        key: dict[str, Any],
        subject: str | None,
        stamp: str,
        based_on: str | None,
        call: Callable[[Route, Any], Any],
        item: dict[str, Any] | None,
    ) -> Written:
        from botocore.exceptions import ClientError

        try:
            _, route = self._call(data_class, subject, "write", call)
        except ClientError as exc:
            code = _error_code(exc)
            if code != "ConditionalCheckFailedException":
                raise BackendError(
                    operation="write",
                    region=self._last_region(data_class, exc),
                    code=code,
                    reason=exc.response.get("Error", {}).get("Message", ""),
                ) from exc
            current = from_ddb(cast(dict[str, Any] | None, exc.response.get("Item"))) or {}
            self.observe(current)
            dc = self.policy.data_classes[data_class]
            if (
                item is not None
                and isinstance(dc, GlobalDataClass)
                and isinstance(dc.conflicts, MergeConflicts)
                and current
            ):
                return self._merge_write(data_class, dc.conflicts.merge, item, current, subject)
            raise StaleWrite(
                data_class=data_class,
                key=self._safe_key(data_class, key),
                region=self._last_region(data_class, exc),
                based_on=based_on or "(blind write)",
                current=str(current.get(VERSION_ATTR, "(unknown)")),
            ) from None
        return Written(stamp, route)

    def _merge_write(
        self,
        data_class: str,
        ref: str,
        ours: dict[str, Any],
        theirs: dict[str, Any],
        subject: str | None,
    ) -> Written:
        merge = self.merge_function(data_class, ref)
        for _ in range(5):
            merged = merge(
                {k: v for k, v in ours.items() if k not in RESERVED},
                {k: v for k, v in theirs.items() if k not in RESERVED},
            )
            try:
                w = self.put(
                    data_class,
                    {k: v for k, v in merged.items() if k not in RESERVED},
                    subject=subject,
                    based_on=str(theirs.get(VERSION_ATTR)),
                )
            except StaleWrite:
                theirs = self.get(data_class, self._key(data_class, ours), subject=subject) or {}
                continue
            return Written(w.version, w.route, merged=True)
        raise StaleWrite(
            data_class=data_class,
            key=self._safe_key(data_class, ours),
            region=self._last_region(data_class),
            based_on="(merge)",
            current=str(theirs.get(VERSION_ATTR, "(unknown)")),
        )

    def merge_function(
        self, data_class: str, ref: str
    ) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
        fn = self._merge.get(data_class)
        if fn is None:
            module, _, name = ref.partition(":")
            try:
                fn = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(
                    message=f"merge function {ref!r} of data class "
                    f"{data_class!r} cannot be imported: {exc}"
                ) from None
            self._merge[data_class] = fn
        return fn

    def _safe_key(self, data_class: str, item: dict[str, Any]) -> str:
        """The item's key for messages: keys are IDs, never PII (the policy forbids PII keys)."""
        return str(item.get(self._pk[data_class], "?"))

    def _last_region(self, data_class: str, exc: BaseException | None = None) -> str:
        """The region that answered ``exc`` (tagged by the call path), else our own."""
        return str(getattr(exc, "regionkit_region", None) or self.region or "?")

    # --- moving users between homes ---

    def move_user(
        self, user_id: str, *, country: str | None = None, region: str | None = None
    ) -> MoveResult:
        """Re-home a user: copy the profile, update the directory, delete the old copy.

        The directory entry is set to ``moving`` (with the target) before the copy,
        so a crash midway leaves a record: the audit reports the profile in two
        places as an unfinished move, and calling ``move_user`` again finishes it,
        also when the crash came after the directory update (the old copy is
        deleted then) or the retry picks another target (the half-made copy is too).
        """
        self.directory.invalidate(user_id)  # a move starts from the directory, not a cache
        entry = self.home_of(user_id)
        if region is None and country is None:
            raise ConfigError(message="move_user needs country= or region=")
        if region is None:
            jid = self.jurisdiction_for_country(country or "")
            homes = self.policy.jurisdictions[jid].home_regions
            region = next((r for r in homes if self.health.available(r)), homes[0])
        self.policy.check_region(region)
        to_j = self.policy.jurisdiction_of_region(region)
        steps: list[str] = []
        if entry.home_region == region and entry.status == "active":
            steps = ["already there"]
            if entry.moved_from and entry.moved_from != region:  # finish an interrupted delete
                steps += self._delete_pinned(user_id, entry.moved_from, leftovers=True)
            return MoveResult(user_id, region, region, to_j, to_j, False, steps)
        dpk = self._pk[self._dir_class]
        moving = DirectoryEntry(
            user_id, entry.home_region, entry.jurisdiction, "moving", moving_to=region
        )
        self.put(self._dir_class, {dpk: user_id, **moving.to_item()})
        steps.append(f"directory: moving {entry.home_region} -> {region}")
        audit_log.info(
            "residency.move.started",
            user_id=user_id,
            from_region=entry.home_region,
            to_region=region,
            from_jurisdiction=entry.jurisdiction,
            to_jurisdiction=to_j,
        )
        copied = False
        for name, dc in self.policy.data_classes.items():
            if not isinstance(dc, PinnedDataClass):
                continue
            old = self._pinned_get(name, user_id, entry.home_region, entry.jurisdiction)
            if old is not None:
                body = {k: v for k, v in old.items() if k not in RESERVED}
                self._pinned_put(name, body, region, to_j)
                copied = True
                steps.append(f"{name}: copied to {region}")
        done = DirectoryEntry(user_id, region, to_j, "active", moved_from=entry.home_region)
        self.put(self._dir_class, {dpk: user_id, **done.to_item()})
        self.directory.invalidate(user_id)
        self.directory.put(done)
        steps.append(f"directory: home is {region}")
        for old_region in (entry.home_region, entry.moving_to):
            if old_region and old_region != region:  # moving_to: an earlier, other target
                steps += self._delete_pinned(
                    user_id, old_region, leftovers=old_region != entry.home_region
                )
        audit_log.info(
            "residency.move.completed",
            user_id=user_id,
            from_region=entry.home_region,
            to_region=region,
            from_jurisdiction=entry.jurisdiction,
            to_jurisdiction=to_j,
        )
        return MoveResult(
            user_id, entry.home_region, region, entry.jurisdiction, to_j, copied, steps
        )

    def _delete_pinned(self, user_id: str, region: str, *, leftovers: bool = False) -> list[str]:
        """Delete every pinned item of ``user_id`` in ``region`` (idempotent); the steps.

        With ``leftovers`` only deletions that found an item are reported.
        """
        jurisdiction = self.policy.jurisdiction_of_region(region)
        steps = []
        for name, dc in self.policy.data_classes.items():
            if isinstance(dc, PinnedDataClass):
                found = self._pinned_delete(name, user_id, region, jurisdiction)
                if found or not leftovers:
                    steps.append(f"{name}: deleted from {region}")
        return steps

    def _pinned_get(
        self, data_class: str, user_id: str, region: str, jurisdiction: str
    ) -> dict[str, Any] | None:
        self.guard.check(op="read", data_class=data_class, region=region, jurisdiction=jurisdiction)
        key = to_ddb({self._pk[data_class]: user_id})
        raw = (
            self.clients.dynamodb(region)
            .get_item(TableName=self._tables[data_class], Key=key, ConsistentRead=True)
            .get("Item")
        )
        return from_ddb(raw)

    def _pinned_put(
        self, data_class: str, body: dict[str, Any], region: str, jurisdiction: str
    ) -> None:
        self.guard.check(
            op="write", data_class=data_class, region=region, jurisdiction=jurisdiction
        )
        body = dict(body)
        body[VERSION_ATTR] = str(self.clock.now())
        self.clients.dynamodb(region).put_item(
            TableName=self._tables[data_class], Item=to_ddb(body)
        )

    def _pinned_delete(self, data_class: str, user_id: str, region: str, jurisdiction: str) -> bool:
        """Delete one pinned item; True if there was one."""
        self.guard.check(
            op="write", data_class=data_class, region=region, jurisdiction=jurisdiction
        )
        out = self.clients.dynamodb(region).delete_item(
            TableName=self._tables[data_class],
            Key=to_ddb({self._pk[data_class]: user_id}),
            ReturnValues="ALL_OLD",
        )
        return bool(out.get("Attributes"))

    # --- introspection ---

    def chain(self, data_class: str, origin: str) -> tuple[Route, ...]:
        return self._chains[(data_class, origin)]

    def iter_routes(self) -> Iterator[tuple[tuple[str, str], tuple[Route, ...]]]:
        yield from self._chains.items()
