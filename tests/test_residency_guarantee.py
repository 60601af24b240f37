"""Each way the residency guarantee was broken from outside, tried again through the public API.

The deterministic local-cluster driver (in-process moto per region, the
replication emulator stepped by hand) stands in for the cluster; what is stored
where is read back with raw boto3 scans (``Simulation.items``).
"""

from __future__ import annotations

import copy
import datetime
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regions.directory import DirectoryEntry
from regions.ids import mint_user_id
from regions.local.sim import Simulation, simulation
from regions.router import RegionRouter
from residency.errors import (
    ConfigError,
    MalformedId,
    RegionkitError,
    ResidencyViolation,
    StaleWrite,
    UnassignedUser,
)
from residency.policy import load_policy
from residency.pseudonym import Pseudonymizer
from residency.settings import is_loopback_url

EU1, EU2, IN1, IN2, US = "eu-central-1", "eu-west-1", "ap-south-1", "ap-south-2", "us-east-1"
SECRET = {"email": "zoe.secret@example.org", "phone": "+919812345678", "display_name": "Zoe Q"}


@pytest.fixture(scope="module")
def sim(example_policy_path: Any) -> Iterator[Simulation]:
    with simulation(load_policy(example_policy_path), seed=3, detect=False) as s:
        yield s


def sign_up(router: RegionRouter, country: str) -> str:
    uid = router.new_user_id(country=country)
    router.assign_home(uid, country=country)
    return uid


def live_regions(sim: Simulation, uid: str) -> set[str]:
    return {
        r
        for r in sim.policy.regions
        if (i := sim.items(r, "profiles").get(uid)) is not None and "rk_del" not in i
    }


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything an exception carries: message, repr, attributes, the whole chain, pickle."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield str(e)
        yield repr(e)
        yield repr(vars(e))
        yield repr(getattr(e, "response", ""))
        todo += [e.__cause__, e.__context__]
    yield pickle.dumps(exc).decode("latin-1")


def assert_no_secret(exc: BaseException) -> None:
    for text in exception_texts(exc):
        for value in SECRET.values():
            assert value not in text


# --- 1. the data decides, not the caller ------------------------------------------------------


def test_a_claimed_subject_that_disagrees_with_the_key_is_refused(sim: Simulation) -> None:
    router = sim.routers[US]
    indian, american = sign_up(router, "IN"), sign_up(router, "US")
    key = {"pk": indian}
    attempts = [
        lambda: router.put("profile", {**key, **SECRET}, subject=american),
        lambda: router.get("profile", key, subject=american),
        lambda: router.update("profile", key, {"phone": "+1"}, subject=american),
        lambda: router.delete("profile", key, subject=american),
        lambda: router.query("profile", indian, subject=american),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError, match="drop subject="):
            attempt()
    assert live_regions(sim, indian) == set()
    router.put("profile", {**key, **SECRET}, subject=indian)  # agreeing is fine
    assert live_regions(sim, indian) == {IN1}


def test_an_unassigned_or_mis_minted_user_cannot_be_written(sim: Simulation) -> None:
    router = sim.routers[US]
    minted_abroad = mint_user_id(US)  # an Indian resident, minted as if American
    with pytest.raises(ConfigError, match="minted for us-east-1"):
        router.assign_home(minted_abroad, country="IN")
    with pytest.raises(UnassignedUser):
        router.put("profile", {"pk": minted_abroad, **SECRET})
    assert live_regions(sim, minted_abroad) == set()


# --- 3./4. global classes refuse personal data; the directory is a system class ---------------


@pytest.mark.parametrize(
    ("data_class", "item"),
    [
        ("content", {"pk": "post-1", "email": "zoe.secret@example.org"}),
        ("content", {"pk": "post-2", "Email": "zoe.secret@example.org"}),
        ("content", {"pk": "post-3", "author": {"contact": {"PHONE": "zoe.secret@example.org"}}}),
        (
            "content",
            {"pk": "post-4", "thread": [{"a": 1}, {"display_name": "zoe.secret@example.org"}]},
        ),
        ("reactions", {"pk": "r-1", "phone": "zoe.secret@example.org"}),
    ],
)
def test_global_classes_refuse_pii_names_at_any_depth(
    sim: Simulation, data_class: str, item: dict[str, Any]
) -> None:
    router = sim.routers[EU1]
    with pytest.raises(ResidencyViolation, match="personal data") as err:
        router.put(data_class, {**item})
    assert_no_secret(err.value)
    assert item["pk"] not in sim.items(EU1, sim.policy.data_classes[data_class].table)
    if data_class == "content":
        with pytest.raises(ResidencyViolation):
            router.update("content", {"pk": "post-1"}, {"meta": {"birth_date": "x"}})


def test_the_directory_is_a_system_class(sim: Simulation) -> None:
    router = sim.routers[US]
    uid = sign_up(router, "IN")
    forged = {"pk": uid, "home_region": US, "jurisdiction": "US", "status": "active"}
    for attempt in (
        lambda: router.put("directory", forged),
        lambda: router.update("directory", {"pk": uid}, {"home_region": US}),
        lambda: router.delete("directory", {"pk": uid}),
    ):
        with pytest.raises(ConfigError, match="system class"):
            attempt()
    fresh = RegionRouter(sim.policy, region=US, clients=sim.clients, config=router.config)
    fresh.put("profile", {"pk": uid, **SECRET})
    assert live_regions(sim, uid) == {IN1}


