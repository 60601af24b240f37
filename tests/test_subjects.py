"""Data-subject requests: locate, export and erase a user everywhere (deterministic cluster).

Ground truth is read with raw boto3 scans of every region (``Simulation.items``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regions.erasure import Eraser
from regions.ids import mint_user_id
from regions.local.sim import Simulation, simulation
from regions.router import RegionRouter
from residency.errors import ResidencyViolation, StaleWrite, UnassignedUser, UnknownSubject
from residency.policy import load_policy

EU1, EU2, IN1, IN2, US, US2, BR = (
    "eu-central-1",
    "eu-west-1",
    "ap-south-1",
    "ap-south-2",
    "us-east-1",
    "us-west-2",
    "sa-east-1",
)
SECRET = {"email": "ravi.secret@example.in", "phone": "+919812345678"}


@pytest.fixture(scope="module")
def sim(example_policy_path: Any) -> Iterator[Simulation]:
    with simulation(load_policy(example_policy_path), seed=5, detect=False) as s:
        yield s


def sign_up(router: RegionRouter, country: str) -> str:
    uid = router.new_user_id(country=country)
    router.assign_home(uid, country=country)
    return uid


def holders(sim: Simulation, table: str, key: str) -> dict[str, str]:
    """Region → state ('live' or the tombstone kind) of one item, by raw scans."""
    out = {}
    for r in sim.policy.regions:
        item = sim.items(r, table).get(key)
        if item is not None:
            out[r] = str(item.get("rk_del", "live"))
    return out


def posts_everywhere(sim: Simulation, uid: str) -> list[str]:
    keys = []
    for i, region in enumerate(sim.policy.regions):
        key = f"post-{uid[-6:]}-{i}"
        sim.routers[region].put("content", {"pk": key, "author_id": uid, "body": "hello"})
        keys.append(key)
    sim.settle()
    return keys


def test_locate_finds_every_item_by_index_and_shows_no_value(sim: Simulation) -> None:
    router = sim.routers[IN1]
    uid = sign_up(router, "IN")
    router.put("profile", {"pk": uid, **SECRET})
    posts = posts_everywhere(sim, uid)
    location = router.locate_subject(uid)
    live = location.live()
    by_class = {(f.data_class, f.region) for f in live}
    assert ("profile", IN1) in by_class and ("profile", IN2) in by_class
    assert {r for c, r in by_class if c == "content"} == set(sim.policy.regions)
    assert sum(1 for f in live if f.data_class == "content") == len(posts) * 7
    assert ("directory", US) in by_class
    text = json.dumps([f.public() for f in location.items])
    assert uid not in text and SECRET["email"] not in text and "post-" not in text
    assert location.method == "index" and not location.unreadable
    scanned = router.locate_subject(uid, scan=True)
    assert {(f.data_class, f.region, f.key) for f in scanned.live()} == {
        (f.data_class, f.region, f.key) for f in live
    }


def test_export_reads_the_subjects_own_data(sim: Simulation) -> None:
    router = sim.routers[EU1]
    uid = sign_up(router, "DE")
    router.put("profile", {"pk": uid, **SECRET})
    router.put("content", {"pk": f"export-{uid}", "author_id": uid, "body": "mine"})
    sim.settle()
    out = router.export_subject(uid)
    assert out["jurisdiction"] == "EU"
    assert out["data"]["profile"] == [{"pk": uid, **SECRET}]
    assert out["data"]["content"] == [{"pk": f"export-{uid}", "author_id": uid, "body": "mine"}]


def test_an_export_outside_the_jurisdiction_needs_a_transfer_basis(sim: Simulation) -> None:
    """The export is handed to the calling process: a router in another jurisdiction (or
    in no declared region) gets it only by naming the transfer's legal basis."""
    uid = sign_up(sim.routers[EU1], "DE")
    sim.routers[EU1].put("profile", {"pk": uid, **SECRET})
    sim.settle()
    us = sim.routers[US]
    for basis in (None, "", "   "):
        with pytest.raises(ResidencyViolation) as info:
            us.export_subject(uid, transfer_basis=basis)
        assert info.value.jurisdiction == "EU" and info.value.region == US  # type: ignore[attr-defined]
        assert "ravi" not in str(info.value)
    out = us.export_subject(uid, transfer_basis="SCCs, art. 46(2)(c) GDPR")
    assert (out["exported_in"], out["transfer_basis"]) == (US, "SCCs, art. 46(2)(c) GDPR")
    assert out["data"]["profile"] == [{"pk": uid, **SECRET}]  # read inside the EU all the same
    inside = sim.routers[EU2].export_subject(uid)
    assert (inside["exported_in"], inside["transfer_basis"]) == (EU2, None)


