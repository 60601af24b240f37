"""The runners behind ``regionkit drill run``: local (or simulated) clusters, and AWS FIS.

Orchestration that ties the layers together: the drill runner of :mod:`regions.drills`
with a local cluster, or with the FIS experiment template built by
:mod:`infra.fis_template` (``regions`` may not import ``infra``, so they meet here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from _cli.common import console, fail

if TYPE_CHECKING:
    from regions.drills import DrillOptions
    from regions.drills.journal import DrillJournal
    from residency.policy import Policy
    from residency.settings import Settings


# --- local and simulated --------------------------------------------------------------


def _local_backend(progress: Any, task: Any, policy: Policy, settings: Settings) -> Any:
    """A context manager for the backend: the `local up` cluster, else an ephemeral one."""
    import contextlib

    if settings.state_file.is_file():
        from regions.drills.backends import RemoteClusterBackend
        from regions.local.control import ControlClient

        progress.update(task, description=f"using the cluster in {settings.state_file}")
        client = ControlClient.from_state_file(settings.state_file)
        return contextlib.nullcontext(RemoteClusterBackend(policy, settings, client))
    from regions.drills.backends import LocalClusterBackend
    from regions.local.cluster import LocalCluster

    progress.update(task, description=f"starting a local cluster of {len(policy.regions)} regions")

    @contextlib.contextmanager
    def ephemeral() -> Any:
        with LocalCluster(
            policy, table_prefix=settings.table_prefix, policy_file=settings.policy
        ) as cluster:
            yield LocalClusterBackend(cluster, settings=cluster.config(settings))

    return ephemeral()


def _phase_reporter(progress: Any, task: Any, name: str) -> Any:
    def on_event(kind: str, detail: dict[str, Any]) -> None:
        if kind == "phase":
            progress.update(task, description=f"drill {name}: {detail['name']}")
        elif kind == "progress":
            progress.update(
                task,
                description=(
                    f"drill {name}: {detail['phase']} {detail['elapsed']:.1f}/{detail['of']:.0f} s"
                ),
            )

    return on_event


def run_local(
    sc: Any,
    params: Any,
    policy: Policy,
    settings: Settings,
    options: DrillOptions,
    box: list[Any] | None = None,
    target: str = "local",
) -> DrillJournal:
    """On the `local up` cluster if one is running, else on an ephemeral cluster.

    ``target="sim"`` runs on the deterministic simulation (virtual time, no servers).
    ``box`` receives the runner, so an interrupted caller can still save its journal.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regions.drills import DrillRunner

    box = box if box is not None else []
    err = console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=None)
        on_event = _phase_reporter(progress, task, sc.name)

        def run(backend: Any) -> DrillJournal:
            runner = DrillRunner(
                backend, sc, params, options=options, policy_path=settings.policy, on_event=on_event
            )
            box.append(runner)
            return runner.run()

        if target == "sim":
            from regions.drills.backends import SimBackend
            from regions.local.sim import simulation

            with simulation(policy, seed=options.seed or 0) as sim:
                return run(SimBackend(sim))
        with _local_backend(progress, task, policy, settings) as backend:
            return run(backend)


# --- AWS: the FIS experiment ----------------------------------------------------------


def _create_template(
    fis: Any,
    policy: Policy,
    settings: Settings,
    region: str,
    account: str,
    partition: str,
    seconds: int,
) -> str:
    """Create the regionkit FIS template (and its customer-harm alarm); its ID."""
    import time

    import boto3

    from infra.fis_template import customer_harm_alarm, experiment_template
    from infra.plan import plan_deployment

    # the stop condition: customer harm, which a replication pause does not cause
    harm = customer_harm_alarm(plan_deployment(policy, table_prefix=settings.table_prefix), region)
    boto3.client("cloudwatch", region_name=region).put_metric_alarm(**harm)
    template = experiment_template(
        policy,
        region,
        duration=f"PT{seconds}S",
        table_prefix=settings.table_prefix,
        account=account,
        partition=partition,
        stop_on="customer-harm",
    )
    tags = {**template["tags"], "regionkit:policy": policy.name}
    tags["regionkit:region"] = region
    created = fis.create_experiment_template(
        **{**template, "tags": tags, "clientToken": str(time.time_ns())}
    )
    return str(created["experimentTemplate"]["id"])