# --- tombstones -----------------------------------------------------------------------------


def test_a_delete_is_a_versioned_tombstone_that_refuses_older_writes(sim: Simulation) -> None:
    router = sim.routers[EU1]
    router.put("content", {"pk": "t-1", "body": "v1"})
    stale_stamp = str(router.clock.now())  # a writer whose clock is behind the delete
    deleted = router.delete("content", {"pk": "t-1"})
    stored = sim.items(EU1, "content")["t-1"]
    assert stored["rk_del"] == "deleted" and stored["rk_v"] == deleted.version
    assert set(stored) <= {"pk", "rk_v", "rk_at", "rk_vv", "rk_del", "rk_tok", "expires_at"}
    assert stored["rk_tok"]  # a conflict this delete loses is named by unguessable parts
    assert int(stored["expires_at"]) > sim.now + 30 * 86_400  # the policy's retention
    assert router.get("content", {"pk": "t-1"}) is None
    assert router.query("content", "t-1") == []
    # A write stamped before the delete (a stale process) is refused where it lands.
    client = sim.clients.client("dynamodb", EU1)
    from regions.versioned import condition

    cond, names, values = condition(None, False, stale_stamp)
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.put_item(
            TableName="content",
            Item={"pk": {"S": "t-1"}, "body": {"S": "zombie"}, "rk_v": {"S": stale_stamp}},
            ConditionExpression=cond,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    # A newer write recreates it (plain last-writer-wins), and so does a create.
    router.put("content", {"pk": "t-1", "body": "v2"}, create_only=True)
    assert router.get("content", {"pk": "t-1"})["body"] == "v2"  # type: ignore[index]


def test_a_delete_replicates_and_wins_over_an_older_write_everywhere(sim: Simulation) -> None:
    eu, us = sim.routers[EU1], sim.routers[US]
    eu.put("content", {"pk": "t-2", "body": "v1"})
    sim.settle()
    sim.faults.pause(EU1, US)
    us.delete("content", {"pk": "t-2"})
    sim.step(0.01)
    sim.settle()
    sim.faults.resume(EU1, US)
    sim.settle()
    for region in sim.policy.data_classes["content"].replicas:  # type: ignore[union-attr]
        assert sim.items(region, "content")["t-2"].get("rk_del") == "deleted"


# --- 6. no PII value in any exception -------------------------------------------------------


def test_a_stale_profile_write_keeps_nothing_of_the_old_item(sim: Simulation) -> None:
    router = sim.routers[IN1]
    uid = sign_up(router, "IN")
    first = router.put("profile", {"pk": uid, **SECRET})
    router.put("profile", {"pk": uid, **SECRET}, based_on=first.version)
    with pytest.raises(StaleWrite) as err:
        router.put("profile", {"pk": uid, **SECRET}, based_on=first.version)
    assert_no_secret(err.value)
    assert copy.copy(err.value).facts == err.value.facts


def test_an_unsupported_value_is_named_by_attribute_and_type_only(sim: Simulation) -> None:
    router = sim.routers[IN1]
    uid = sign_up(router, "IN")
    with pytest.raises(ConfigError, match="'birth_date' holds a date value") as err:
        router.put("profile", {"pk": uid, "birth_date": datetime.date(1990, 1, 2), **SECRET})
    assert_no_secret(err.value)
    assert all("1990" not in t for t in exception_texts(err.value))


def test_an_email_passed_as_a_user_id_is_not_echoed(sim: Simulation) -> None:
    with pytest.raises(MalformedId) as err:
        sim.routers[US].get("profile", {"pk": SECRET["email"]})
    assert_no_secret(err.value)


def test_a_content_key_is_named_by_keyed_pseudonym(sim: Simulation) -> None:
    router = sim.routers[EU1]
    key = {"pk": SECRET["email"]}  # a service that keys content by e-mail
    first = router.put("content", {**key, "body": "1"})
    router.put("content", {**key, "body": "2"}, based_on=first.version)
    with pytest.raises(StaleWrite) as err:
        router.put("content", {**key, "body": "3"}, based_on=first.version)
    assert_no_secret(err.value)
    assert str(err.value.key).startswith("pn-")  # type: ignore[attr-defined]


def test_pseudonyms_are_keyed() -> None:
    a, b = Pseudonymizer(bytes(range(32))), Pseudonymizer(bytes(range(2, 34)))
    assert a("alice@example.org") == a("alice@example.org") != b("alice@example.org")
    import hashlib

    unkeyed = hashlib.sha256(b"alice@example.org").hexdigest()
    assert unkeyed[:24] not in a("alice@example.org")
    assert "k" * 8 not in repr(a) and pickle.loads(pickle.dumps(a))("x") == a("x")


def test_every_regionkit_error_raised_here_pickles(sim: Simulation) -> None:
    router = sim.routers[EU1]
    with pytest.raises(RegionkitError) as err:
        router.put("directory", {"pk": "x"})
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)


