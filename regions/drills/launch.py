"""Opening a drill: its backend and its fault chosen and set up, a runner handed back.

What ``regionkit drill run`` does before the runner starts, as library calls (so a
script gets the same drill, and the CLI only parses and renders):

* :func:`open_local_drill`: the deterministic simulation (``target="sim"``, virtual
  time, no servers), else the ``local up`` cluster the settings' state file names,
  else an ephemeral cluster started for this drill and stopped after it;
* :func:`open_aws_drill`: the account confirmed against the credentials' own, the
  FIS experiment template found (or created with its customer-harm stop alarm, when
  asked), and routers on the real tables as the data plane.

Both are context managers that yield a ready :class:`~regions.drills.runner.DrillRunner`;
leaving them releases what they opened (the cluster, the clients) whether the drill
ended or was interrupted. Healing the fault is the runner's own ``finally``, so an
interrupted caller still holds the runner and its journal.

Set-up progress goes to ``on_event`` as ``("setup", detail)`` before the runner's own
``phase`` and ``progress`` events: ``detail["backend"]`` is ``sim``, ``local-up`` (with
``state_file``), ``ephemeral`` (with ``regions``) or ``aws`` (with ``template``,
``seconds`` and ``created``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from regions.drills.aws import (
    duration_seconds,
    find_template,
    require_identity,
    template_duration,
)
from regions.drills.runner import DrillOptions, DrillRunner, EventHook
from residency.clients import error_code
from residency.deployment import DeploymentPlan, plan_deployment
from residency.errors import BackendError, ConfigError, RegionkitError
from residency.fis_template import (
    DEFAULT_DURATION,
    check_fis_region,
    customer_harm_alarm,
    experiment_template_for_plan,
)

if TYPE_CHECKING:
    from regions.drills.scenarios import Params, Scenario
    from residency.clients import ClientProvider
    from residency.policy import Policy
    from residency.settings import Settings

__all__ = ["FisSetup", "open_aws_drill", "open_local_drill", "prepare_fis"]

#: How long a template created for a drill pauses replication when no duration is given:
#: the deployed template's own.
DEFAULT_CREATED_SECONDS = duration_seconds(DEFAULT_DURATION)


def _emit(on_event: EventHook | None, detail: dict[str, Any]) -> None:
    if on_event is not None:
        on_event("setup", detail)


# --- local and simulated --------------------------------------------------------------


@contextlib.contextmanager
def _local_backend(
    policy: Policy, settings: Settings, target: str, seed: int, on_event: EventHook | None
) -> Iterator[Any]:
    """The simulation, the running `local up` cluster, or one started for this drill."""
    from regions.drills import backends

    if target == "sim":
        from regions.local.sim import simulation

        _emit(on_event, {"backend": "sim", "regions": len(policy.regions)})
        with simulation(policy, seed=seed) as sim:
            yield backends.SimBackend(sim)
    elif settings.state_file.is_file():
        from regions.local.control import ControlClient

        _emit(on_event, {"backend": "local-up", "state_file": str(settings.state_file)})
        client = ControlClient.from_state_file(settings.state_file)
        with contextlib.closing(backends.RemoteClusterBackend(policy, settings, client)) as b:
            yield b
    else:
        from regions.local.cluster import LocalCluster

        _emit(on_event, {"backend": "ephemeral", "regions": len(policy.regions)})
        with (
            LocalCluster(
                policy, table_prefix=settings.table_prefix, policy_file=settings.policy
            ) as cluster,
            contextlib.closing(
                backends.LocalClusterBackend(cluster, settings=cluster.config(settings))
            ) as b,
        ):
            yield b


@contextlib.contextmanager
def open_local_drill(
    scenario: Scenario,
    params: Params,
    policy: Policy,
    settings: Settings,
    options: DrillOptions,
    *,
    target: Literal["local", "sim"] = "local",
    on_event: EventHook | None = None,
) -> Iterator[DrillRunner]:
    """A runner on a local backend (see the module docstring for which one)."""
    if target not in ("local", "sim"):
        raise ConfigError(message=f"drill target {target!r}: use 'local' or 'sim' here")
    with _local_backend(policy, settings, target, options.seed or 0, on_event) as backend:
        yield DrillRunner(
            backend,
            scenario,
            params,
            options=options,
            policy_path=settings.policy,
            on_event=on_event,
        )


# --- AWS: the FIS experiment ----------------------------------------------------------


@dataclass(frozen=True)
class FisSetup:
    """Where and how an AWS drill pauses replication, found or made before it starts."""

    account: str
    partition: str
    region: str
    template_id: str
    seconds: int
    """How long the experiment pauses replication: the template's own duration."""
    created: bool
    """The template was created for this drill (``create_template``); else deployed."""
    tables: tuple[tuple[str, str], ...]
    """(region, table ARN) of every replica the experiment pauses: checked afterwards for
    a pause statement FIS left behind."""


