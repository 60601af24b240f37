"""Re-homing a user between jurisdictions (``move_user``), resumably.

The steps, in order; what each crash point leaves:

1. The directory entry becomes ``moving`` (compare-and-set on the version read):
   the durable move record. *Crash:* the old state plus the record; ``--resume``
   (or calling ``move_user`` again) continues.
2. Every region of the old jurisdiction is read with consistent reads; the newest
   version of each item (highest HLC stamp) is copied to the new home region,
   *keeping its stamp*, unless the new home already holds a newer one.
   *Crash:* a copy in the new home, the data still in the old one.
3. Every region of the old jurisdiction gets a ``moved`` fence (a tombstone naming
   the new home region), conditional on the item not having changed past the
   version copied. A write that slipped in makes the condition fail, and the round
   starts again from 2. *Crash:* some old regions fenced; routers that meet a
   fence follow it to the new home, where the copy is.
4. The directory entry switches to the new home with status ``verifying``.
5. Every old region is read again; when each holds only fences the entry becomes
   ``active`` and the move is ``done``. An unreachable region leaves it
   ``pending`` (the record stays; the audit and ``users move --resume`` see it).

**One move at a time, and never a stale one.** A move's *epoch* is the version
stamp of its ``moving`` record; the ``verifying`` and ``active`` records that
follow carry it. A ``move_user`` call that stalled while another process finished
its move, moved the user on, moved them back or erased them must write nothing,
and a condition alone cannot promise that: it is evaluated in the one replica the
write lands in, and a write made there later (by write time) still wins everywhere
once replication's last-writer-wins carries it. So, in layers:

* before each batch of writes, and right before each request is sent when the last
  check is older than :data:`RECHECK_S`, the move re-reads the directory at the
  user's authority replica and stops (``superseded``) unless the entry is still its
  own record; its directory writes are compare-and-set on that record;
* it never rewrites what *it* wrote (a fence or a copy with its own epoch: a late
  retry's new write time could win over a newer write another replica holds), and
  always writes again, with its epoch and a new write time, what an earlier move or
  the original write left (an old fence, the same version), so that nothing older
  still replicating into the region wins over it;
* every copy and fence carries the epoch (``rk_mv``) and is conditional on the item
  holding no later epoch and no erasure's fence; meeting one stops the whole move.

What is left is a process frozen between its last check and a request on the wire
while another process completes a move, the window every lease without a fencing
token at the storage has.

From step 3 on, no router in any process can write the user's pinned data in the
old jurisdiction, whatever its cache says: the fence is part of every write's
condition there, evaluated by DynamoDB. Pinned classes with a sort key are
fenced item by item (the items that exist), so a stale router could still
create a *new* sort-key item there until its cache expires; the audit reports it.

The directory itself (lookups, sign-up, the authority replica) is :mod:`regions.users`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from regions.codec import EPOCH_ATTR, VERSION_ATTR
from regions.directed import MoveSuperseded
from regions.directory import DirectoryEntry
from regions.ids import parse_user_id
from regions.move_record import Move, MoveOver, MoveResult
from regions.tombstones import DELETED, ERASED, MOVED, tombstone_kind
from regions.users import Users
from residency.errors import ConfigError, RegionkitError, StaleWrite, UnassignedUser
from residency.logs import get_logger

__all__ = ["MoveResult", "Moves"]

audit_log = get_logger("regionkit.audit")

MAX_ROUNDS = 5
#: Seconds after which a move re-reads the directory before its next write.
RECHECK_S = 5.0

Items = dict[tuple[Any, ...], dict[str, Any]]


class Moves:
    """Moves of one router's users (the protocol is in the module docstring)."""

    def __init__(self, users: Users) -> None:
        self.users = users
        self.policy = users.policy
        self.store = users.store
        self.writer = users.writer
        self.routes = users.routes
        self._checked: dict[str, float] = {}  # move epoch -> when _ours last confirmed it

    def _target(self, entry: DirectoryEntry, country: str | None, region: str | None) -> str:
        if region is None and country is not None:
            jid = self.users.jurisdiction_for_country(country)
            homes = self.policy.jurisdictions[jid].home_regions
            region = next((r for r in homes if self.users.health.available(r)), homes[0])
        if region is None and entry.status == "moving" and entry.moving_to:
            region = entry.moving_to  # resume the recorded move
        if region is None and entry.status in ("moving", "verifying"):
            region = entry.home_region
        if region is None:
            raise ConfigError(message="move_user needs country= or region= (or a move to resume)")
        self.policy.check_region(region)
        return region

    def move_user(
        self, user_id: str, *, country: str | None = None, region: str | None = None
    ) -> MoveResult:
        """Re-home a user, resumably (the protocol is in the module docstring)."""
        parse_user_id(user_id)
        self.users.cache.invalidate(user_id)  # a move starts from the directory, never a cache
        entry = self.users.read_authoritative(user_id)
        if entry is None:
            raise UnassignedUser(user=user_id, data_class="pinned data", op="moved")
        target = self._target(entry, country, region)
        to_j = self.policy.jurisdiction_of_region(target)
        steps: list[str] = []
        if entry.status == "moving" and entry.moving_to not in (None, target):
            raise ConfigError(
                message=f"user {user_id} has an unfinished move to {entry.moving_to}; "
                "resume it first (regionkit users move --resume)"
            )
        if entry.status == "erasing":
            raise ConfigError(
                message=f"user {user_id} is being erased; finish it (regionkit subject erase "
                "--resume) before any move"
            )
        if entry.status == "verifying" and entry.home_region != target:
            raise ConfigError(
                message=f"user {user_id} has an unfinished move to {entry.home_region}; "
                "resume it first (regionkit users move --resume)"
            )
        if entry.status == "verifying" and entry.moved_from:
            from_region = entry.moved_from
        elif entry.home_region == target and entry.status == "active":
            return MoveResult(user_id, target, target, to_j, to_j, False, ["already there"])
        else:
            from_region = entry.home_region
        from_j = self.policy.jurisdiction_of_region(from_region)
        if from_j == to_j:  # the pinned table already replicates inside the jurisdiction
            self.users.write_entry(DirectoryEntry(user_id, target, to_j), based_on=entry.version)
            return self._finish(user_id, from_region, target, from_j, to_j, False, ["directory"])
        if entry.status == "active":
            record = DirectoryEntry(
                user_id, from_region, from_j, "moving", moving_to=target, moved_from=None
            )
            epoch = self.users.write_entry(record, based_on=entry.version)
            steps.append(f"directory: moving {from_region} -> {target}")
            audit_log.info("residency.move.started", from_jurisdiction=from_j, to_jurisdiction=to_j)
        elif entry.status == "moving":
            epoch = str(entry.version)  # resuming: the record's own stamp is the epoch
        else:  # verifying
            epoch = entry.epoch or str(entry.version)
        move = Move(user_id, from_region, target, from_j, to_j, epoch)
        try:
            return self._move_data(move, steps)
        finally:
            self._checked.pop(epoch, None)

    def _move_data(self, move: Move, steps: list[str]) -> MoveResult:
        copied = False
        try:
            for _ in range(MAX_ROUNDS):
                done, any_copied = self._round(move, steps)
                copied = copied or any_copied
                if done:
                    break
            else:
                return self._pending(
                    move, copied, steps, "writes kept landing in the old jurisdiction"
                )
            if self._switch(move, "verifying"):
                steps.append(f"directory: home is {move.target} (verifying)")
            self.users.cache.put(move.entry("verifying"))
            left = self._unfenced(move.user_id, move.from_j)
            if left:
                reason = f"personal data still readable in {', '.join(left)}"
                return self._pending(move, copied, steps, reason)
            if self._switch(move, "active"):
                steps.append(f"directory: home is {move.target}")
        except MoveOver as over:
            return self._superseded(move, copied, steps, over.reason)
        except Exception as exc:
            if not isinstance(exc, (RegionkitError, *_botocore_errors())):
                raise
            reason = f"{type(exc).__name__} in {getattr(exc, 'regionkit_region', '') or 'a region'}"
            return self._pending(move, copied, steps, reason)
        return self._finish(
            move.user_id, move.from_region, move.target, move.from_j, move.to_j, copied, steps
        )

    _NEXT: ClassVar[dict[str, tuple[str, ...]]] = {
        "verifying": ("moving", "verifying"),
        "active": ("verifying", "active"),
    }

    def _fresh(self, move: Move) -> None:
        """Right before each of the move's writes is sent (every attempt): if the last
        directory check is older than :data:`RECHECK_S` (a long pause: GC, a stopped VM,
        a slow network), check again.
        A single-replica condition cannot see what another replica has not yet received,
        so this check, at the user's authority replica, is what keeps a move that slept
        through another process's actions from writing at all."""
        if self.store.wall() - self._checked.get(move.epoch, float("-inf")) > RECHECK_S:
            self._ours(move, ("moving", "verifying"))

    def _switch(self, move: Move, status: str) -> bool:
        """Advance the directory to this move's ``status`` record, compare-and-set on the
        move's own record; False if a resumer of the same move already did."""
        current = self._ours(move, self._NEXT[status])
        if current.status == status:
            return False
        try:
            self.users.write_entry(move.entry(status), based_on=current.version)
        except StaleWrite:  # changed since the read: fine only if this move advanced it
            self._ours(move, (status,))
            return False
        return True

    def _ours(self, move: Move, states: tuple[str, ...]) -> DirectoryEntry:
        """The directory entry, if it is still this move's record in one of ``states``
        (read at the user's authority replica); else the move is over (``MoveOver``).

        Checked before every batch of the move's writes, so a move that stalled while
        another process acted on the user stops at its next step; the directory writes
        themselves are compare-and-set on the record read here."""
        now = self.store.wall()
        current = self.users.read_authoritative(move.user_id)
        if current is None:
            raise MoveOver("the user was erased meanwhile")
        mine = (
            current.status == "moving"
            and current.moving_to == move.target
            and current.version == move.epoch
        ) or (
            current.status in ("verifying", "active")
            and current.home_region == move.target
            and current.moved_from == move.from_region
            and (current.epoch or current.version) == move.epoch
        )
        if mine and current.status in states:
            self._checked[move.epoch] = now
            return current
        if current.status == "erasing":
            raise MoveOver("the user is being erased")
        raise MoveOver("another process finished, replaced or undid this move")

    def _round(self, move: Move, steps: list[str]) -> tuple[bool, bool]:
        """Copy the newest of every item to the target and fence the old regions.

        Returns (every fence held, anything copied).
        """
        old_regions = self.policy.jurisdictions[move.from_j].regions
        fenced, copied = True, False
        for dc in self.users.pinned:
            self._ours(move, ("moving", "verifying"))
            newest = self._newest(dc, move, old_regions)
            copied = self._copy(dc, newest, move, steps) or copied
            self._ours(move, ("moving", "verifying"))
            fenced = self._fence(dc, newest, old_regions, move) and fenced
            steps.append(f"{dc}: fenced in {', '.join(old_regions)}" if fenced else f"{dc}: retry")
        return fenced, copied

    def _newest(self, dc: str, move: Move, old_regions: list[str]) -> Items:
        """The newest version of each of the user's items in the old regions; keys seen
        only as fences, to fence again (and the bare key of a class with no sort key)."""
        seen = {r: self.store.read_at(dc, move.user_id, r, move.from_j) for r in old_regions}
        newest: Items = {}
        keys: Items = {}
        for items in seen.values():
            for item in items:
                if tombstone_kind(item) == ERASED:
                    raise MoveOver("the user was erased meanwhile")
                if str(item.get(EPOCH_ATTR, "")) > move.epoch:
                    raise MoveOver("a later move wrote the user's data")
                k = self._keytuple(dc, item)
                keys.setdefault(k, item)
                if tombstone_kind(item) == MOVED:
                    continue  # a fence (ours, or an old move's) is never the data to keep
                if str(item.get(VERSION_ATTR, "")) > str(newest.get(k, {}).get(VERSION_ATTR, "")):
                    newest[k] = item
        for k, item in keys.items():  # keys seen only as fences: fence them again
            newest.setdefault(k, {f: v for f, v in item.items() if not f.startswith("rk_")})
        if self.store.sk[dc] is None:
            newest.setdefault((move.user_id,), {self.store.pk[dc]: move.user_id})
        return newest

    def _copy(self, dc: str, newest: Items, move: Move, steps: list[str]) -> bool:
        """Copy data, and versioned deletes (a stale write must meet them in the new home
        too), keeping their stamps; True if any data was copied."""
        copied = False
        movable = [i for i in newest.values() if tombstone_kind(i) in (None, DELETED)]
        for item in movable:
            if VERSION_ATTR not in item:
                continue
            route = self.routes.at(dc, move.target, move.to_j, "write")
            try:
                written = self.writer.copy_at(
                    route, item, epoch=move.epoch, before_send=lambda: self._fresh(move)
                )
            except MoveSuperseded as exc:
                raise MoveOver(
                    f"a later move or an erasure holds the data in {exc.region}"
                ) from None
            if written and not tombstone_kind(item):
                copied = True
                steps.append(f"{dc}: copied to {move.target}")
        return copied

    def _fence(self, dc: str, newest: Items, old_regions: list[str], move: Move) -> bool:
        """A ``moved`` fence on every item in every old region; True if every one held."""
        fenced = True
        for r in old_regions:
            for item in newest.values():
                key = self.store.key_of(dc, item)
                try:
                    ok = self.writer.fence_at(
                        self.routes.at(dc, r, move.from_j, "write"),
                        key,
                        kind=MOVED,
                        newest=str(item.get(VERSION_ATTR, "")),
                        to_region=move.target,
                        epoch=move.epoch,
                        before_send=lambda: self._fresh(move),
                    )
                except MoveSuperseded as exc:  # stop at once: fence no other region
                    where = exc.region
                    raise MoveOver(
                        f"a later move or an erasure wrote the data in {where}"
                    ) from None
                fenced = fenced and ok
        return fenced

    def _keytuple(self, dc: str, item: dict[str, Any]) -> tuple[Any, ...]:
        sk = self.store.sk[dc]
        pk = item[self.store.pk[dc]]
        return (pk,) if sk is None else (pk, item.get(sk))

    def _unfenced(self, user_id: str, from_j: str) -> list[str]:
        """Old regions where a consistent read still finds live pinned data."""
        left = []
        for r in self.policy.jurisdictions[from_j].regions:
            for dc in self.users.pinned:
                items = self.store.read_at(dc, user_id, r, from_j)
                if any(not tombstone_kind(i) for i in items):
                    left.append(r)
                    break
        return left

    def _pending(self, move: Move, copied: bool, steps: list[str], reason: str) -> MoveResult:
        return self._stop(move, copied, steps, "pending", reason)

    def _superseded(self, move: Move, copied: bool, steps: list[str], reason: str) -> MoveResult:
        steps.append(f"stopped: {reason}")
        return self._stop(move, copied, steps, "superseded", reason)

    def _stop(
        self,
        move: Move,
        copied: bool,
        steps: list[str],
        status: Literal["pending", "superseded"],
        reason: str,
    ) -> MoveResult:
        self.users.cache.invalidate(move.user_id)
        audit_log.warning(
            f"residency.move.{status}", from_jurisdiction=move.from_j, to_jurisdiction=move.to_j
        )
        return move.result(copied, steps, status, reason)

    def _finish(
        self,
        user_id: str,
        from_region: str,
        target: str,
        from_j: str,
        to_j: str,
        copied: bool,
        steps: list[str],
    ) -> MoveResult:
        self.users.cache.put(
            DirectoryEntry(user_id, target, to_j, "active", moved_from=from_region)
        )
        audit_log.info("residency.move.completed", from_jurisdiction=from_j, to_jurisdiction=to_j)
        return MoveResult(user_id, from_region, target, from_j, to_j, copied, steps)


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)