def test_export_reads_every_replica_and_only_the_subjects_items(sim: Simulation) -> None:
    """A post still on its way to the exporter's nearest replica is exported, and a post
    rewritten under another author is not (review findings: one replica was read, and
    each item was re-read without checking whose it still was)."""
    router = sim.routers[EU1]
    uid, other = sign_up(router, "DE"), sign_up(router, "DE")
    sim.settle()
    sim.faults.pause(US, EU1)
    sim.routers[US].put("content", {"pk": f"far-{uid}", "author_id": uid, "body": "from afar"})
    sim.routers[EU1].put("content", {"pk": f"mine-{uid}", "author_id": uid, "body": "mine"})
    sim.step(0.5)
    assert holders(sim, "content", f"far-{uid}").get(EU1) is None  # not there yet
    out = router.export_subject(uid)
    assert sorted(i["pk"] for i in out["data"]["content"]) == [f"far-{uid}", f"mine-{uid}"]
    sim.faults.resume(US, EU1)
    sim.settle()

    exporting = router.subjects
    probe = exporting._probe

    def rewritten_after_the_index_answered(*args: Any, **kwargs: Any) -> Any:
        found = probe(*args, **kwargs)
        router.put("content", {"pk": f"mine-{uid}", "author_id": other, "body": "theirs"})
        sim.settle()
        return found

    exporting._probe = rewritten_after_the_index_answered  # type: ignore[method-assign]
    try:
        out = router.export_subject(uid)
    finally:
        del exporting._probe
    assert [i["pk"] for i in out["data"]["content"]] == [f"far-{uid}"]


def test_erase_removes_the_subject_everywhere_and_keeps_a_receipt(sim: Simulation) -> None:
    router = sim.routers[US]
    uid = sign_up(router, "US")
    router.put("profile", {"pk": uid, **SECRET})
    posts = posts_everywhere(sim, uid)
    result = router.erase_subject(uid)
    assert result.status == "done", result.reason
    assert holders(sim, "profiles", uid) == {US: "erased", US2: "erased"}
    for key in posts:
        assert set(holders(sim, "content", key).values()) == {"erased"}
    assert holders(sim, "directory", uid)[US] == "erased"
    with pytest.raises(UnassignedUser):
        router.put("profile", {"pk": uid, **SECRET})
    with pytest.raises(StaleWrite):  # a stale process writing a post back is refused
        sim.routers[EU1].put("content", {"pk": posts[0], "author_id": uid, "body": "again"})
    receipt = result.receipt()
    text = json.dumps(receipt)
    assert uid not in text and SECRET["email"] not in text and "post-" not in text
    assert receipt["erased"][f"{US}/profiles"]["count"] == 1
    assert sum(v["count"] for k, v in receipt["erased"].items() if k.endswith("/content")) == 49
    assert {w["what"] for w in receipt["not_erased_at_once"]} >= {
        "point-in-time-recovery backups",
        "DynamoDB stream records",
    }
    again = router.erase_subject(uid)  # idempotent
    assert again.status == "done"