def _paused_tables(
    plan: DeploymentPlan, region: str, account: str, partition: str
) -> tuple[tuple[str, str], ...]:
    return tuple(
        (region, f"arn:{partition}:dynamodb:{region}:{account}:table/{t.table_name}")
        for t in plan.fis_targets(region)
    )


def _aws(operation: str, region: str, call: Callable[[], Any]) -> Any:
    """One control-plane call; a failure is a :class:`BackendError` in regionkit's words
    (the service's error code, never its message), not a botocore traceback."""
    try:
        return call()
    except RegionkitError:
        raise
    except Exception as exc:
        code = error_code(exc)
        denied = "AccessDenied" in code or "Unauthorized" in code
        raise BackendError(
            operation=operation,
            region=region,
            code=code,
            reason="the credentials may not do this (fix: grant it, or use the role the CDK "
            "app deploys for drills)"
            if denied
            else "the call failed (check the region, the network and the credentials)",
        ) from exc


def _create_template(
    clients: ClientProvider,
    plan: DeploymentPlan,
    region: str,
    account: str,
    partition: str,
    seconds: int,
) -> str:
    """Create the stop alarm, then the template, as the CDK app deploys them; the ID.

    The template is built (and so checked) before either call. Should the template's
    creation fail, the alarm stays: it is the one the CDK app deploys, and harmless.
    """
    template = experiment_template_for_plan(
        plan,
        region,
        duration=f"PT{seconds}S",
        account=account,
        partition=partition,
        stop_on="customer-harm",
    )
    harm = customer_harm_alarm(plan, region)
    # the stop condition is customer harm, which a replication pause does not cause
    _aws(
        "cloudwatch:PutMetricAlarm",
        region,
        lambda: clients.client("cloudwatch", region).put_metric_alarm(**harm),
    )
    created = _aws(
        "fis:CreateExperimentTemplate",
        region,
        lambda: clients.client("fis", region).create_experiment_template(
            **template, clientToken=uuid.uuid4().hex
        ),
    )
    return str(created["experimentTemplate"]["id"])


def prepare_fis(
    clients: ClientProvider,
    policy: Policy,
    region: str,
    *,
    confirm_account: str | None,
    table_prefix: str = "",
    duration: float | None = None,
    create_template: bool = False,
) -> FisSetup:
    """Confirm the account, then find (or create, if asked) the template of ``region``.

    The experiment's duration is the template's own: the deployed one (PT10M) unless
    ``duration`` is given, which needs a template of that duration (created with
    ``create_template``). A ``duration`` the deployed template would not honour is
    refused rather than silently ignored.
    """
    plan = plan_deployment(policy, table_prefix=table_prefix)
    check_fis_region(plan, region)  # before any call: nothing is touched on bad input
    sts = clients.client("sts", region)
    account, partition = _aws(
        "sts:GetCallerIdentity", region, lambda: require_identity(sts, confirm_account)
    )
    fis = clients.client("fis", region)
    template_id = _aws(
        "fis:ListExperimentTemplates", region, lambda: find_template(fis, policy.name, region)
    )
    created = template_id is None
    if template_id is not None:
        found = template_id
        seconds = _aws("fis:GetExperimentTemplate", region, lambda: template_duration(fis, found))
        if duration is not None and int(duration) != seconds:
            raise ConfigError(
                message=f"the deployed FIS template for {region} pauses replication for "
                f"{seconds} s, so a duration of {duration:g} s would not be honoured (fix: "
                "omit --duration, or delete the template and pass --create-template)"
            )
    elif not create_template:
        raise ConfigError(
            message=f"no regionkit FIS template for {region} in account {account} (fix: "
            "deploy the CDK app, or pass --create-template)"
        )
    else:
        seconds = max(1, int(duration if duration is not None else DEFAULT_CREATED_SECONDS))
        template_id = _create_template(clients, plan, region, account, partition, seconds)
    return FisSetup(
        account=account,
        partition=partition,
        region=region,
        template_id=template_id,
        seconds=seconds,
        created=created,
        tables=_paused_tables(plan, region, account, partition),
    )


