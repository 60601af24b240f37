"""Drills against real AWS accounts: an FIS experiment that pauses replication.

:class:`FisBackend` runs it with the same :class:`~regions.drills.runner.DrillRunner`
as the local drills, so the canary workload runs through the router against the real
tables during the experiment and RTO, RPO exposure and convergence come out of the AWS
drill too. The fault is the FIS experiment (:class:`FisFault`): ``inject`` starts it
and waits until it runs; ``heal`` stops it if it still runs and waits for its end;
then the tables' resource policies are checked for the pause statement, which is
removed, and said loudly, if FIS left it. The runner's ``finally`` does the same on
Ctrl-C or SIGTERM, so no experiment is left running.
:func:`regions.drills.launch.open_aws_drill` sets all of it up.

On AWS, regionkit does not fake faults: it runs the FIS action
``aws:dynamodb:global-table-pause-replication`` from the experiment template
the CDK app deploys per region (or creates the same template if asked), and
records the experiment's life cycle in a drill journal.

Safety: :func:`require_account` refuses to touch an account unless the caller
names it explicitly (``--confirm-account``) and it matches the credentials' own
account. The template is the one the CDK app deploys
(:mod:`residency.fis_template`, in the base layer so the app and the drills share it).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from residency.errors import BackendError, ConfigError
from residency.logs import get_logger

log = get_logger("regionkit.drills.aws")

__all__ = [
    "FisBackend",
    "FisFault",
    "duration_seconds",
    "find_template",
    "pause_statements",
    "remove_pause_statements",
    "require_account",
    "require_identity",
    "template_duration",
]

TERMINAL = {"completed", "stopped", "failed", "cancelled"}
REPLICATION_ROLE = "AWSServiceRoleForDynamoDBReplication"
REPLICATION_SERVICE = "replication.dynamodb.amazonaws.com"
_ISO = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


def duration_seconds(iso: str) -> int:
    """Seconds of an ISO 8601 duration such as ``PT10M`` (hours, minutes, seconds)."""
    m = _ISO.match(iso.strip())
    if not m or not any(m.groups()):
        raise ConfigError(message=f"FIS duration {iso!r} is not like 'PT10M' or 'PT90S'")
    h, mi, sec = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + sec


def template_duration(fis: Any, template_id: str) -> int:
    """The longest action duration of an experiment template, in seconds."""
    t = fis.get_experiment_template(id=template_id)["experimentTemplate"]
    durations = [
        duration_seconds(a["parameters"]["duration"])
        for a in t.get("actions", {}).values()
        if a.get("parameters", {}).get("duration")
    ]
    if not durations:
        raise ConfigError(
            message=f"FIS template {template_id} has no action with a duration "
            "(fix: redeploy the regionkit template)"
        )
    return max(durations)


def pause_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Deny statements against DynamoDB's replication role: what the FIS pause adds."""
    out = []
    for st in policy.get("Statement", []):
        if st.get("Effect") != "Deny":
            continue
        text = json.dumps(st.get("Principal", {})) + json.dumps(st.get("Condition", {}))
        if REPLICATION_ROLE in text or REPLICATION_SERVICE in text:
            out.append(st)
    return out


def _not_found(exc: Exception, code: str) -> bool:
    return code in type(exc).__name__ or code in str(exc)


def remove_pause_statements(ddb: Any, arn: str) -> int:
    """Remove pause statements left in a resource policy (a table's or a stream's); how
    many were removed."""
    try:
        got = ddb.get_resource_policy(ResourceArn=arn)
    except Exception as exc:  # no policy at all is the normal case
        if _not_found(exc, "PolicyNotFound"):
            return 0
        if "/stream/" in arn and _not_found(exc, "ResourceNotFound"):
            return 0  # a stream replaced since it was described has no policy to clean
        raise
    policy = json.loads(got.get("Policy") or "{}")
    found = pause_statements(policy)
    if not found:
        return 0
    rest = [st for st in policy.get("Statement", []) if st not in found]
    revision = got.get("RevisionId")
    if rest:
        ddb.put_resource_policy(
            ResourceArn=arn,
            Policy=json.dumps({**policy, "Statement": rest}),
            **({"ExpectedRevisionId": revision} if revision else {}),
        )
    else:
        ddb.delete_resource_policy(
            ResourceArn=arn, **({"ExpectedRevisionId": revision} if revision else {})
        )
    return len(found)