def test_an_erase_during_a_replication_pause_stays_erased(sim: Simulation) -> None:
    eu = sim.routers[EU1]
    uid = sign_up(eu, "DE")
    eu.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    sim.faults.pause(EU1, EU2)
    eu.update("profile", {"pk": uid}, {"phone": "+49 stale"})  # stuck on the paused link
    sim.step(0.01)
    assert sim.routers[US].erase_subject(uid).status == "done"
    sim.faults.resume(EU1, EU2)
    sim.settle()  # the stale update arrives after the fences
    assert holders(sim, "profiles", uid) == {EU1: "erased", EU2: "erased"}


def test_an_erase_during_an_outage_is_pending_then_done_on_resume(sim: Simulation) -> None:
    router = sim.routers[IN1]
    uid = sign_up(router, "IN")
    router.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    sim.outage(IN2)
    try:
        result = router.erase_subject(uid)
        assert result.status == "pending" and IN2 in result.reason
        assert [e.user_id for e in router.pending_erasures()] == [uid]
    finally:
        sim.restore(IN2)
    done = sim.routers[US].erase_subject(uid)
    assert done.status == "done", done.reason
    assert holders(sim, "profiles", uid) == {IN1: "erased", IN2: "erased"}
    assert router.pending_erasures() == []


def test_erasing_an_id_nobody_has_is_refused_and_writes_nothing(sim: Simulation) -> None:
    """A one-character typo of a real ID used to be "done", with a signed receipt, while
    the real user's profile stayed live (review finding)."""
    router = sim.routers[US]
    real = sign_up(router, "US")
    router.put("profile", {"pk": real, **SECRET})
    sim.settle()
    typo = real[:-1] + ("A" if real[-1] != "A" else "B")
    never = mint_user_id(US)
    for uid in (typo, never):
        with pytest.raises(UnknownSubject):
            router.erase_subject(uid)
        assert holders(sim, "directory", uid) == {}  # no record, no fence
    assert holders(sim, "profiles", real) == {US: "live", US2: "live"}
    # erased before: a second erase is done again (it re-checks), not refused
    assert router.erase_subject(real).status == "done"
    assert router.erase_subject(real).status == "done"