# --- 7. the loopback check matches the HTTP client ------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("http://10.1.2.3\\@127.0.0.1:8000", False),
        ("http://user@127.0.0.1:8000", False),
        ("http://127.0.0.1%2f@10.0.0.1/", False),
        ("http://127.0.0.1 .evil/", False),
        ("http://127.0.0.1.nip.io/", False),
        ("http://10.0.0.1/", False),
    ],
)
def test_the_loopback_check_refuses_anything_ambiguous(url: str, ok: bool) -> None:
    assert is_loopback_url(url) is ok


# --- found by an adversarial review, kept as regressions ------------------------------------


def test_a_delete_keeps_only_the_key_in_its_tombstone(sim: Simulation) -> None:
    router = sim.routers[US]
    router.delete("content", {"pk": "rv-1", "email": SECRET["email"], "address": "x"})
    sim.settle()
    for region in sim.policy.regions:
        stored = sim.items(region, "content")["rv-1"]
        assert "email" not in stored and "address" not in stored


def test_any_mapping_is_checked_for_pii_names(sim: Simulation) -> None:
    from collections import UserDict
    from types import MappingProxyType

    router = sim.routers[US]
    for wrap in (UserDict, MappingProxyType):
        with pytest.raises(ResidencyViolation):
            router.put("content", {"pk": "rv-2", "meta": wrap({"email": SECRET["email"]})})
    with pytest.raises(ResidencyViolation):
        router.put("content", UserDict({"pk": "rv-3", "email": SECRET["email"]}))  # type: ignore[arg-type]


def test_a_hint_cached_for_a_read_never_serves_a_write(sim: Simulation) -> None:
    router = RegionRouter(
        sim.policy, region="us-west-2", clients=sim.clients, config=sim.routers[US].config
    )
    uid = mint_user_id(US)  # never assigned
    sim.outage(US)  # the user's directory authority is unreachable
    try:
        assert router.get("profile", {"pk": uid}) is None  # a read may go by the hint
        with pytest.raises((UnassignedUser, RegionkitError)):
            router.put("profile", {"pk": uid, **SECRET})
    finally:
        sim.restore(US)
    assert live_regions(sim, uid) == set()


def test_a_map_key_that_is_not_a_string_is_refused_without_its_value(sim: Simulation) -> None:
    router = sim.routers[IN1]
    uid = sign_up(router, "IN")
    with pytest.raises(ConfigError, match="map key of type int") as err:
        router.put("profile", {"pk": uid, "contacts": {919812345678: "Mum"}})
    assert all("919812345678" not in t for t in exception_texts(err.value))


def test_a_write_during_a_move_round_is_moved_not_lost(sim: Simulation) -> None:
    mover, app = sim.routers[EU1], sim.routers[EU2]
    uid = sign_up(mover, "DE")
    mover.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    copy_at, acked = mover.writer.copy_at, []

    def copy_then_a_concurrent_write(route: Any, item: Any, **kw: Any) -> Any:
        ok = copy_at(route, item, **kw)
        if not acked:  # another process writes while the move is between copy and fence
            acked.append(app.put("profile", {"pk": uid, "email": "late@example.org"}))
        return ok

    mover.writer.copy_at = copy_then_a_concurrent_write  # type: ignore[method-assign]
    try:
        assert mover.move_user(uid, country="US").status == "done"
    finally:
        mover.writer.copy_at = copy_at  # type: ignore[method-assign]
    assert sim.items(US, "profiles")[uid]["email"] == "late@example.org"
    assert live_regions(sim, uid) == {US}


def test_a_move_in_verifying_cannot_be_redirected(sim: Simulation) -> None:

    router = sim.routers[EU1]
    uid = sign_up(router, "DE")
    entry = router.users.read_authoritative(uid)
    assert entry is not None
    verifying = DirectoryEntry(uid, US, "US", "verifying", moved_from=EU1)
    router.users.write_entry(verifying, based_on=entry.version)
    with pytest.raises(ConfigError, match="unfinished move"):
        router.move_user(uid, country="DE")


# --- a move_user call that stalls while another process acts on the same user ------------


def where(sim: Simulation, uid: str) -> dict[str, str]:
    """region -> 'live:<email>' or the tombstone kind, for every region holding the profile."""
    out = {}
    for r in sim.policy.regions:
        if (i := sim.items(r, "profiles").get(uid)) is not None:
            out[r] = str(i.get("rk_del") or f"live:{i.get('email')}")
    return out


def stall_copy(router: RegionRouter, meanwhile: Any) -> Any:
    """Make ``router``'s next move stall at its first copy while ``meanwhile()`` runs
    (a GC pause, a slow network: another process acts in between). Returns the restorer."""
    real, ran = router.writer.copy_at, []

    def copy_at(route: Any, item: Any, **kw: Any) -> Any:
        if not ran:
            ran.append(meanwhile())
        return real(route, item, **kw)

    router.writer.copy_at = copy_at  # type: ignore[method-assign]
    return lambda: setattr(router.writer, "copy_at", real)