class FisFault:
    """One FIS experiment as a drill fault: start and wait until it runs, stop, verify.

    ``tables`` are the (region, table ARN) replicas the experiment pauses; their
    resource policies are checked after the experiment for a pause statement left
    behind (a replica left REPLICATION_NOT_AUTHORIZED for 20 hours becomes a
    single-region table for good).
    """

    def __init__(
        self,
        fis: Any,
        template_id: str,
        *,
        duration: float,
        ddb: Callable[[str], Any],
        tables: list[tuple[str, str]],
        now: Callable[[], float],
        sleep: Callable[[float], None],
        poll: float = 5.0,
    ) -> None:
        self.fis, self.template_id, self.duration = fis, template_id, duration
        self.ddb, self.tables, self.now, self.sleep, self.poll = ddb, tables, now, sleep, poll
        self.experiment: str | None = None
        self.state = "not started"
        self.notes: list[str] = []

    @property
    def deadline_seconds(self) -> float:
        """How long to wait for the experiment: its own duration plus FIS's overheads."""
        return self.duration * 1.1 + 120.0

    def _state(self) -> str:
        assert self.experiment is not None
        exp = self.fis.get_experiment(id=self.experiment)["experiment"]
        self.state = str(exp["state"]["status"])
        return self.state

    def start(self) -> None:
        if self.experiment is not None:
            return
        try:
            exp = self.fis.start_experiment(
                experimentTemplateId=self.template_id, clientToken=uuid.uuid4().hex
            )["experiment"]
        except Exception as exc:
            raise BackendError(
                operation="fis:StartExperiment",
                region="-",
                code=type(exc).__name__,
                reason="the experiment did not start",
            ) from exc
        self.experiment = str(exp["id"])
        self.state = str(exp.get("state", {}).get("status", "pending"))
        deadline = self.now() + 120.0
        while self.state not in {"running", *TERMINAL} and self.now() < deadline:
            self.sleep(min(self.poll, 1.0))
            self._state()
        if self.state != "running":
            raise BackendError(
                operation="fis:GetExperiment",
                region="-",
                code=self.state,
                reason=f"experiment {self.experiment} is {self.state}, not running",
            )

    def running(self) -> bool:
        return self.experiment is not None and self._state() not in TERMINAL

    def stop(self) -> None:
        """Stop the experiment if it still runs; wait (bounded) for its end."""
        if self.experiment is None:
            return
        if self._state() not in TERMINAL:
            self.fis.stop_experiment(id=self.experiment)
            self.notes.append(f"stopped experiment {self.experiment}")
        deadline = self.now() + 300.0
        while self._state() not in TERMINAL and self.now() < deadline:
            self.sleep(min(self.poll, 1.0))

    def wait_end(self, timeout: float) -> str:
        """Wait for the experiment to end by itself; stop it at the deadline."""
        deadline = self.now() + timeout
        while self.running() and self.now() < deadline:
            self.sleep(self.poll)
        if self.state not in TERMINAL:
            self.notes.append(f"experiment {self.experiment} outlived its deadline")
            self.stop()
        return self.state

    def leftovers(self, remove: bool = True) -> list[str]:
        """Pause statements still in the resource policies of the tables and of their
        streams (FIS adds its statement to both; removed if ``remove``)."""
        left: list[str] = []
        for region, table in self.tables:
            for arn in self._policies_of(region, table, left):
                try:
                    n = remove_pause_statements(self.ddb(region), arn) if remove else 0
                except Exception as exc:
                    left.append(f"could not check {arn} ({type(exc).__name__}): check it by hand")
                    continue
                if n:
                    msg = (
                        f"REMOVED {n} replication-pause statement(s) FIS left in the resource "
                        f"policy of {arn}"
                    )
                    self.notes.append(msg)
                    log.error("pause statement left behind", resource=arn, removed=n)
        return left

    def _policies_of(self, region: str, table_arn: str, left: list[str]) -> list[str]:
        """The table's ARN and its stream's, if it has one."""
        name = table_arn.split(":table/", 1)[1]
        try:
            described = self.ddb(region).describe_table(TableName=name)["Table"]
        except Exception as exc:
            left.append(
                f"could not find the stream of {table_arn} ({type(exc).__name__}): check "
                "its stream policy by hand"
            )
            return [table_arn]
        stream = described.get("LatestStreamArn")
        if not stream:
            return [table_arn]
        return [table_arn, str(stream)]


def require_account(sts: Any, confirm: str | None) -> str:
    """The caller's account ID, if and only if ``confirm`` names it."""
    return require_identity(sts, confirm)[0]


def require_identity(sts: Any, confirm: str | None) -> tuple[str, str]:
    """The caller's account ID and partition, if and only if ``confirm`` names the account."""
    identity = sts.get_caller_identity()
    actual = str(identity["Account"])
    if not confirm:
        raise ConfigError(
            message=(
                "a drill against AWS changes a real account: pass --confirm-account "
                f"{actual} to confirm the account these credentials belong to"
            )
        )
    if confirm.strip() != actual:
        raise ConfigError(
            message=(
                f"--confirm-account {confirm} does not match the caller's account {actual}; "
                "refusing to run (check AWS_PROFILE and the credentials in use)"
            )
        )
    arn = str(identity.get("Arn", ""))  # arn:<partition>:sts::<account>:assumed-role/...
    partition = arn.split(":")[1] if arn.count(":") >= 2 else ""
    return actual, partition or "aws"


