"""The embedded local cluster: one moto server per region, provisioned, replicated.

::

    from regions.local import LocalCluster
    from residency.policy import load_policy

    with LocalCluster(load_policy("policies/minimal.yaml")) as c:
        c.client("eu-west-1").put_item(TableName="content", Item={"pk": {"S": "p1"}})
        c.replicator.wait_converged()
        c.outage("eu-west-1")                 # SIGSTOP: clients time out
        c.restore("eu-west-1")
        router = RegionRouter(..., config=c.config(region="eu-west-1"))

Start-up: the servers start in parallel (:mod:`regions.local.servers`), the
tables are provisioned from the policy with a thread per region
(:mod:`regions.local.provision`), then the replication emulator
(:class:`regions.local.replication.Replicator`) starts tailing every replica's
stream. If any step fails, everything already started is stopped again and a
:class:`~residency.errors.ClusterError` says what failed.

Faults: :meth:`LocalCluster.outage` (a region stops answering: ``"stop"`` is
SIGSTOP, clients time out; ``"refuse"`` closes its port, clients are refused;
either keeps the region's data), the replication link faults (lag, pause,
partition, heal) and per-region clock skew, which :meth:`physical_clock` applies
for writers that take a clock (the router's ``physical_clock``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from regions.local.clients import CONTROL, REPLICATION, ClusterClients
from regions.local.servers import (
    MotoServer,
    ServerKind,
    run_dir_prefix,
    start_servers,
    sweep_stale,
)
from residency.errors import ClusterError, ConfigError
from residency.logs import get_logger
from residency.policy import Policy

if TYPE_CHECKING:
    from regions.conflicts import ConflictDetector
    from regions.local.control import ControlServer
    from regions.local.replication import Replicator
    from residency.settings import RouterConfig

__all__ = ["LocalCluster", "OutageMode"]

log = get_logger("regionkit.local.cluster")

OutageMode = Literal["stop", "refuse"]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LocalCluster:
    """One moto server per policy region on 127.0.0.1, provisioned from the policy.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    :param table_prefix: prepended to every table name (``RouterConfig.table_prefix``).
    :param replicate: start the replication emulator.
    :param state_file: write a state file there while running (``regionkit local up``
        does); it is removed on stop.
    :param server_kind: ``"fast"`` (keep-alive server; the default) or ``"stock"``
        (``python -m moto.server``; cannot ``refuse``).
    :param control: also serve the JSON control endpoint (:mod:`regions.local.control`).
    :param on_stop_request: called when a client asks the control endpoint to stop.
    :param ttl_sweep_s: run DynamoDB's TTL process (:meth:`expire`) every so many
        seconds; ``None`` (the default) only when :meth:`expire` is called.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        table_prefix: str = "",
        replicate: bool = True,
        state_file: Path | str | None = None,
        server_kind: ServerKind = "fast",
        control: bool = False,
        on_stop_request: Callable[[], None] | None = None,
        start_timeout: float = 30.0,
        policy_file: Path | str | None = None,
        ttl_sweep_s: float | None = None,
    ) -> None:
        if ttl_sweep_s is not None and not ttl_sweep_s > 0:
            raise ConfigError(message=f"ttl_sweep_s must be > 0 seconds, not {ttl_sweep_s!r}")
        self.ttl_sweep_s = ttl_sweep_s
        self._sweeper: threading.Thread | None = None
        self._sweep_stop = threading.Event()
        self.policy = policy
        self.table_prefix = table_prefix
        self.replicate = replicate
        self.state_file = Path(state_file) if state_file is not None else None
        self.server_kind: ServerKind = server_kind
        self.start_timeout = start_timeout
        self.policy_file = str(policy_file) if policy_file is not None else None
        self._want_control = control
        self._on_stop_request = on_stop_request
        self.servers: dict[str, MotoServer] = {}
        self.clients = ClusterClients({}, CONTROL)
        self.replication_clients = ClusterClients({}, REPLICATION)
        self.replicator: Replicator | None = None
        self.detector: ConflictDetector | None = None
        self.control: ControlServer | None = None
        self.control_token = secrets.token_urlsafe(24)
        self._skew: dict[str, int] = dict.fromkeys(policy.regions, 0)
        self._outages: dict[str, OutageMode] = {}
        self._run_dir: Path | None = None
        self._lock = threading.RLock()
        self._started = False
        self._stopped = False
        self.started_at: str | None = None
        self.timings: dict[str, float] = {}

    # --- life cycle ---

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        with self._lock:
            if self._started:
                raise ClusterError(message="this LocalCluster was already started; make a new one")
            self._started = True
            self._check_state_file()
            t0 = time.perf_counter()
            atexit.register(self.stop)
            try:
                sweep_stale()  # what SIGKILLed clusters left in the temporary directory
                self._run_dir = Path(tempfile.mkdtemp(prefix=run_dir_prefix()))
                self.servers = start_servers(
                    self.policy.regions,
                    kind=self.server_kind,
                    timeout=self.start_timeout,
                    log_dir=self._run_dir,
                )
                t1 = time.perf_counter()
                self.clients = ClusterClients(self.endpoints, CONTROL)
                self.replication_clients = ClusterClients(self.endpoints, REPLICATION)
                from regions.local.provision import provision

                provision(self.policy, self.clients, table_prefix=self.table_prefix)
                t2 = time.perf_counter()
                if self.replicate:
                    self._start_replicator()
                t3 = time.perf_counter()
                if self.ttl_sweep_s is not None:
                    self._sweeper = threading.Thread(
                        target=self._sweep_loop, daemon=True, name="ttl-sweep"
                    )
                    self._sweeper.start()
                if self._want_control:
                    from regions.local.control import ControlServer

                    self.control = ControlServer(
                        self, token=self.control_token, on_stop=self._on_stop_request
                    ).start()
                self.started_at = _now_iso()
                self._write_state()
            except BaseException:
                self.stop()
                raise
            self.timings = {
                "servers_s": t1 - t0,
                "provision_s": t2 - t1,
                "replicator_s": t3 - t2,
                "total_s": time.perf_counter() - t0,
            }
            log.info(
                "cluster_started",
                policy=self.policy.name,
                endpoints=self.endpoints,
                replicate=self.replicate,
                **{k: round(v, 3) for k, v in self.timings.items()},
            )
            return self

    def _start_replicator(self) -> None:
        try:
            from regions.local.appliers import ServerApplier
            from regions.local.replication import Replicator
        except ImportError as exc:
            raise ClusterError(
                message=f"the replication emulator is not available ({exc}); "
                "start the cluster with replicate=False"
            ) from exc
        from regions.conflicts import ConflictDetector

        # The conflict detector reads every replica's stream through the emulator's
        # feed, as the Lambda on each stream does in AWS.
        self.detector = ConflictDetector(
            self.policy, self.replication_clients, table_prefix=self.table_prefix
        )
        # Replicated changes are applied inside each region's server, by moto's own
        # backend, as DynamoDB applies them internally (regions.local.apply_endpoint).
        self.replicator = Replicator(
            self.policy,
            self.replication_clients,
            table_prefix=self.table_prefix,
            listeners=[self.detector],
            applier=ServerApplier(self.replication_clients),
        )
        self.replicator.start()

    def stop(self) -> None:
        """Stop everything this cluster started; idempotent; leaves no process or file."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            atexit.unregister(self.stop)
            self._stop_background()
            errors = self._stop_servers()
            self.clients.close()
            self.replication_clients.close()
            self._remove_files()
            log.info("cluster_stopped", policy=self.policy.name)
            if errors:
                raise ClusterError(message="some servers did not stop: " + "; ".join(errors))

    def _stop_background(self) -> None:
        """The sweeper, the control server, the outages and the replicator, in that order."""
        self._sweep_stop.set()
        if self._sweeper is not None:
            self._sweeper.join(35)
        if self.control is not None:
            with contextlib.suppress(Exception):
                self.control.stop()
        self._end_outages()  # first, so no replicator call hangs on a frozen server
        if self.replicator is not None:
            try:
                self.replicator.stop()
            except Exception:
                log.exception("replicator_stop_failed")

    def _stop_servers(self) -> list[str]:
        """Stop every region's server; the failures, as "region: error"."""
        errors: list[str] = []
        for server in self.servers.values():
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others, then report
                errors.append(f"{server.region}: {exc}")
        return errors

    def _remove_files(self) -> None:
        """The state file (if this process wrote it) and the run directory."""
        if self.state_file is not None:
            from regions.local.state import remove_state

            remove_state(self.state_file, owner_pid=os.getpid())
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def _end_outages(self) -> None:
        for region, mode in list(self._outages.items()):
            server = self.servers.get(region)
            if server is None:
                continue
            with contextlib.suppress(Exception):
                if mode == "stop":
                    server.resume()
                else:
                    server.accept()

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    def _require_running(self) -> None:
        if not self.running:
            raise ClusterError(message="the cluster is not running")

    # --- access ---

    @property
    def endpoints(self) -> dict[str, str]:
        """Region -> endpoint URL of its moto server."""
        return {region: s.url for region, s in self.servers.items()}

    @property
    def pids(self) -> dict[str, int]:
        return {region: s.pid for region, s in self.servers.items()}

    @property
    def control_url(self) -> str | None:
        return self.control.url if self.control is not None else None

    def client(self, region: str, service: str = "dynamodb") -> Any:
        """A cached control-plane boto3 client (short timeouts, one attempt)."""
        self.policy.check_region(region)
        return self.clients.client(service, region)

    def table_name(self, logical: str) -> str:
        return self.table_prefix + logical

    def config(self, base: RouterConfig | None = None, **overrides: Any) -> RouterConfig:
        """A router configuration pointing at this cluster: local mode, its endpoints and
        table prefix, then ``overrides``, every other value from ``base`` (the CLI passes
        its settings, so a service's ``REGIONKIT_*`` timeouts apply to a drill) or the
        defaults. Nothing is read here: no ``REGIONKIT_*`` variable, ``.env`` or state
        file (a process started elsewhere finds the cluster with
        ``RegionRouter.from_env()``)."""
        from residency.settings import RouterConfig

        values: dict[str, Any] = {
            "mode": "local",
            "endpoints": self.endpoints,
            "table_prefix": self.table_prefix,
            **overrides,
        }
        if base is None:
            return RouterConfig(**values)
        # validated as a RouterConfig (which reads nothing), then copied onto the base
        fields = set(RouterConfig.model_fields)
        checked = RouterConfig(**{**base.model_dump(include=fields), **values})
        return base.model_copy(update={k: getattr(checked, k) for k in values})

    # --- outages ---

    def outage(self, region: str, mode: OutageMode = "stop") -> None:
        """Take a region down: ``stop`` = SIGSTOP (timeouts), ``refuse`` = port closed."""
        self.policy.check_region(region)
        self._require_running()
        if mode not in ("stop", "refuse"):
            raise ConfigError(message=f"outage mode must be 'stop' or 'refuse', not {mode!r}")
        with self._lock:
            current = self._outages.get(region)
            if current == mode:
                return
            if current is not None:
                self.restore(region)
            if self.replicator is not None:
                self.replicator.region_down(region)
            server = self.servers[region]
            if mode == "stop":
                server.pause()
            else:
                server.refuse()
            self._outages[region] = mode
            log.info("region_outage", region=region, mode=mode)
        self._write_state()

    def restore(self, region: str) -> None:
        """End a region's outage; it answers again with the data it held."""
        self.policy.check_region(region)
        self._require_running()
        with self._lock:
            mode = self._outages.get(region)
            if mode is None:
                return
            server = self.servers[region]
            if mode == "stop":
                server.resume()
            else:
                server.accept()  # may fail (port taken): then the outage stays recorded
            del self._outages[region]
            if self.replicator is not None:
                self.replicator.region_up(region)
            log.info("region_restored", region=region)
        self._write_state()

    @property
    def outages(self) -> Mapping[str, OutageMode]:
        return MappingProxyType(self._outages)

    # --- time to live ---

    def expire(self, now: float | None = None) -> dict[str, dict[str, int]]:
        """Run DynamoDB's TTL process in every region that is up, as of ``now`` (epoch
        seconds; the wall clock by default): each region deletes its own expired
        items, the deletions stream as TTL deletions and replicate
        (:mod:`regions.local.expiry`). A region in an outage expires nothing, as in
        AWS. Returns ``{region: {table: count}}`` for the regions swept."""
        self._require_running()
        at = time.time() if now is None else float(now)
        out: dict[str, dict[str, int]] = {}
        for region, server in self.servers.items():
            with self._lock:
                if region in self._outages:
                    continue
            out[region] = server.expire(at)
        swept = {r: n for r, counts in out.items() if (n := sum(counts.values()))}
        if swept:
            log.info("ttl_expired", regions=swept)
        return out

    def _sweep_loop(self) -> None:
        assert self.ttl_sweep_s is not None
        while not self._sweep_stop.wait(self.ttl_sweep_s):
            try:
                self.expire()
            except ClusterError as exc:  # a region lost mid-sweep: the next sweep retries
                log.warning("ttl_sweep_failed", error=str(exc))

    # --- clock skew ---

    def set_clock_skew(self, region: str, ms: int) -> None:
        """Skew the clock of writers in ``region`` by ``ms`` (positive: ahead)."""
        self.policy.check_region(region)
        if isinstance(ms, bool) or not isinstance(ms, int):
            raise ConfigError(message=f"clock skew is a whole number of ms, not {ms!r}")
        with self._lock:
            self._skew[region] = ms
        log.info("clock_skew", region=region, ms=ms)
        self._write_state()

    @property
    def clock_skew(self) -> Mapping[str, int]:
        """Region -> skew in ms: a live, read-only view."""
        return MappingProxyType(self._skew)

    def physical_clock(self, region: str) -> Callable[[], int]:
        """A wall clock in ms for writers in ``region``, following its current skew."""
        self.policy.check_region(region)
        skew = self._skew

        def clock() -> int:
            return time.time_ns() // 1_000_000 + skew.get(region, 0)

        return clock

    # --- replication faults (need the emulator) ---

    def _faults(self) -> Any:
        self._require_running()
        if self.replicator is None:
            raise ClusterError(message="replication is off in this cluster (replicate=False)")
        return self.replicator.faults

    def _regions(self, *names: str | None) -> None:
        for name in names:
            if name is not None:
                self.policy.check_region(name)

    def set_lag(
        self, src: str | None, dst: str | None, ms: float | None, *, jitter_ms: float = 0.0
    ) -> None:
        """Lag on the links src -> dst (None = every region); ms None clears it."""
        self._regions(src, dst)
        if (ms is not None and ms < 0) or jitter_ms < 0:
            raise ConfigError(message="lag and jitter are positive numbers of ms")
        self._faults().set_lag(
            src, dst, None if ms is None else ms / 1000.0, jitter=jitter_ms / 1000.0
        )

    def pause_replication(
        self, src: str | None = None, dst: str | None = None, *, region: str | None = None
    ) -> None:
        """Pause links src -> dst, or with ``region`` every link into and out of it."""
        self._regions(src, dst, region)
        faults = self._faults()
        if region is not None:
            faults.pause(src=region)
            faults.pause(dst=region)
        else:
            faults.pause(src=src, dst=dst)

    def resume_replication(
        self, src: str | None = None, dst: str | None = None, *, region: str | None = None
    ) -> None:
        self._regions(src, dst, region)
        faults = self._faults()
        if region is not None:
            faults.resume(src=region)
            faults.resume(dst=region)
        else:
            faults.resume(src=src, dst=dst)

    def partition(self, groups: list[list[str]]) -> None:
        seen: set[str] = set()
        for group in groups:
            self._regions(*group)
            if seen & set(group):
                raise ConfigError(message="a region may be in one partition group only")
            seen |= set(group)
        self._faults().partition([list(g) for g in groups])

    def heal(self) -> None:
        self._faults().heal()

    # --- status and state ---

    def unreplicated_ages(self, region: str, *, fresh: bool = True) -> list[float]:
        """Ages (s) of the writes made in ``region`` that some replica has not received
        yet, one per write (the RPO exposure if ``region`` were lost now). ``fresh``:
        read the region's streams first (exact; a poll per table)."""
        if self.replicator is None:
            return []
        engine = self.replicator.engine
        try:
            if fresh:
                engine.poll(region)
        except Exception:  # the region may already be unreachable: count what is known
            pass
        return list(engine.unreplicated_ages(region, time.time()))

    def link_metrics(self) -> list[dict[str, Any]]:
        if self.replicator is None:
            return []
        return [asdict(m) for m in self.replicator.metrics()]

    def status(self) -> dict[str, Any]:
        engine = getattr(self.replicator, "engine", None)
        servers = {}
        for region, s in self.servers.items():
            servers[region] = {
                "url": s.url,
                "pid": s.pid,
                "alive": s.alive(),
                "state": s.state,
                "jurisdiction": self.policy.jurisdiction_of_region(region),
            }
        return {
            "policy": self.policy.name,
            "running": self.running,
            "started_at": self.started_at,
            "replicate": self.replicator is not None,
            "table_prefix": self.table_prefix,
            "servers": servers,
            "outages": dict(self._outages),
            "clock_skew_ms": dict(self._skew),
            "links": self.link_metrics(),
            "replication_errors": list(getattr(engine, "errors", []))[-20:],
            "replication_failed": list(getattr(engine, "failed", []))[-20:],
            "replication_failed_count": int(getattr(engine, "failed_count", 0)),
        }

    def state(self) -> dict[str, Any]:
        """What the state file holds."""
        return {
            "policy": self.policy.name,
            "policy_file": self.policy_file,
            "table_prefix": self.table_prefix,
            "endpoints": self.endpoints,
            "control": self.control_url,
            "control_token": self.control_token if self.control is not None else None,
            "pids": {"owner": os.getpid(), "servers": self.pids},
            "started_at": self.started_at,
            "clock_skew_ms": dict(self._skew),
            "outages": dict(self._outages),
            "replicate": self.replicate,
            "server_kind": self.server_kind,
        }

    def _write_state(self) -> None:
        if self.state_file is None or not self.running or self.started_at is None:
            return
        from regions.local.state import write_state

        write_state(self.state_file, self.state())

    def _check_state_file(self) -> None:
        if self.state_file is None:
            return
        from regions.local.state import pid_alive, read_state

        try:
            state = read_state(self.state_file)
        except ConfigError:
            raise
        if state is None:
            return
        owner = state.get("pids", {}).get("owner")
        if isinstance(owner, int) and owner != os.getpid() and pid_alive(owner):
            raise ClusterError(
                message=f"a cluster is already running (pid {owner}) with state file "
                f"{self.state_file}; stop it with `regionkit local down`, or use another "
                "state file"
            )
        log.info("stale_state_file_replaced", path=str(self.state_file))
