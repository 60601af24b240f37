"""The residency guarantee, tried by a skeptic: several routers, faults, moves, every step checked.

A hypothesis ``RuleBasedStateMachine`` drives three routers standing for three
processes in three regions (each with its own directory cache, cache clock, HLC
and client provider) against the local cluster's deterministic driver: every
region a moto backend, the global-table replication emulator stepped on virtual
time. That driver is what makes "the same seed gives the same history" true; the
rules are the public API only.

After every step the invariants read the ground truth themselves, with raw boto3
scans of every table in every region (``Simulation.items``), never with the
router:

1. every live pinned item lives only in its subject's jurisdiction (the one the
   harness knows from the moves it made; both ends while a move is pending);
2. no read ever returned a pinned item from a region outside it (checked when
   the read happens, from the region the request actually went to);
3. every acknowledged write is present (as data, or as the tombstone of an
   acknowledged delete) in some region of its jurisdiction, or superseded by a
   later acknowledged write of the same item;
4. no global table holds an attribute the policy names as personal data.

``make test`` runs 4 x 30 steps, the second tier (CI runs both) 10 x 30, and ``make
soak`` (``REGIONKIT_TEST_SOAK=1``) 100 x 30.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from regions.directory import DirectoryCache
from regions.health import RegionHealth
from regions.local.sim import Simulation, simulation
from regions.router import RegionRouter
from residency.errors import (
    BackendError,
    RegionUnavailable,
    ResidencyViolation,
    StaleWrite,
)
from residency.policy import Policy, load_policy
from residency.settings import RouterConfig

SOAK = os.environ.get("REGIONKIT_TEST_SOAK") == "1"
ROUTER_REGIONS = ("eu-central-1", "ap-south-1", "us-east-1")
COUNTRIES = ("DE", "IN", "US", "BR")
PROFILE, CONTENT = "profiles", "content"
FAILED = (RegionUnavailable, StaleWrite, BackendError)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ReadLog:
    """A client provider that remembers where every pinned read went (ground truth 2)."""

    def __init__(self, inner: Any, reads: list[tuple[str, str]]) -> None:
        self.inner, self.reads = inner, reads

    def client(self, service: str, region: str) -> Any:
        inner = self.inner.client(service, region)
        return _Client(inner, region, self.reads) if service == "dynamodb" else inner


class _Client:
    def __init__(self, client: Any, region: str, reads: list[tuple[str, str]]) -> None:
        self._c, self._region, self._reads = client, region, reads

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._c, name)
        if name not in ("get_item", "query"):
            return target

        def read(**kwargs: Any) -> Any:
            out = target(**kwargs)
            if kwargs.get("TableName") == PROFILE:
                found = [out["Item"]] if "Item" in out else out.get("Items", [])
                for item in found:
                    if "rk_del" not in item:
                        self._reads.append((self._region, item["pk"]["S"]))
            return out

        return read


_SIM: dict[str, Any] = {}


def _shared_sim() -> Simulation:
    return _SIM["sim"]  # type: ignore[no-any-return]


class Residency(RuleBasedStateMachine):
    users = Bundle("users")

    def __init__(self) -> None:
        super().__init__()
        self.sim = _shared_sim()
        self.policy: Policy = self.sim.policy
        self.reads: list[tuple[str, str]] = []
        self.cache_clocks: list[FakeClock] = []
        self.routers: list[RegionRouter] = []
        s = RouterConfig(mode="aws", failover_attempts=3, directory_cache_ttl_seconds=300)
        for region in ROUTER_REGIONS:
            clock = FakeClock()
            self.cache_clocks.append(clock)
            self.routers.append(
                RegionRouter(
                    self.policy,
                    region=region,
                    clients=ReadLog(self.sim.clients, self.reads),  # type: ignore[arg-type]
                    config=s,
                    health=RegionHealth(
                        self.policy.regions, failures=2, reset_seconds=0.5, clock=self._now
                    ),
                    physical_clock=self.sim._physical(region),
                    directory=DirectoryCache(1000, 300, clock=clock),
                )
            )
        self.home: dict[str, set[str]] = {}  # user → allowed jurisdictions (2 while pending)
        self.acked: dict[str, str] = {}  # user → the last acknowledged version of the profile
        self.paused: set[tuple[str, str]] = set()

    def _now(self) -> float:
        return self.sim.now

    def _tick(self) -> None:
        """Every operation takes time: a millisecond of virtual time passes before each.

        (Writes made at one virtual instant share a write time, and the emulator breaks
        such ties by region, a coincidence real clocks almost never produce.)
        """
        self.sim.advance(0.001)

    def _allowed_regions(self, user: str) -> set[str]:
        return {r for j in self.home[user] for r in self.policy.jurisdictions[j].regions}

    # --- rules: users and pinned data ---

    @rule(target=users, router=st.integers(0, 2), country=st.sampled_from(COUNTRIES))
    def sign_up(self, router: int, country: str) -> str:
        self._tick()
        r = self.routers[router]
        uid = r.new_user_id(country=country)
        try:
            r.assign_home(uid, country=country)
        except FAILED:
            return uid  # never homed: every pinned request for it must be refused
        self.home[uid] = {r.jurisdiction_for_country(country)}
        return uid

    @rule(user=users, router=st.integers(0, 2), n=st.integers(0, 9))
    def put_profile(self, user: str, router: int, n: int) -> None:
        self._tick()
        self._write(
            user,
            router,
            lambda r: r.put(
                "profile", {"pk": user, "email": f"u{n}@example.test", "display_name": f"n{n}"}
            ),
        )

    @rule(user=users, router=st.integers(0, 2), n=st.integers(0, 9))
    def update_profile(self, user: str, router: int, n: int) -> None:
        self._tick()
        self._write(user, router, lambda r: r.update("profile", {"pk": user}, {"phone": f"+{n}"}))

    @rule(user=users, router=st.integers(0, 2))
    def delete_profile(self, user: str, router: int) -> None:
        self._tick()
        self._write(user, router, lambda r: r.delete("profile", {"pk": user}))

    def _write(self, user: str, router: int, call: Any) -> None:
        r = self.routers[router]
        try:
            written = call(r)
        except FAILED:
            return
        except Exception as exc:  # an unassigned user: refused, and nothing may be stored
            assert user not in self.home, exc
            return
        assert user in self.home, "a pinned write for a user with no home was accepted"
        assert written.route.region in self._allowed_regions(user)
        self.acked[user] = written.version

    @rule(user=users, router=st.integers(0, 2), query=st.booleans())
    def read_profile(self, user: str, router: int, query: bool) -> None:
        self._tick()
        r = self.routers[router]
        before = len(self.reads)
        try:
            if query:
                r.query("profile", user)
            else:
                r.get("profile", {"pk": user})
        except FAILED:
            return
        except Exception as exc:
            assert user not in self.home, exc
            return
        for region, pk in self.reads[before:]:
            assert region in self._allowed_regions(pk), f"read served from {region}"

    @rule(user=users, router=st.integers(0, 2), country=st.sampled_from(COUNTRIES))
    def move(self, user: str, router: int, country: str) -> None:
        self._tick()
        if user not in self.home:
            return
        r = self.routers[router]
        to_j = r.jurisdiction_for_country(country)
        try:
            result = r.move_user(user, country=country)
        except FAILED:
            return
        except Exception as exc:  # an unfinished move to another target must be resumed first
            assert "unfinished move" in str(exc), exc
            return
        if result.status == "done":
            self.home[user] = {to_j}
        else:
            self.home[user] = self.home[user] | {to_j}

    @rule(user=users, router=st.integers(0, 2))
    def resume(self, user: str, router: int) -> None:
        self._tick()
        if len(self.home.get(user, ())) < 2:
            return
        try:
            result = self.routers[router].move_user(user)
        except FAILED:
            return
        if result.status == "done":
            self.home[user] = {result.to_jurisdiction}

    # --- rules: global data ---

    @rule(
        router=st.integers(0, 2), n=st.integers(0, 5), pii=st.sampled_from(["", "email", "Phone"])
    )
    def put_content(self, router: int, n: int, pii: str) -> None:
        self._tick()
        item: dict[str, Any] = {"pk": f"post-{n}", "body": "text"}
        if pii:
            item["author"] = {"meta": [{pii: "x"}]}
        try:
            self.routers[router].put("content", item)
        except ResidencyViolation:
            assert pii, "a clean item was refused"
            return
        except FAILED:
            return
        assert not pii, "a global write holding a PII attribute was accepted"

    # --- rules: faults and time ---

    @rule(region=st.sampled_from(["ap-south-1", "eu-west-1", "us-east-1", "sa-east-1"]))
    def outage(self, region: str) -> None:
        self._tick()
        if len(self.sim.clients.down) < 2:
            self.sim.outage(region)

    @precondition(lambda self: bool(self.sim.clients.down))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        self._tick()
        self.sim.restore(data.draw(st.sampled_from(sorted(self.sim.clients.down))))

    @rule(src=st.sampled_from(ROUTER_REGIONS), dst=st.sampled_from(["ap-south-2", "eu-west-1"]))
    def pause(self, src: str, dst: str) -> None:
        self._tick()
        self.sim.faults.pause(src, dst)
        self.paused.add((src, dst))

    @precondition(lambda self: bool(self.paused))
    @rule()
    def resume_replication(self) -> None:
        self._tick()
        for src, dst in self.paused:
            self.sim.faults.resume(src, dst)
        self.paused.clear()

    @rule(router=st.integers(0, 2))
    def expire_cache(self, router: int) -> None:
        self._tick()
        self.cache_clocks[router].t += 301

    @rule(seconds=st.sampled_from([0.01, 0.3, 2.0]))
    def step(self, seconds: float) -> None:
        self._tick()
        self.sim.step(seconds)

    # --- invariants: raw scans of every region ---

    @invariant()
    def pinned_items_live_only_in_their_jurisdiction(self) -> None:
        for region in self.policy.regions:
            for pk, item in self.sim.items(region, PROFILE).items():
                if pk in self.home and "rk_del" not in item:
                    assert region in self._allowed_regions(pk), (
                        f"a live profile in {region}, outside {sorted(self.home[pk])}"
                    )
                if pk not in self.home and pk in self.acked:
                    raise AssertionError("a profile stored for a user with no home")

    @invariant()
    def acknowledged_writes_are_present(self) -> None:
        for user, version in self.acked.items():
            held = [
                item.get("rk_v")
                for r in self._allowed_regions(user)
                if (item := self.sim.items(r, PROFILE).get(user)) is not None
            ]
            assert version in held or any(str(v) > version for v in held), (
                f"the last acknowledged write of a profile is gone (held: {held})"
            )

    @invariant()
    def no_pii_in_global_tables(self) -> None:
        names = {n.casefold() for n in self.policy.pii_attributes()}
        for region in ROUTER_REGIONS:
            for item in self.sim.items(region, CONTENT).values():
                assert not _has_name(item, names)

    def teardown(self) -> None:
        for region in list(self.sim.clients.down):
            self.sim.restore(region)
        for src, dst in self.paused:
            self.sim.faults.resume(src, dst)
        self.sim.settle()


def _has_name(value: Any, names: set[str]) -> bool:
    if isinstance(value, dict):
        return any(
            (isinstance(k, str) and k.casefold() in names) or _has_name(v, names)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_has_name(v, names) for v in value)
    return False


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulation]:
    policy = load_policy(
        os.path.join(os.path.dirname(__file__), "..", "policies", "social-network.yaml")
    )
    with simulation(policy, seed=11, detect=False) as sim:
        _SIM["sim"] = sim
        yield sim
    _SIM.clear()


@pytest.mark.parametrize(
    "examples",
    [pytest.param(4, id="first-tier"), pytest.param(10, id="second-tier", marks=pytest.mark.slow)],
)
def test_residency_holds_for_any_sequence_of_operations(
    shared_sim: Simulation, examples: int
) -> None:
    if SOAK and examples < 10:
        pytest.skip("make soak runs the second tier's test at 100 examples")
    run_state_machine_as_test(
        Residency,
        settings=settings(
            max_examples=100 if SOAK else examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.reuse, Phase.generate]
            if os.environ.get("REGIONKIT_TEST_NOSHRINK") == "1"
            else list(Phase),
        ),
    )