def _fis_template(
    fis: Any,
    policy: Policy,
    settings: Settings,
    region: str,
    account: str,
    partition: str,
    duration: float | None,
    create_template: bool,
) -> tuple[str, int]:
    """The deployed template and its duration; or one created, when asked; else exit 2."""
    from regions.drills.aws import find_template, template_duration

    template_id = find_template(fis, policy.name, region)
    if template_id is not None:
        seconds = template_duration(fis, template_id)
        if duration is not None and int(duration) != seconds:
            fail(
                f"the deployed FIS template for {region} pauses replication for "
                f"{seconds} s, so --duration {duration:g} would not be honoured (fix: omit "
                "--duration, or delete the template and pass --create-template)"
            )
        return template_id, seconds
    if not create_template:
        fail(
            f"no regionkit FIS template for {region} in account {account} (fix: deploy "
            "the CDK app, or pass --create-template)"
        )
    seconds = max(1, int(duration if duration is not None else 600))
    return _create_template(fis, policy, settings, region, account, partition, seconds), seconds


def _paused_tables(
    policy: Policy, settings: Settings, region: str, account: str, partition: str
) -> list[tuple[str, str]]:
    """(region, table ARN) of every replicated table the experiment pauses in ``region``."""
    from regions.drills.backends import replication_groups

    return [
        (region, f"arn:{partition}:dynamodb:{region}:{account}:table/{table}")
        for table, regions in replication_groups(policy, settings.table_prefix)
        if region in regions and len(regions) > 1
    ]


def _account(region: str, confirm_account: str | None) -> tuple[str, str]:
    """The credentials' account, refused unless --confirm-account names it; the partition."""
    import boto3

    from regions.drills.aws import require_account

    sts = boto3.client("sts", region_name=region)
    account = require_account(sts, confirm_account)
    partition = str(sts.get_caller_identity().get("Arn", "arn:aws:")).split(":")[1] or "aws"
    return account, partition


def run_aws(
    sc: Any,
    params: Any,
    policy: Policy,
    settings: Settings,
    options: DrillOptions,
    duration: float | None,
    confirm_account: str | None,
    create_template: bool,
    box: list[Any] | None = None,
) -> DrillJournal:
    """The same runner as local drills, the FIS experiment as the fault (see regions.drills.aws).

    The experiment's duration is the template's own: the deployed template (PT10M)
    unless --duration is given, which needs a template of that duration (created
    with --create-template); a --duration the deployed template would not honour
    is refused.
    """
    import dataclasses
    import time

    import boto3

    from regions.drills import DrillRunner
    from regions.drills.aws import AwsDataPlane, FisBackend, FisFault

    if sc.fis_action is None:
        fail(f"scenario {sc.name} cannot run on AWS: only replication-pause has an FIS action")
    if options.lag is not None:
        fail("--lag is for local drills: on AWS the replication lag is the real one")
    region = params.region
    account, partition = _account(region, confirm_account)
    fis = boto3.client("fis", region_name=region)
    template_id, seconds = _fis_template(
        fis, policy, settings, region, account, partition, duration, create_template
    )
    data = AwsDataPlane(policy, settings)
    fault = FisFault(
        fis,
        template_id,
        duration=float(seconds),
        ddb=data.admin,
        tables=_paused_tables(policy, settings, region, account, partition),
        now=time.time,
        sleep=time.sleep,
    )
    runner = DrillRunner(
        FisBackend(data, fault),
        sc,
        params,
        options=dataclasses.replace(options, duration=float(seconds)),
        policy_path=settings.policy,
    )
    if box is not None:
        box.append(runner)
    try:
        return runner.run()
    finally:
        data.close()