def move_stalled(
    sim: Simulation,
    mover: RegionRouter,
    uid: str,
    meanwhile: Any,
    *,
    country: str,
    after: bool = False,
) -> Any:
    """``mover.move_user(uid, country=...)``, stalling at its first copy (before it, or
    after it with ``after``) while ``meanwhile()`` runs; then everything settles."""
    restore = (
        after_first(mover.writer, "copy_at", meanwhile) if after else stall_copy(mover, meanwhile)
    )
    try:
        result = mover.move_user(uid, country=country)
    finally:
        restore()
    sim.settle()
    return result


def test_an_erasure_during_a_stalled_move_stays_erased(sim: Simulation) -> None:
    """The eraser fences both ends of the move under way; the stalled mover's copy meets
    the erasure's fence, and its fences never replace an ``erased`` one."""
    mover, eraser = sim.routers[IN1], sim.routers[IN2]
    uid = sign_up(mover, "IN")
    mover.put("profile", {"pk": uid, **SECRET})
    sim.settle()

    def erase() -> Any:
        receipt = eraser.erase_subject(uid)
        sim.settle()
        return receipt

    result = move_stalled(sim, mover, uid, erase, country="DE")
    assert result.status == "superseded"
    assert live_regions(sim, uid) == set()
    assert set(where(sim, uid).values()) == {"erased"}
    assert eraser.pending_erasures() == []
    assert list(eraser.locate_subject(uid).live()) == []


def test_a_stalled_move_cannot_undo_a_later_move(sim: Simulation) -> None:
    """While A's move IN -> EU stalls, B finishes it and moves the user on to the US, where
    they write again. A then writes nothing: its copy meets the later move's fence in
    the EU, and its directory write is compare-and-set on its own record."""
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET, "email": "v1@old.example"})
    sim.settle()

    def b_moves_twice() -> None:
        assert b.move_user(uid).status == "done"  # resumes A's recorded move
        sim.settle()
        assert b.move_user(uid, country="US").status == "done"
        sim.settle()
        b.put("profile", {"pk": uid, **SECRET, "email": "v2@new.example"})
        sim.settle()

    result = move_stalled(sim, a, uid, b_moves_twice, country="DE")
    assert result.status == "superseded"
    entry = b.users.read_authoritative(uid)
    assert entry is not None and (entry.home_region, entry.status) == (US, "active")
    assert where(sim, uid)[US] == "live:v2@new.example"
    assert live_regions(sim, uid) == {US, "us-west-2"}  # the US jurisdiction's two regions
    fresh = sim.routers[EU1]
    fresh.directory.clear()
    assert (fresh.get("profile", {"pk": uid}) or {}).get("email") == "v2@new.example"


def test_a_stalled_move_cannot_fence_the_data_a_move_back_restored(sim: Simulation) -> None:
    """B finishes A's move IN -> EU and then moves the user back to IN, with no write in
    between, so IN holds the very version A read. A's fences must not land on it (the
    data would then be live nowhere): the move back's epoch is on it."""
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET, "email": "v1@old.example"})
    sim.settle()

    def b_moves_there_and_back() -> None:
        assert b.move_user(uid).status == "done"
        sim.settle()
        assert b.move_user(uid, country="IN").status == "done"
        sim.settle()

    result = move_stalled(sim, a, uid, b_moves_there_and_back, country="DE")
    assert result.status == "superseded"
    entry = b.users.read_authoritative(uid)
    assert entry is not None and entry.jurisdiction == "IN" and entry.status == "active"
    assert live_regions(sim, uid) <= {IN1, IN2} and live_regions(sim, uid)
    assert all(where(sim, uid)[r] == "moved" for r in (EU1, EU2) if r in where(sim, uid))
    assert (b.get("profile", {"pk": uid}) or {}).get("email") == "v1@old.example"


def test_moving_back_and_on_again_still_works(sim: Simulation) -> None:
    """The epoch check does not stop legitimate moves over old fences: IN -> EU -> US -> EU,
    each leaving fences behind, each later move overwriting an earlier one's fence."""
    r = sim.routers[EU1]
    uid = sign_up(r, "IN")
    r.put("profile", {"pk": uid, **SECRET, "email": "v1@x.example"})
    sim.settle()
    for country in ("DE", "US", "DE"):
        assert r.move_user(uid, country=country).status == "done"
        sim.settle()
    r.put("profile", {"pk": uid, **SECRET, "email": "v2@x.example"})
    sim.settle()
    assert live_regions(sim, uid) <= {EU1, EU2} and live_regions(sim, uid)
    assert (r.get("profile", {"pk": uid}) or {}).get("email") == "v2@x.example"


