"""Data-subject requests: where a user's data is (locate), and a copy of it (export).

**Locate** lists every item of one subject in every region and data class:
region, table, key pseudonym, version and state. It never reads a value.

* pinned classes (keyed by the subject): a key-only, consistent query of the
  subject's partition in *every* region that has the table, inside and outside
  the subject's jurisdiction. Outside it, this is the only cross-border read
  regionkit makes without the residency guard, and it is why the projection is
  keys and regionkit's own attributes only: no personal data crosses, and a copy
  that should not exist (a leak) is still found.
* global classes naming a ``subject_attribute``: the ``by-subject`` index in every
  replica (its projection: keys, version, tombstone kind). With ``scan=True``
  every replica is scanned instead (slow; for classes or tables without the index).
* the directory entry, in every replica.

**Export** returns the subject's own data (GDPR Art. 15/20), read through the
router, so pinned data is read inside the subject's jurisdiction. The export is
itself a copy of personal data: handing it to a process in another jurisdiction is a
transfer, so :meth:`Subjects.export` refuses unless the router's region is inside the
subject's jurisdiction or the caller names the transfer's legal basis (recorded in
the export); ``regionkit subject export --transfer-basis`` passes it on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from regions.codec import RESERVED, VERSION_ATTR, from_ddb, to_ddb_value
from regions.routing import Route
from regions.tombstones import DEL_ATTR, tombstone_kind
from regions.users import Users
from regions.versioned import VersionedStore, directed
from residency.errors import ResidencyViolation, UnassignedUser
from residency.policy import GlobalDataClass, PinnedDataClass, Policy
from residency.tables import SUBJECT_INDEX

__all__ = ["Found", "Location", "Subjects"]

State = Literal["live", "deleted", "moved", "erased"]


@dataclass(frozen=True)
class Found:
    """One item of the subject in one replica. ``key`` is a keyed pseudonym."""

    data_class: str
    region: str
    table: str
    key: str
    version: str
    state: State
    raw_key: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def public(self) -> dict[str, str]:
        """What reports show (never ``raw_key``)."""
        return {
            "data_class": self.data_class,
            "region": self.region,
            "table": self.table,
            "key": self.key,
            "version": self.version,
            "state": self.state,
        }


@dataclass(frozen=True)
class Location:
    user: str  # a keyed pseudonym of the user ID
    method: Literal["index", "scan"]
    items: list[Found]
    unreadable: list[str]  # regions that did not answer: "not found" there means unknown
    requests: dict[str, int]  # requests sent per region

    def live(self) -> list[Found]:
        return [f for f in self.items if f.state == "live"]


class Subjects:
    """Locate and export for one router's store and directory."""

    def __init__(self, policy: Policy, store: VersionedStore, users: Users) -> None:
        self.policy = policy
        self.store = store
        self.users = users

    # --- locate ---

    def locate(self, user_id: str, *, scan: bool = False) -> Location:
        from regions.ids import parse_user_id

        parse_user_id(user_id)
        found: list[Found] = []
        unreadable: set[str] = set()
        requests: Counter[str] = Counter()
        for name, dc, region in self._placements():
            try:
                found += self._probe(name, dc, region, user_id, scan, requests)
            except Exception as exc:
                if not _is_reach_error(exc):
                    raise
                unreadable.add(region)
        return Location(
            user=self.store.pseudonymize(user_id, scope="subject"),
            method="scan" if scan else "index",
            items=found,
            unreadable=sorted(unreadable),
            requests=dict(requests),
        )

    def _placements(self) -> Iterator[tuple[str, PinnedDataClass | GlobalDataClass, str]]:
        for name, dc in self.policy.data_classes.items():
            if isinstance(dc, PinnedDataClass):
                for region in self.policy.regions:
                    yield name, dc, region
            elif dc.subject_attribute or name == self.users.dir_class:
                for region in dc.replicas:
                    yield name, dc, region

    def _probe(
        self,
        name: str,
        dc: PinnedDataClass | GlobalDataClass,
        region: str,
        user_id: str,
        scan: bool,
        requests: Counter[str],
    ) -> list[Found]:
        table = self.store.routes.tables[name]
        route = Route(region, table, "data-subject request (keys only)", False, name)
        keys = [dc.partition_key] + ([dc.sort_key] if dc.sort_key else [])
        names = {f"#k{i}": k for i, k in enumerate(keys)} | {"#v": VERSION_ATTR, "#d": DEL_ATTR}
        projection = ", ".join(names)
        if isinstance(dc, PinnedDataClass) or name == self.users.dir_class:
            req: dict[str, Any] = {
                "KeyConditionExpression": "#k0 = :s",
                "ConsistentRead": True,
            }
            op = "query"
        elif scan:
            names["#s"] = dc.subject_attribute or ""
            req = {"FilterExpression": "#s = :s"}
            op = "scan"
        else:
            names["#s"] = dc.subject_attribute or ""
            req = {"IndexName": SUBJECT_INDEX, "KeyConditionExpression": "#s = :s"}
            op = "query"
        req |= {
            "TableName": table,
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {":s": to_ddb_value(user_id)},
        }

        def call(r: Route, client: Any) -> list[dict[str, Any]]:
            # A throttled attempt is sent again from the start: the paging is this
            # attempt's own, never a cursor left behind by the one before.
            out: list[dict[str, Any]] = []
            send = getattr(client, op)
            page_req = dict(req)
            while True:
                requests[r.region] += 1
                page = send(**page_req)
                out += page.get("Items", [])
                if not page.get("LastEvaluatedKey"):
                    return out
                page_req["ExclusiveStartKey"] = page["LastEvaluatedKey"]

        items = [from_ddb(i) or {} for i in self.store.transport.call_at(route, call)]
        return [self._found(name, region, table, keys, i) for i in items]

    def _found(
        self, name: str, region: str, table: str, keys: list[str], item: dict[str, Any]
    ) -> Found:
        raw_key = {k: item[k] for k in keys if k in item}
        return Found(
            data_class=name,
            region=region,
            table=table,
            key=self.store.named(name, raw_key),
            version=str(item.get(VERSION_ATTR, "")),
            state=tombstone_kind(item) or "live",  # type: ignore[arg-type]
            raw_key=raw_key,
        )

    # --- export ---

    def export(self, user_id: str, *, transfer_basis: str | None = None) -> dict[str, Any]:
        """The subject's own data, read through the router (pinned: inside the jurisdiction).

        The copy is returned to this process, so it is refused unless the router's own
        region (where this process runs) is in the subject's jurisdiction, or the caller
        names the transfer's legal basis, which the export records.
        """
        # The authority's consistent answer: not a cached entry, nor a guess from the ID,
        # decides where the subject's data may go.
        entry = self.users.read_authoritative(user_id)
        if entry is None:
            raise UnassignedUser(user=user_id, data_class="pinned data", op="read")
        here = self.store.region
        inside = here is not None and self.policy.jurisdiction_of_region(here) == entry.jurisdiction
        if not inside and not (transfer_basis or "").strip():
            raise ResidencyViolation(
                op="export",
                data_class="(every class holding the subject's data)",
                jurisdiction=entry.jurisdiction,
                region=here or "(this router declares no region)",
                allowed=", ".join(self.policy.jurisdictions[entry.jurisdiction].regions),
                reason="an export is a copy of personal data handed to this process: run it "
                "from inside the jurisdiction, or name the transfer's legal basis "
                "(transfer_basis; the CLI's --transfer-basis)",
            )
        data: dict[str, list[dict[str, Any]]] = {}
        for name, dc in self.policy.data_classes.items():
            if isinstance(dc, PinnedDataClass):
                items = self.store.query(name, user_id, user_id, limit=None, consistent=True)
            elif dc.subject_attribute:
                items = self._global_items(name, dc, user_id)
            else:
                continue
            data[name] = [{k: v for k, v in i.items() if k not in RESERVED} for i in items]
        return {
            "subject": user_id,
            "jurisdiction": entry.jurisdiction,
            "home_region": entry.home_region,
            "exported_in": here,
            "transfer_basis": transfer_basis if not inside else None,
            "data": data,
        }

    def _global_items(self, name: str, dc: GlobalDataClass, user_id: str) -> list[dict[str, Any]]:
        """The subject's live items of a global class: every replica's index is read (a
        post not yet replicated to the nearest replica is the subject's all the same), and
        each item is read where its newest version is, and kept only if it still names
        the subject (it may have been rewritten since the index answered)."""
        newest: dict[str, Found] = {}
        for region in dc.replicas:
            for f in self._probe(name, dc, region, user_id, False, Counter()):
                held = newest.get(f.key)
                if held is None or f.version > held.version:
                    newest[f.key] = f
        table = self.store.routes.tables[name]
        out = []
        for f in newest.values():
            if f.state != "live":
                continue
            route = Route(f.region, table, "data-subject export", False, name)
            item = self.store.get(name, f.raw_key, None, True, decide=directed(route))
            if item is not None and item.get(dc.subject_attribute or "") == user_id:
                out.append(item)
        return out


def _is_reach_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    from residency.errors import RegionkitError

    return isinstance(exc, (BotoCoreError, ClientError, RegionkitError))