def test_an_outage_while_the_entry_is_fenced_leaves_the_erasure_pending(
    sim: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory fence is the erasure's last step; a replica lost then used to raise
    (no receipt, nothing for --resume to find). It is pending, and erasing again ends it."""
    router = sim.routers[EU1]
    uid = sign_up(router, "DE")
    router.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    original = Eraser._erase_entry

    def lose_a_replica(self: Eraser, user_id: str, entry: Any) -> None:
        sim.outage(BR)  # a directory replica, read by nothing before this step
        original(self, user_id, entry)

    monkeypatch.setattr(Eraser, "_erase_entry", lose_a_replica)
    try:
        result = router.erase_subject(uid)
    finally:
        monkeypatch.undo()
        sim.restore(BR)
    assert result.status == "pending" and BR in result.reason, result.reason
    assert holders(sim, "profiles", uid) == {EU1: "erased", EU2: "erased"}
    done = router.erase_subject(uid)
    assert done.status == "done", done.reason
    sim.settle()
    assert set(holders(sim, "directory", uid).values()) == {"erased"}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "pause", "resume", "step"]),
            st.sampled_from([EU1, US, IN1]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_writes_deletes_and_pauses_never_resurrect_a_delete(
    sim: Simulation, ops: list[tuple[str, str]]
) -> None:
    """The last acknowledged operation (in time: each takes a millisecond) is a delete,
    or a write whose stamp is older than a delete it meets: either way nothing comes back."""
    key = f"zombie-{sim.rng.random()}"
    last: str | None = None  # "put" or "delete": the last acknowledged operation
    for op, region in ops:
        sim.advance(0.001)
        r = sim.routers[region]
        if op in ("put", "delete"):
            try:
                if op == "put":
                    r.put("content", {"pk": key, "body": "x"})
                else:
                    r.delete("content", {"pk": key})
                last = op
            except StaleWrite:
                pass
        elif op == "pause":
            sim.faults.pause(region, None)
        elif op == "resume":
            sim.faults.resume(region, None)
        else:
            sim.step(0.05)
    sim.faults.resume(None, None)
    sim.settle()
    states = {sim.items(r, "content").get(key, {}).get("rk_v") for r in sim.policy.regions}
    assert len(states) == 1  # converged
    final = sim.items(US, "content").get(key)
    if last == "delete":  # the newest acknowledged operation won everywhere
        assert final is not None and final.get("rk_del") == "deleted"
    elif last == "put":
        assert final is not None and "rk_del" not in final


def test_a_throttle_mid_paging_loses_no_page_of_a_locate(sim: Simulation) -> None:
    """The transport sends a throttled request again; a locate whose paging had moved
    on must start over, not resume from the cursor the failed attempt left behind."""
    from botocore.exceptions import ClientError

    router = sim.routers[EU1]
    uid = sign_up(router, "DE")
    for i in range(4):
        router.put("content", {"pk": f"paged-{i}-{uid[-6:]}", "author_id": uid, "body": "x"})
    sim.settle()
    real = sim.clients.client
    sent = {"n": 0}

    class OnePerPage:  # the index answers one item a page, and throttles the third page
        def __init__(self, client: Any, region: str) -> None:
            self.client, self.region = client, region

        def __getattr__(self, name: str) -> Any:
            method = getattr(self.client, name)
            if name != "query" or self.region != EU1:
                return method

            def query(**kw: Any) -> Any:
                if not kw.get("IndexName"):
                    return method(**kw)
                sent["n"] += 1
                if sent["n"] == 3:
                    error = {"Code": "ThrottlingException", "Message": "slow down"}
                    raise ClientError({"Error": error}, "Query")
                return method(Limit=1, **kw)

            return query

    sim.clients.client = lambda s, r: OnePerPage(real(s, r), r) if s == "dynamodb" else real(s, r)  # type: ignore[method-assign]
    try:
        found = [f for f in router.locate_subject(uid).live() if f.region == EU1]
    finally:
        sim.clients.client = real  # type: ignore[method-assign]
    assert sent["n"] > 3  # the throttle happened, and the paging was sent again
    assert len([f for f in found if f.data_class == "content"]) == 4


def test_a_throttled_directory_never_lets_a_guess_decide_an_export(sim: Simulation) -> None:
    """The subject moved to the US; with the directory throttled, an EU router must not
    fall back to the home the ID was minted with (the EU) and export without a basis."""
    from botocore.exceptions import ClientError

    from residency.errors import Throttled

    eu = sim.routers[EU1]
    uid = sign_up(eu, "DE")
    eu.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    eu.move_user(uid, country="US")
    sim.settle()
    eu.directory.clear()
    with pytest.raises(ResidencyViolation):
        eu.export_subject(uid)
    directory = eu.users.routes.tables["directory"]
    real = sim.clients.client

    class Throttling:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            method = getattr(self.client, name)

            def call(**kw: Any) -> Any:
                if name == "get_item" and kw.get("TableName") == directory:
                    error = {"Code": "ProvisionedThroughputExceededException", "Message": "x"}
                    raise ClientError({"Error": error}, "GetItem")
                return method(**kw)

            return call

    sim.clients.client = lambda s, r: Throttling(real(s, r)) if s == "dynamodb" else real(s, r)  # type: ignore[method-assign]
    eu.directory.clear()
    try:
        with pytest.raises(Throttled):
            eu.export_subject(uid)
        with pytest.raises(Throttled):  # nor does a read guess the home: it is told
            eu.home_of(uid)
    finally:
        sim.clients.client = real  # type: ignore[method-assign]
    assert eu.directory.get(uid) is None  # no guessed entry was cached