class _ControlPlane:
    """The AWS drill's control-plane clients, with control-plane timeouts (not the
    router's sub-second ones) and botocore's retries.

    STS, FIS and CloudWatch are reached at AWS's own endpoints; DynamoDB (the tables'
    resource policies) where the data plane reaches it, the settings' endpoint override
    (a VPC endpoint, say) included.
    """

    def __init__(self, settings: Settings) -> None:
        from regions.pool import control_plane_pool

        self._dynamodb = control_plane_pool(settings)
        self._aws = control_plane_pool(settings.model_copy(update={"endpoints": {}}))

    def client(self, service: str, region: str) -> Any:
        pool = self._dynamodb if service == "dynamodb" else self._aws
        return pool.client(service, region)

    def close(self) -> None:
        self._dynamodb.close()
        self._aws.close()


@contextlib.contextmanager
def open_aws_drill(
    scenario: Scenario,
    params: Params,
    policy: Policy,
    settings: Settings,
    options: DrillOptions,
    *,
    confirm_account: str | None,
    duration: float | None = None,
    create_template: bool = False,
    clients: ClientProvider | None = None,
    data_plane: Any = None,
    on_event: EventHook | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = 5.0,
) -> Iterator[DrillRunner]:
    """A runner whose fault is the FIS experiment (see :mod:`regions.drills.aws`).

    ``clients`` serve the control plane (STS, FIS, CloudWatch, and DynamoDB's resource
    policies; default: client pools (:class:`~regions.pool.ClientPool`) with
    control-plane timeouts and botocore's retries, STS, FIS and CloudWatch at AWS's own
    endpoints);
    ``data_plane`` the workload (default: routers on the real tables,
    :class:`~regions.drills.aws.AwsDataPlane`). Both are closed on the way out if
    this call made them. ``now``, ``sleep`` and ``poll`` pace the experiment's polling
    (FIS's own API; a test passes virtual time).
    """
    from regions.drills.aws import AwsDataPlane, FisBackend, FisFault

    if scenario.fis_action is None:
        raise ConfigError(
            message=f"scenario {scenario.name} cannot run on AWS: only replication-pause "
            "has an FIS action"
        )
    if options.lag is not None:
        raise ConfigError(
            message="a replication lag (--lag) is for local drills: on AWS the lag is the real one"
        )
    if settings.mode != "aws":
        raise ConfigError(
            message="a drill against AWS needs aws mode (fix: set REGIONKIT_MODE=aws); in "
            "local mode the tables and endpoints are the local cluster's"
        )
    with contextlib.ExitStack() as stack:
        if clients is None:
            plane = _ControlPlane(settings)
            stack.callback(plane.close)
            clients = plane
        setup = prepare_fis(
            clients,
            policy,
            params.region,
            confirm_account=confirm_account,
            table_prefix=settings.table_prefix,
            duration=duration,
            create_template=create_template,
        )
        _emit(
            on_event,
            {
                "backend": "aws",
                "account": setup.account,
                "template": setup.template_id,
                "seconds": setup.seconds,
                "created": setup.created,
            },
        )
        if data_plane is None:
            data_plane = AwsDataPlane(policy, settings)
            stack.callback(data_plane.close)
        control = clients
        fault = FisFault(
            control.client("fis", setup.region),
            setup.template_id,
            duration=float(setup.seconds),
            ddb=lambda region: control.client("dynamodb", region),
            tables=list(setup.tables),
            now=now,
            sleep=sleep,
            poll=poll,
        )
        yield DrillRunner(
            FisBackend(data_plane, fault),
            scenario,
            params,
            options=dataclasses.replace(options, duration=float(setup.seconds)),
            policy_path=settings.policy,
            on_event=on_event,
        )