def test_a_move_stalled_before_its_directory_switch_cannot_undo_a_later_move(
    sim: Simulation,
) -> None:
    """A's data steps are done when it stalls; B finishes the same move and moves the user
    on. A's directory switch is compare-and-set on its own record, so it writes nothing."""
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    real_round, rounds = a.moves._round, []

    def round_then_stall(move: Any, steps: list[str]) -> tuple[bool, bool]:
        out = real_round(move, steps)
        if not rounds:
            rounds.append(1)
            assert b.move_user(uid).status == "done"  # the same move, by another process
            sim.settle()
            assert b.move_user(uid, country="US").status == "done"
            sim.settle()
        return out

    a.moves._round = round_then_stall  # type: ignore[method-assign]
    try:
        result = a.move_user(uid, country="DE")
    finally:
        a.moves._round = real_round  # type: ignore[method-assign]
    sim.settle()
    assert result.status == "superseded"
    entry = b.users.read_authoritative(uid)
    assert entry is not None and (entry.home_region, entry.status) == (US, "active")
    assert live_regions(sim, uid) == {US, "us-west-2"}


@pytest.mark.parametrize(
    "corrupt",
    [
        {"home_region": "QQ123456C"},
        {"home_region": {"S": "zoe.secret@example.org"}},
        {"jurisdiction": "Zoe Q"},
        {"jurisdiction": "US"},  # a real jurisdiction that is not the home region's
        {"status": "zoe.secret@example.org"},
        {"moving_to": "+919812345678", "status": "moving"},
    ],
)
def test_a_corrupt_directory_entry_is_refused_by_field_never_shown(
    sim: Simulation, corrupt: dict[str, Any]
) -> None:
    """A directory item edited by hand (or by an attacker) holds values regionkit never
    writes: every operation on the user refuses it, naming the field, not the value."""
    from regions.codec import to_ddb

    router = sim.routers[EU1]
    uid = sign_up(router, "DE")
    entry = {"pk": uid, "home_region": EU1, "jurisdiction": "EU", "status": "active", **corrupt}
    for region in sim.policy.jurisdictions["EU"].regions + [US]:
        sim.clients.client("dynamodb", region).put_item(
            TableName=router.users.routes.tables["directory"], Item=to_ddb(entry)
        )
    router.directory.clear()
    field = next(iter(corrupt))
    calls = {
        "route": lambda: router.route("profile", uid, "write"),
        "get": lambda: router.get("profile", {"pk": uid}),
        "put": lambda: router.put("profile", {"pk": uid, **SECRET}),
        "move": lambda: router.move_user(uid, country="US"),
        "export": lambda: router.export_subject(uid),
        "erase": lambda: router.erase_subject(uid),
    }
    for name, call in calls.items():
        with pytest.raises(RegionkitError) as err:
            call()
        assert type(err.value).__name__ == "CorruptRecord", name
        assert err.value.field in (field, "jurisdiction"), name
        for text in exception_texts(err.value):
            for value in corrupt.values():
                assert str(value) not in text or str(value) in {"moving", "US"}, (name, text)


def test_a_cached_home_cannot_outlive_the_fences(sim: Simulation) -> None:
    """The fences a move leaves expire after system.tombstone_retention_days; a directory
    cache that kept an entry longer would send a stale router's writes home again."""
    from residency.settings import RouterConfig

    days = sim.policy.system.tombstone_retention_days
    too_long = RouterConfig(mode="aws", directory_cache_ttl_seconds=days * 86_400)
    with pytest.raises(ConfigError, match="tombstone_retention_days"):
        RegionRouter(sim.policy, region=EU1, clients=sim.clients, config=too_long)
    ok = RouterConfig(mode="aws", directory_cache_ttl_seconds=days * 86_400 - 1)
    RegionRouter(sim.policy, region=EU1, clients=sim.clients, config=ok).close()


@pytest.mark.parametrize("op", ["put", "delete", "update", "transact"])
def test_an_unknown_data_class_is_a_config_error(sim: Simulation, op: str) -> None:
    from residency.errors import UnknownDataClass

    router = sim.routers[EU1]
    calls = {
        "put": lambda: router.put("profiles", {"pk": "x"}),
        "delete": lambda: router.delete("contents", {"pk": "x"}),
        "update": lambda: router.update("nope", {"pk": "x"}, {"a": 1}),
        "transact": lambda: router.transact([("put", "nope", {"pk": "x"})]),
    }
    with pytest.raises(UnknownDataClass):
        calls[op]()


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda r: r.put("content", {"pk": "c1", "author_id": ""}), "an empty string"),
        (lambda r: r.put("content", {"pk": "c1", "author_id": 7}), "int"),
        (lambda r: r.update("content", {"pk": "c1"}, {"author_id": ""}), "an empty string"),
        (lambda r: r.update("content", {"pk": "c1"}, {"author_id": 7.5}), "float"),
        (lambda r: r.put("content", {"pk": 42}), "int"),
        (lambda r: r.transact([("put", "content", {"pk": "c2", "author_id": b"x"})]), "bytes"),
    ],
)
def test_a_key_attribute_must_be_a_non_empty_string(sim: Simulation, call: Any, what: str) -> None:
    """Every regionkit table declares its key attributes (the table's and its indexes')
    as strings; DynamoDB refuses an index key of another type or an empty one (moto does
    not), so the router refuses it first, naming the attribute and the type."""
    with pytest.raises(ConfigError, match="key attribute") as err:
        call(sim.routers[EU1])
    assert what in str(err.value)