def find_template(fis: Any, policy_name: str, region: str) -> str | None:
    """The ID of the regionkit pause-replication template for ``region``, if deployed."""
    token: str | None = None
    while True:
        page = fis.list_experiment_templates(**({"nextToken": token} if token else {}))
        for t in page.get("experimentTemplates", []):
            tags = t.get("tags", {})
            if (
                tags.get("regionkit:policy") == policy_name
                and tags.get("regionkit:region") == region
            ):
                return str(t["id"])
        token = page.get("nextToken")
        if not token:
            return None


class FisBackend:
    """The AWS drill backend: the router's own workload on the real tables, FIS as the fault.

    ``data`` provides the data plane (``router``, ``get``, ``scan``, ``now``,
    ``sleep``, ``threaded``, ``settings``): routers on real AWS clients, or, in
    tests, the simulation on virtual time. AWS shows no replication queue, so
    RPO exposure and convergence are measured by probing the replicas for the
    drill's own acknowledged writes (``observes_replication = False``).
    """

    name = "aws"
    observes_replication = False

    def __init__(self, data: Any, fault: FisFault) -> None:
        self.data = data
        self.fault = fault
        self.policy = data.policy
        self.threaded = bool(data.threaded)
        self.settings = getattr(data, "settings", None)

    def now(self) -> float:
        return float(self.data.now())

    def sleep(self, seconds: float) -> None:
        self.data.sleep(seconds)

    def router(self, region: str) -> Any:
        return self.data.router(region)

    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.data.get(region, table, key)  # type: ignore[no-any-return]

    def scan(self, region: str, table: str) -> Any:
        return self.data.scan(region, table)

    def conflicts(self) -> list[Any]:
        return list(self.data.conflicts())

    def pause(self, src: str | None = None, dst: str | None = None) -> None:
        self.fault.start()  # one experiment pauses both directions

    aborting = False

    def abort(self) -> None:
        """The drill is being interrupted: the next heal stops the experiment at once."""
        self.aborting = True

    def resume(self, src: str | None = None, dst: str | None = None) -> None:
        if self.aborting:
            self.fault.stop()
        else:  # the experiment ends by itself at its duration; stop it at the deadline
            self.fault.wait_end(self.fault.deadline_seconds)

    def _unsupported(self, what: str) -> None:
        raise ConfigError(message=f"{what} has no FIS action; only replication-pause runs on AWS")

    def outage(self, region: str, mode: str = "stop") -> None:
        self._unsupported("region-outage")

    def restore(self, region: str) -> None:
        pass

    def partition(self, groups: list[list[str]]) -> None:
        self._unsupported("partition")

    def heal_links(self) -> None:
        self.fault.stop()

    def skew(self, region: str, ms: int) -> None:
        if ms:
            self._unsupported("clock-skew")

    def set_lag(self, seconds: float) -> None:
        if seconds:
            self._unsupported("--lag")

    def unreplicated_ages(self, region: str, fresh: bool = True) -> list[float]:
        return []  # AWS does not show it: the runner probes the replicas instead

    def links(self) -> list[Any]:
        return []  # ReplicationLatency is CloudWatch's, minutes late: not waited for

    def wait_converged(self, timeout: float, since: float | None = None) -> bool:
        return True  # the runner probes its own writes on every replica

    def take_notes(self) -> list[str]:
        """What the fault's clean-up did (stopped experiments, removed statements), once."""
        notes, self.fault.notes = self.fault.notes, []
        return notes

    def faults_left(self) -> list[str]:
        left = []
        if self.fault.running():
            left.append(f"FIS experiment {self.fault.experiment} still {self.fault.state}")
        left += self.fault.leftovers(remove=True)
        return left


class AwsDataPlane:
    """Routers on real AWS clients with the service's own settings, on wall-clock time."""

    name = "aws"
    threaded = True

    def __init__(self, policy: Any, settings: Any, *, session: Any = None) -> None:
        from regions.pool import ClientPool
        from regions.router import RegionRouter

        self.policy = policy
        self.settings = settings
        self._pool = ClientPool(settings, session=session, max_pool_connections=64)
        self._admin = ClientPool(
            settings.model_copy(update={"read_timeout": 10.0}), session=session
        )
        self._routers = {
            r: RegionRouter(policy, region=r, clients=self._pool, config=settings)
            for r in policy.regions
        }

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def router(self, region: str) -> Any:
        return self._routers[region]

    def admin(self, region: str) -> Any:
        return self._admin.client("dynamodb", region)

    def get(self, region: str, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        from regions.codec import from_ddb, to_ddb

        item = self._admin.client("dynamodb", region).get_item(TableName=table, Key=to_ddb(key))
        return from_ddb(item.get("Item"))

    def scan(self, region: str, table: str) -> Any:
        raise ConfigError(message="an AWS drill never scans whole tables")

    def conflicts(self) -> list[Any]:
        from regions.conflicts import ConflictLog

        log = ConflictLog(self.policy, self._admin, table_prefix=self.settings.table_prefix)
        return log.scan(self.policy.regions[0])

    def close(self) -> None:
        for r in self._routers.values():
            r.close()
        self._pool.close()
        self._admin.close()
