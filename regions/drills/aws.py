"""Drills against real AWS accounts: an FIS experiment that pauses replication.

On AWS, regionkit does not fake faults: it runs the FIS action
``aws:dynamodb:global-table-pause-replication`` from the experiment template
the CDK app deploys per region (or creates the same template if asked), and
records the experiment's life cycle in a drill journal.

Safety: :func:`require_account` refuses to touch an account unless the caller
names it explicitly (``--confirm-account``) and it matches the credentials' own
account. The template dict comes from the caller (the CLI builds it with
``infra.fis_template``, which imports no ``aws_cdk``), so this module stays
below ``infra`` in the layering.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from regions.drills.journal import DrillJournal, Phase
from residency.__about__ import __version__
from residency.errors import BackendError, ConfigError

__all__ = ["find_template", "require_account", "run_fis_drill"]

TERMINAL = {"completed", "stopped", "failed", "cancelled"}


def require_account(sts: Any, confirm: str | None) -> str:
    """The caller's account ID, if and only if ``confirm`` names it."""
    actual = str(sts.get_caller_identity()["Account"])
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
    return actual


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


def run_fis_drill(
    fis: Any,
    template: dict[str, Any],
    *,
    policy_name: str,
    policy_sha256: str,
    region: str,
    account: str,
    create_template: bool = False,
    timeout: float = 3600.0,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> DrillJournal:
    """Start the pause-replication experiment in ``region`` and follow it to its end."""

    def emit(name: str, detail: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(name, detail)

    def now() -> datetime:
        return datetime.now(UTC)

    j = DrillJournal(
        drill_id=uuid.uuid4().hex[:12],
        scenario="replication-pause",
        description="FIS aws:dynamodb:global-table-pause-replication",
        parameters={"region": region, "account": account},
        target="aws",
        policy=policy_name,
        policy_sha256=policy_sha256,
        regions=[region],
        started_at=now(),
        tool_version=__version__,
    )
    plan = Phase(name="plan", started_at=now())
    j.phases.append(plan)
    template_id = find_template(fis, policy_name, region)
    if template_id is None:
        if not create_template:
            raise ConfigError(
                message=(
                    f"no regionkit FIS template for {region} in account {account}; deploy the CDK "
                    "app (regionkit infra synth; cdk deploy) or pass --create-template"
                )
            )
        tags = dict(template.get("tags", {}))
        tags.update({"regionkit:policy": policy_name, "regionkit:region": region})
        created = fis.create_experiment_template(
            **{**template, "tags": tags, "clientToken": uuid.uuid4().hex}
        )
        template_id = str(created["experimentTemplate"]["id"])
    plan.ended_at = now()
    plan.detail = {"experiment_template": template_id}
    inject = Phase(name="inject", started_at=now())
    j.phases.append(inject)
    emit("phase", {"name": "inject"})
    try:
        exp = fis.start_experiment(experimentTemplateId=template_id, clientToken=uuid.uuid4().hex)[
            "experiment"
        ]
    except Exception as exc:
        raise BackendError(
            operation="fis:StartExperiment", region=region, code=type(exc).__name__, reason=str(exc)
        ) from exc
    exp_id = str(exp["id"])
    inject.ended_at = now()
    inject.detail = {"experiment": exp_id}
    watch = Phase(name="workload", started_at=now())
    j.phases.append(watch)
    deadline = time.monotonic() + timeout
    state = str(exp.get("state", {}).get("status", "pending"))
    while state not in TERMINAL and time.monotonic() < deadline:
        sleep(poll)
        state = str(fis.get_experiment(id=exp_id)["experiment"]["state"]["status"])
        emit("progress", {"phase": "workload", "state": state})
    if state not in TERMINAL:  # our own timeout: never leave an experiment running
        fis.stop_experiment(id=exp_id)
        state = "stopped"
    watch.ended_at = now()
    watch.detail = {"final_state": state}
    heal = Phase(
        name="heal",
        started_at=now(),
        ended_at=now(),
        detail={"how": "FIS removes the deny statement; replication resumes"},
    )
    j.phases.append(heal)
    j.verdict = "pass" if state == "completed" else "fail"
    if state != "completed":
        j.reasons.append(f"experiment {exp_id} ended {state}")
    j.ended_at = now()
    return j