def test_a_transaction_over_4_mb_is_refused_before_it_is_sent(sim: Simulation) -> None:
    router = sim.routers[EU1]
    ops = [("put", "content", {"pk": f"big-{i}", "body": "x" * 390_000}) for i in range(11)]
    with pytest.raises(ConfigError, match="4 MB"):
        router.transact(ops)  # type: ignore[arg-type]
    assert all(sim.items(EU1, "content").get(f"big-{i}") is None for i in range(11))
    router.transact(ops[:10])  # type: ignore[arg-type]


_FULLWIDTH = {
    c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
}


@st.composite
def disguised(draw: st.DrawFn, name: str) -> str:
    """``name`` as someone might write it to slip past a name check: any case, separators
    and spaces between letters, full-width letters, zero-width characters."""
    out = []
    for letter in name.replace("_", ""):
        ch = draw(st.sampled_from([letter, letter.upper(), _FULLWIDTH.get(letter, letter)]))
        out.append(ch + draw(st.sampled_from(["", "", "_", "-", ".", " ", "\u200b", "\u2060"])))
    return "".join(out)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_disguised_pii_name_is_refused_in_a_global_class(sim: Simulation, data: Any) -> None:
    """The guard compares names as the audit does (residency.names.normalize_name), so a
    PII attribute name in another case, with separators, full-width or zero-width
    characters is refused at any depth."""
    name = data.draw(st.sampled_from(sorted(sim.policy.pii_attributes())))
    key = data.draw(disguised(name))
    nested = data.draw(st.booleans())
    item = {"pk": "c1", "meta": {key: "x"}} if nested else {"pk": "c1", key: "x"}
    with pytest.raises(ResidencyViolation):
        sim.routers[EU1].put("content", item)


def test_the_log_redactor_matches_names_as_the_guard_does() -> None:
    from residency.logs import REDACTED, PiiRedactor

    redact = PiiRedactor(["email"])
    event = {"E-Mail": "a", "e\u200bmail": "b", "nested": {"e_mail": "c"}, "other": "d"}
    out = redact(None, "info", dict(event))
    assert out["E-Mail"] == out["e\u200bmail"] == REDACTED and out["nested"]["e_mail"] == REDACTED
    assert out["other"] == "d"


# --- a stalled move and replication that has not arrived yet (last-writer-wins) ---------
# A condition is evaluated in the one replica a write lands in; a write made there with a
# later write time still wins everywhere once replicated. So a stalled move must not write
# at all: it re-reads the directory before each batch of writes, never rewrites what a
# replica already holds (a re-fence or a copy of the same version), and stops at once
# when any region shows a later move or an erasure.


def after_first(obj: Any, name: str, meanwhile: Any) -> Any:
    real, ran = getattr(obj, name), []

    def wrapped(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        if not ran:
            ran.append(meanwhile())
        return out

    setattr(obj, name, wrapped)
    return lambda: setattr(obj, name, real)


def test_a_move_back_not_yet_replicated_is_not_fenced_by_a_stalled_move(
    sim: Simulation,
) -> None:
    """A copies and stalls before fencing; B finishes A's move and moves the user back,
    and the second IN replica has not received the restored profile yet."""
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET, "email": "v1@old.example"})
    sim.settle()

    def there_and_back_unsettled() -> None:
        assert b.move_user(uid).status == "done"
        sim.settle()
        assert b.move_user(uid, country="IN").status == "done"  # not replicated yet

    result = move_stalled(sim, a, uid, there_and_back_unsettled, country="DE", after=True)
    assert result.status == "superseded"
    assert live_regions(sim, uid) == {IN1, IN2}
    fresh = sim.routers[US]
    fresh.directory.clear()
    assert (fresh.get("profile", {"pk": uid}) or {}).get("email") == "v1@old.example"


def test_a_slow_resumer_never_rewrites_a_copy_over_a_newer_write(sim: Simulation) -> None:
    """B finishes A's move, re-homes the user inside the EU, and the app writes there; A
    (the same move, a second late) must not copy v1 again: a fresh copy would win
    last-writer-wins over the acknowledged v2 in the other EU replica."""
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET, "email": "v1@old.example"})
    sim.settle()

    def finish_rehome_write() -> None:
        assert b.move_user(uid).status == "done"
        sim.settle()
        assert b.move_user(uid, region=EU2).status == "done"
        b.put("profile", {"pk": uid, **SECRET, "email": "v2@acknowledged.example"})
        sim.advance(1.0)

    result = move_stalled(sim, a, uid, finish_rehome_write, country="DE")
    assert result.status == "superseded"
    assert {where(sim, uid)[r] for r in (EU1, EU2)} == {"live:v2@acknowledged.example"}


def test_a_move_asleep_past_the_tombstone_retention_writes_nothing(sim: Simulation) -> None:
    """A sleeps inside its copy while B finishes, moves the user to the US and every
    fence expires: the directory check right before the request is sent stops it."""
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET, "email": "v1@old.example"})
    sim.settle()

    def later_then_expire() -> None:
        assert b.move_user(uid).status == "done"
        sim.settle()
        assert b.move_user(uid, country="US").status == "done"
        sim.settle()
        sim.advance((sim.policy.system.tombstone_retention_days + 1) * 86_400)
        sim.expire()
        sim.settle()

    result = move_stalled(sim, a, uid, later_then_expire, country="DE")
    assert result.status == "superseded"
    assert live_regions(sim, uid) == {US, "us-west-2"}


