"""The drill journal: every phase time-stamped, every figure measured.

Like chaostoolkit's journal it records each phase (plan, steady state, inject,
workload, measure, heal, convergence, verdict); unlike it, it carries the
figures an SRE must prove: RTO, RPO exposure, convergence time, conflicts and
residency violations, against the policy's targets. The journal *is* the
report (JSON, Markdown, HTML) and the drill-history entry the audit reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from residency.records import DrillSummary

__all__ = [
    "DataClassFigures",
    "DrillEvent",
    "DrillFigures",
    "DrillJournal",
    "DrillSeries",
    "Phase",
    "RegionFigures",
    "load_history",
    "save_journal",
]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Phase(_M):
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    ok: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)

    @property
    def seconds(self) -> float:
        end = self.ended_at or self.started_at
        return (end - self.started_at).total_seconds()


class DataClassFigures(_M):
    data_class: str
    kind: Literal["pinned", "global"]
    rto_seconds: float | None = Field(
        None,
        description="Fault until routed writes succeeded again (max over writer regions); "
        "None when writes never failed.",
    )
    rto_by_region: dict[str, float] = Field(default_factory=dict)
    recovered: bool = True
    no_compliant_failover: list[str] = Field(
        default_factory=list, description="Jurisdictions with one region: writes wait, by law."
    )
    writes_ok: int = 0
    writes_failed: int = 0
    failover_writes: int = 0


class RegionFigures(_M):
    region: str
    writes_ok: int = 0
    writes_failed: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    failover_writes: int = 0
    errors: dict[str, int] = Field(default_factory=dict)


class DrillFigures(_M):
    rto_seconds: float | None = None
    rto_not_applicable: str = Field(
        "", description="Why no RTO was measured (no write failed), for people to read."
    )
    rpo_exposure_count: int = Field(
        0,
        description="Acknowledged writes that landed in a faulted region and had not reached "
        "every replica when the fault hit (measured under load).",
    )
    rpo_exposure_max_age_seconds: float = 0.0
    rpo_recovered: int = Field(0, description="Exposed writes on every replica after heal.")
    rpo_lost: int = Field(0, description="Exposed writes missing from a replica after heal.")
    writes_in_flight_expected: float | None = Field(
        None,
        description="rate x writes per round x canary replication lag: how many writes the "
        "load keeps in flight, so exposure is measurable at this rate.",
    )
    convergence_seconds: float | None = None
    converged: bool = False
    failback_seconds: float | None = Field(
        None, description="failback: heal until writes for the region's users land at home."
    )
    tables_compared: int = 0
    conflicts: dict[str, int] = Field(default_factory=dict)
    conflict_resolutions: dict[str, int] = Field(default_factory=dict)
    residency_violations: int = 0
    client_errors: dict[str, int] = Field(default_factory=dict)
    steady_state_seconds: float | None = None
    writes_acknowledged: int = 0
    data_classes: list[DataClassFigures] = Field(default_factory=list)
    regions: list[RegionFigures] = Field(default_factory=list)


class DrillEvent(_M):
    t: float = Field(description="Seconds since the drill started.")
    kind: Literal[
        "load-started",
        "fault-injected",
        "breaker-open",
        "breaker-closed",
        "fault-healed",
        "backlog-drained",
        "converged",
        "load-stopped",
        "interrupted",
        "cleanup",
    ]
    region: str = ""
    detail: str = ""


class DrillSeries(_M):
    """Per-bucket counts from the start of the load; bounded by :data:`MAX_BUCKETS`.

    ``bucket_seconds`` is 1 s for drills up to MAX_BUCKETS seconds and grows with
    longer drills, so the journal's size does not grow with the drill's length.
    Keys of the dicts are ``region`` or ``region/data_class``; links are ``src>dst``.
    """

    bucket_seconds: float = 1.0
    t0: float = Field(0.0, description="Seconds since the drill started at bucket 0.")
    buckets: int = 0
    writes_ok: dict[str, list[int]] = Field(default_factory=dict)
    writes_failed: dict[str, list[int]] = Field(default_factory=dict)
    reads_ok: dict[str, list[int]] = Field(default_factory=dict)
    reads_failed: dict[str, list[int]] = Field(default_factory=dict)
    failovers: dict[str, list[int]] = Field(default_factory=dict)
    latency_p50_ms: dict[str, list[float | None]] = Field(default_factory=dict)
    latency_p99_ms: dict[str, list[float | None]] = Field(default_factory=dict)
    replication_lag_ms: dict[str, list[float | None]] = Field(default_factory=dict)


class DrillJournal(_M):
    drill_id: str
    scenario: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    target: Literal["local", "aws", "sim"]
    policy: str
    policy_sha256: str
    regions: list[str] = Field(description="The regions the fault was injected into.")
    seed: int | None = None
    started_at: datetime
    ended_at: datetime | None = None
    phases: list[Phase] = Field(default_factory=list)
    figures: DrillFigures = Field(default_factory=DrillFigures)
    targets: dict[str, float] = Field(default_factory=dict)
    verdict: Literal["pass", "fail", "error"] = "error"
    reasons: list[str] = Field(default_factory=list)
    tool_version: str = ""
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Client settings the drill's routers used."
    )
    events: list[DrillEvent] = Field(default_factory=list)
    series: DrillSeries = Field(default_factory=DrillSeries)
    cleanup: list[str] = Field(
        default_factory=list, description="What was done to remove the fault, and checked."
    )

    def summary(self) -> DrillSummary:
        return DrillSummary.model_validate(
            {
                **self.model_dump(
                    include={
                        "drill_id",
                        "scenario",
                        "policy_sha256",
                        "regions",
                        "started_at",
                        "verdict",
                    }
                ),
                "target": self.target,
                "ended_at": self.ended_at or self.started_at,
            }
        )


def save_journal(journal: DrillJournal, history_dir: Path) -> Path:
    """Append the journal to the drill history (one JSON file per drill)."""
    history_dir.mkdir(parents=True, exist_ok=True)
    stamp = journal.started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = history_dir / f"{stamp}-{journal.scenario}-{journal.drill_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(journal.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)  # atomic: the history never holds half a journal
    return path


def load_history(history_dir: Path) -> list[DrillJournal]:
    """Every journal in the history, oldest first; unreadable files are skipped."""
    out: list[DrillJournal] = []
    if not history_dir.is_dir():
        return out
    for path in sorted(history_dir.glob("*.json")):
        try:
            out.append(DrillJournal.model_validate(json.loads(path.read_text("utf-8"))))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda j: j.started_at)
