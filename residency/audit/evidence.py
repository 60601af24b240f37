"""The transfer-evidence section: per jurisdiction, where its personal data is.

This is the page an auditor asks for first. Built from what the audit already
collected, with no extra reads:

* **found**: for each pinned table (and each unlisted copy of one) in each region,
  how many items belong to the jurisdiction's subjects (the directory's home,
  else the home hint in the user ID), and whether that region is inside;
* **regions_without**: regions whose pinned tables were all read in full and hold
  none of its subjects' items;
* **regions_unknown**: regions that could not be read, or were only sampled:
  nothing is claimed about them;
* **last_inside_drill**: the last passing failover drill whose regions all lie
  inside the jurisdiction (the proof that failover keeps the data inside).

Empty when the data checks did not run (nothing was read, nothing is claimed).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC

from residency.audit.context import AuditContext
from residency.audit.model import DataFound, DrillEvidence, JurisdictionEvidence, iso
from residency.audit.records import drills_of

__all__ = ["transfer_evidence"]


def transfer_evidence(ctx: AuditContext) -> list[JurisdictionEvidence]:
    from residency.audit.datascan import DataScan

    scan = ctx.collected("data")
    if not isinstance(scan, DataScan) or not scan.placement_scanned:
        return []
    placement = scan.pinned_scans()
    per_region: dict[str, list[bool]] = defaultdict(list)  # region -> completeness of scans
    for ts in placement:
        per_region[ts.region].append(ts.complete)
    unknown_regions = {r for r, flags in per_region.items() if not all(flags)}
    unknown_regions |= {r for r in ctx.all_regions if ctx.down(r)}
    drills = drills_of(ctx) if ctx.options.drill_history else None
    out: list[JurisdictionEvidence] = []
    for jid, j in sorted(ctx.policy.jurisdictions.items()):
        found: list[DataFound] = []
        holding: set[str] = set()
        for ts in sorted(placement, key=lambda t: (t.region, t.plan.table)):
            n = ts.by_jurisdiction.get(jid, 0)
            if n:
                holding.add(ts.region)
                found.append(
                    DataFound(
                        region=ts.region,
                        table=ts.plan.table,
                        data_class=ts.plan.data_class,
                        items=n,
                        inside=ctx.jurisdiction(ts.region) == jid,
                        complete=ts.complete,
                    )
                )
        without = sorted(r for r in per_region if r not in holding and r not in unknown_regions)
        last: DrillEvidence | None = None
        if drills is not None:
            inside = [
                (file, d)
                for file, d in drills.drills
                if d.verdict == "pass" and d.regions and set(d.regions) <= set(j.regions)
            ]
            if inside:
                file, d = max(inside, key=lambda fd: fd[1].ended_at)
                last = DrillEvidence(
                    drill_id=d.drill_id,
                    scenario=d.scenario,
                    ended_at=iso(d.ended_at.astimezone(UTC)),
                    regions=list(d.regions),
                    journal=file,
                )
        out.append(
            JurisdictionEvidence(
                jurisdiction=jid,
                law=j.law,
                regions=list(j.regions),
                found=found,
                regions_without=without,
                regions_unknown=sorted(unknown_regions),
                outside=sum(f.items for f in found if not f.inside),
                last_inside_drill=last,
            )
        )
    return out