def test_losing_the_directory_compare_and_set_is_superseded_not_pending(
    sim: Simulation,
) -> None:
    a, b = sim.routers[IN1], sim.routers[EU2]
    uid = sign_up(a, "IN")
    a.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    real, calls = a.users.write_entry, []

    def write_entry(entry: Any, **kw: Any) -> str:
        calls.append(entry.status)
        if entry.status == "verifying":  # read as ours, replaced before the write
            assert b.erase_subject(uid).status == "done"
            sim.settle()
        return real(entry, **kw)

    a.users.write_entry = write_entry  # type: ignore[method-assign]
    try:
        result = a.move_user(uid, country="DE")
    finally:
        a.users.write_entry = real  # type: ignore[method-assign]
    assert result.status == "superseded" and "verifying" in calls
    assert uid not in [e.user_id for e in a.pending_moves()]
    assert live_regions(sim, uid) == set()


def test_a_move_write_never_rewrites_what_a_replica_already_holds(sim: Simulation) -> None:
    """Writer level: re-fencing a ``moved`` fence and copying a version the region holds
    are no-ops (same stamp, no new write time), so a late retry cannot win
    last-writer-wins over what another replica received meanwhile."""
    from regions.routing import Route

    r = sim.routers[IN1]
    uid = sign_up(r, "IN")
    r.put("profile", {"pk": uid, **SECRET})
    sim.settle()
    assert r.move_user(uid, country="DE").status == "done"
    sim.settle()
    table = r.users.routes.tables["profile"]
    fence_before = sim.items(IN1, "profiles")[uid]
    epoch = str(fence_before["rk_mv"])
    held = r.writer.fence_at(
        Route(IN1, table, "test", False, "profile"),
        {"pk": uid},
        kind="moved",
        newest="0",
        to_region=EU1,
        epoch=epoch,
    )
    assert held and sim.items(IN1, "profiles")[uid] == fence_before  # counted, not rewritten
    copy_before = sim.items(EU1, "profiles")[uid]
    data = {k: v for k, v in copy_before.items() if k != "rk_mv"}
    written = r.writer.copy_at(Route(EU1, table, "test", False, "profile"), data, epoch=epoch)
    assert not written and sim.items(EU1, "profiles")[uid] == copy_before


def test_moves_with_replication_lag_inside_a_jurisdiction_lose_nothing(sim: Simulation) -> None:
    """EU -> IN -> eu-west-1 -> IN -> eu-central-1, with eu-west-1 -> eu-central-1 lagging
    10 s, no process stalled: a move writes again (new write time, its own epoch) what
    an earlier move or the data left, so the copy still replicating into eu-central-1
    never wins over the later fence, and the later copy never loses to it (a review
    lost the profile everywhere when a move counted an earlier fence as its own)."""
    r = sim.routers[EU1]
    uid = sign_up(r, "DE")
    r.put("profile", {"pk": uid, **SECRET, "email": "v0@eu.example"})
    sim.settle()
    assert r.move_user(uid, country="IN").status == "done"
    sim.settle()
    sim.routers[IN1].put("profile", {"pk": uid, **SECRET, "email": "v1@acknowledged.example"})
    sim.settle()
    sim.faults.set_lag(EU2, EU1, seconds=10.0)
    try:
        assert r.move_user(uid, region=EU2).status == "done"
        for _ in range(20):
            sim.step(0.05)
        assert r.move_user(uid, country="IN").status == "done"
        for _ in range(240):  # until the lagged copy reaches eu-central-1 (12 s at most)
            sim.step(0.05)
            if EU1 in live_regions(sim, uid):
                break  # (it must lose to the later fence there; the bug let it in)
        assert r.move_user(uid, country="DE").status == "done"
    finally:
        sim.faults.set_lag(EU2, EU1, seconds=0.0)
    sim.settle()
    assert live_regions(sim, uid) and live_regions(sim, uid) <= {EU1, EU2}
    fresh = sim.routers[US]
    fresh.directory.clear()
    assert (fresh.get("profile", {"pk": uid}) or {}).get("email") == "v1@acknowledged.example"


def _with_messages(example_policy_path: Any) -> Any:
    """The example policy plus a pinned class with a sort key (a user's messages)."""
    from residency.policy import parse_policy_text

    text = example_policy_path.read_text().replace(
        "  content:\n",
        "  messages:\n    kind: pinned\n    table: messages\n    partition_key: pk\n"
        "    sort_key: sk\n    pii_attributes: [body]\n  content:\n",
        1,
    )
    return parse_policy_text(text, source="sk.yaml")


