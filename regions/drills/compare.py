"""Two drill journals side by side: the same drill run every week shows its drift.

``regionkit drill compare A.json B.json`` prints each figure of A and B with the
change, and exits 1 when a figure of B regressed beyond the threshold. Every
figure here is better lower. A change counts as a regression only when it is
both relative (``threshold``, 20 % by default) and absolute (a floor per unit,
so 0.01 s against 0.02 s is noise, not a regression).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regions.drills.journal import DrillJournal

__all__ = ["FLOORS", "Change", "Comparison", "compare", "figures_of"]

FLOORS = {"s": 0.1, "writes": 1.0, "%": 1.0, "ms": 5.0, "": 1.0}

# key, label, unit
FIGURES: list[tuple[str, str, str]] = [
    ("rto", "RTO", "s"),
    ("rpo_age", "RPO exposure, oldest write", "s"),
    ("rpo_writes", "RPO exposure, writes", "writes"),
    ("rpo_lost", "writes lost", "writes"),
    ("convergence", "convergence after heal", "s"),
    ("write_failures", "writes failed", "%"),
    ("p99_ms", "p99 write latency, worst second", "ms"),
    ("conflicts", "conflicts logged", ""),
    ("violations", "residency violations", ""),
]


def figures_of(j: DrillJournal) -> dict[str, float | None]:
    """The comparable figures of one journal; None where a figure was not measured."""
    f = j.figures
    attempted = sum(r.writes_ok + r.writes_failed for r in f.regions)
    failed = sum(r.writes_failed for r in f.regions)
    p99 = [v for vs in j.series.latency_p99_ms.values() for v in vs if v is not None]
    return {
        # no RTO because no write failed is the best case: 0
        "rto": f.rto_seconds if f.rto_seconds is not None else 0.0,
        "rpo_age": f.rpo_exposure_max_age_seconds,
        "rpo_writes": float(f.rpo_exposure_count),
        "rpo_lost": float(f.rpo_lost),
        "convergence": f.convergence_seconds if f.converged else None,
        "write_failures": 100.0 * failed / attempted if attempted else None,
        "p99_ms": max(p99) if p99 else None,
        "conflicts": float(sum(f.conflicts.values())),
        "violations": float(f.residency_violations),
    }


@dataclass(frozen=True)
class Change:
    label: str
    unit: str
    a: float | None
    b: float | None
    regressed: bool
    note: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass
class Comparison:
    a: DrillJournal
    b: DrillJournal
    threshold: float
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]


def _worse(a: float, b: float, unit: str, threshold: float) -> bool:
    floor = FLOORS.get(unit, 1.0)
    return b - a > floor and b > a * (1 + threshold)


def compare(a: DrillJournal, b: DrillJournal, *, threshold: float = 0.2) -> Comparison:
    """Compare B against A (the baseline)."""
    out = Comparison(a, b, threshold)
    if a.scenario != b.scenario or a.regions != b.regions:
        out.warnings.append(
            f"different drills: {a.scenario} on {', '.join(a.regions)} against "
            f"{b.scenario} on {', '.join(b.regions)}"
        )
    if a.policy_sha256 != b.policy_sha256:
        out.warnings.append("the policy file changed between the two drills")
    out.changes.append(
        Change(
            "verdict",
            "",
            None,
            None,
            a.verdict == "pass" and b.verdict != "pass",
            f"{a.verdict} -> {b.verdict}",
        )
    )
    fa, fb = figures_of(a), figures_of(b)
    for key, label, unit in FIGURES:
        va, vb = fa[key], fb[key]
        if va is None and vb is None:
            out.changes.append(Change(label, unit, va, vb, False, "not measured in either"))
        elif vb is None:
            note = "not converged" if key == "convergence" else "not measured in B"
            out.changes.append(Change(label, unit, va, vb, key == "convergence", note))
        elif va is None:
            out.changes.append(Change(label, unit, va, vb, False, "not measured in A"))
        else:
            out.changes.append(Change(label, unit, va, vb, _worse(va, vb, unit, threshold)))
    return out