def test_a_stale_router_cannot_add_a_sort_key_for_an_erased_user(
    example_policy_path: Any,
) -> None:
    """Review finding: after the erasure said done, a router whose directory cache still
    held the user wrote a *new* sort key for them (the item fences cover located keys
    only). The subject fence, checked in the same transaction as every write of the
    class, refuses it in every region of the jurisdiction."""
    with simulation(_with_messages(example_policy_path), seed=4, detect=False) as s:
        router, stale = s.routers[EU1], s.routers[EU2]
        uid = sign_up(router, "DE")
        router.put("messages", {"pk": uid, "sk": "m0", "body": "a private message"})
        s.settle()
        assert stale.get("messages", {"pk": uid, "sk": "m0"}) is not None  # caches the entry
        assert router.erase_subject(uid).status == "done"
        s.settle()
        for writer in (stale, s.routers[EU1]):
            writer.directory.put(DirectoryEntry(uid, EU2, "EU", "active"))  # stale, both
            for new in ({"sk": "m1", "body": "ravi.secret@example.in"}, {"sk": "m0", "body": "x"}):
                with pytest.raises(StaleWrite):
                    writer.put("messages", {"pk": uid, **new})
            with pytest.raises(StaleWrite):
                writer.update("messages", {"pk": uid, "sk": "m2"}, {"body": "again"})
            with pytest.raises(StaleWrite, match="erased"):
                writer.transact([("put", "messages", {"pk": uid, "sk": "m3", "body": "tx"})])
        other = sign_up(router, "DE")  # a transaction's writes carry a token, as single ones
        router.transact([("put", "messages", {"pk": other, "sk": "t0", "body": "tx"})])
        assert s.items(EU1, "messages")[f"{other} / t0"]["rk_tok"]
        s.settle()
        for region in s.policy.regions:
            for item in s.items(region, "messages").values():
                assert item["pk"] != uid or "body" not in item, (region, item)
        us = s.routers[US]
        other = sign_up(us, "US")
        with pytest.raises(ConfigError, match="reserved"):
            us.put("messages", {"pk": other, "sk": "rk#subject-fence", "body": "x"})


def test_an_erasure_with_the_directory_entry_lost_still_fences_the_subject(
    example_policy_path: Any,
) -> None:
    """Review finding (round 2): with the entry gone, the erasure fenced no jurisdiction,
    and a cached router then wrote new sort keys and a new profile. The jurisdiction of
    the home minted into the ID, and of every region an item was found in, is fenced."""
    with simulation(_with_messages(example_policy_path), seed=6, detect=False) as s:
        router, stale = s.routers[EU1], s.routers[EU2]
        uid = sign_up(router, "DE")
        router.put("messages", {"pk": uid, "sk": "m0", "body": "a private message"})
        s.settle()
        for region in s.policy.regions:  # the entry is lost (an operator, a bad restore)
            s.clients.raw(region).delete_item(TableName="directory", Key={"pk": {"S": uid}})
        assert router.erase_subject(uid).status == "done"
        s.settle()
        stale.directory.put(DirectoryEntry(uid, EU1, "EU", "active"))
        with pytest.raises(StaleWrite):
            stale.put("messages", {"pk": uid, "sk": "m1", "body": "x"})
        with pytest.raises(StaleWrite):
            stale.put("profile", {"pk": uid, **SECRET})
        s.settle()
        live = [
            (region, item)
            for region in s.policy.regions
            for table in ("messages", "profiles")
            for item in s.raw_items(region, table)
            if item["pk"] == uid and "rk_del" not in item
        ]
        assert live == []
        # Round 3: a user who moved EU -> US before the entry was lost, with no pinned
        # item to show where: every jurisdiction is fenced, the US included.
        moved = sign_up(router, "DE")
        assert router.move_user(moved, country="US").status == "done"
        s.settle()
        for region in s.policy.regions:
            s.clients.raw(region).delete_item(TableName="directory", Key={"pk": {"S": moved}})
        assert router.erase_subject(moved).status == "done"
        s.settle()
        us = s.routers[US]
        us.directory.put(DirectoryEntry(moved, US, "US", "active"))
        with pytest.raises(StaleWrite):
            us.put("messages", {"pk": moved, "sk": "m1", "body": "x"})
        with pytest.raises(StaleWrite):
            us.put("profile", {"pk": moved, **SECRET})


def test_an_erasure_of_a_user_with_sort_key_items_finishes(example_policy_path: Any) -> None:
    """A pinned class with a sort key has no bare partition key to fence: the erasure
    fences the items it located (it sent a key without its sort key, which DynamoDB
    refuses, so every round stayed pending and every later move was refused)."""
    with simulation(_with_messages(example_policy_path), seed=3, detect=False) as s:
        router = s.routers[IN1]
        uid = sign_up(router, "IN")
        router.put("profile", {"pk": uid, **SECRET})
        for i in range(3):
            router.put("messages", {"pk": uid, "sk": f"m{i}", "body": "a private message"})
        s.settle()
        receipt = router.erase_subject(uid)
        s.settle()
        assert receipt.status == "done", receipt.reason
        for region in s.policy.regions:
            for item in s.items(region, "messages").values():
                if item["pk"] != uid:
                    continue  # another test's user (moto's state outlives a simulation)
                assert item.get("rk_del") == "erased" and "body" not in item
        assert router.users.read_authoritative(uid) is None
