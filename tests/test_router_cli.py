"""`regionkit route | users seed | users move | conflicts list | conflicts stats`.

The commands run in-process through ``cli.main`` (exit codes and all). Those that
need a cluster use the shared local-cluster fixture, found the way a user's shell
finds it: through a state file named by ``REGIONKIT_STATE_FILE``.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

import cli
from regions.codec import from_ddb, to_ddb
from regions.conflicts import ConflictLog
from regions.ids import mint_user_id
from regions.local.state import write_state
from residency.records import ConflictRecord

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "policies" / "social-network.yaml")
MINIMAL = str(ROOT / "policies" / "minimal.yaml")
EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog onto the captured stderr: put the old set-up back."""
    was = structlog.is_configured()
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    if was:
        structlog.configure(**saved)


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no .env, no .regionkit/cluster.json
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(tmp_path / "missing.json"))
    return tmp_path


@pytest.fixture
def on_cluster(cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The shared cluster, announced through a state file as `regionkit local up` does."""
    state = tmp_path / "cluster.json"
    write_state(state, cluster.state())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(state))
    return cluster


def run(capsys: pytest.CaptureFixture[str], *args: str, policy: str = MINIMAL) -> tuple[int, str]:
    """Exit code and stdout + stderr of one command; never a traceback."""
    with pytest.raises(SystemExit) as done:
        cli.main(["--policy", policy, *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    code = done.value.code
    return (code if isinstance(code, int) else 0), out + err


def run_json(capsys: pytest.CaptureFixture[str], *args: str, policy: str = MINIMAL) -> Any:
    code, text = run(capsys, *args, "--json", policy=policy)
    assert code == 0, text
    return json.loads(text[text.index("{") :])


# --- regionkit route, without any cluster --------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["nope", "u-eu-west-1-TOO-SHORT", "U-EU-WEST-1-01JD3X9Q4M8V2R6T0BNC5K7H1E", ""]
)
def test_route_a_malformed_id_exits_2(
    no_cluster: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    code, text = run(capsys, "route", bad, policy=EXAMPLE)
    assert code == 2
    assert "malformed user ID" in text and "u-<region>-<26-character ULID>" in text


def test_route_an_id_for_a_region_outside_the_policy_exits_2(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(capsys, "route", mint_user_id("ca-central-1"), policy=EXAMPLE)
    assert code == 2 and "ca-central-1" in text


@pytest.mark.parametrize(
    ("region", "jurisdiction", "chain"),
    [
        ("ap-south-1", "IN", ["ap-south-1", "ap-south-2"]),
        ("sa-east-1", "BR", ["sa-east-1"]),
        ("eu-west-1", "EU", ["eu-west-1", "eu-central-1"]),
        ("us-east-1", "US", ["us-east-1", "us-west-2"]),
    ],
)
def test_route_decides_without_a_cluster_from_the_id_hint(
    no_cluster: Path,
    capsys: pytest.CaptureFixture[str],
    region: str,
    jurisdiction: str,
    chain: list[str],
) -> None:
    uid = mint_user_id(region)
    out = run_json(capsys, "route", uid, "--op", "write", policy=EXAMPLE)
    assert out["decision"] == {
        "region": region,
        "table": "profiles",
        "failover": False,
        "reason": f"home region of the subject ({jurisdiction})",
    }
    assert out["home"] == {
        "region": region,
        "jurisdiction": jurisdiction,
        "status": "active",
        "source": "id-hint",
    }
    assert out["directory"]["reachable"] is False
    assert "no local cluster is running" in out["directory"]["note"]
    assert "using the home region in the user ID" in out["directory"]["note"]
    assert [s["region"] for s in out["chain"]] == chain
    assert all(s["health"] == "not probed (no cluster)" for s in out["chain"])
    assert out["jurisdiction"]["id"] == jurisdiction and out["jurisdiction"]["law"]


def test_route_text_output_names_the_decision_the_jurisdiction_and_the_chain(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(capsys, "route", mint_user_id("ap-south-1"), policy=EXAMPLE)
    assert code == 0
    assert "route: ap-south-1 table profiles, direct" in text
    assert "jurisdiction IN (Digital Personal Data Protection Act 2023 (DPDP))" in text
    assert "ap-south-2" in text and "failover inside IN" in text
    assert "using the home region in the user ID" in text


def test_route_global_data_from_a_region(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uid = mint_user_id("sa-east-1")
    out = run_json(capsys, "route", uid, "-d", "content", "--from-region", "eu-west-1",
                   policy=EXAMPLE)  # fmt: skip
    assert out["decision"]["region"] == "eu-west-1"
    assert out["decision"]["reason"] == "local replica"
    assert out["kind"] == "global" and "jurisdiction" not in out
    assert len(out["chain"]) == 7 and out["chain"][1]["region"] == "eu-central-1"
    # Without --from-region, global data starts from the user's home.
    out = run_json(capsys, "route", uid, "-d", "content", policy=EXAMPLE)
    assert out["decision"]["region"] == "sa-east-1"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--op", "delete"], "--op must be 'read' or 'write'"),
        (["-d", "photos"], "unknown data class 'photos'"),
        (["--from-region", "mars-east-1"], "unknown region 'mars-east-1'"),
    ],
)
def test_route_bad_options_exit_2(
    no_cluster: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, text = run(capsys, "route", mint_user_id("eu-west-1"), *args, policy=EXAMPLE)
    assert code == 2 and says in text


# --- commands that need a cluster, without one ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["users", "seed", "--count", "3"],
        ["users", "move", mint_user_id(EU1), "--country", "US"],
        ["conflicts", "list"],
        ["conflicts", "stats", "--json"],
    ],
)
def test_commands_without_a_cluster_exit_1_clearly(
    no_cluster: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, text = run(capsys, *args)
    assert code == 1
    assert "no local cluster is running" in text and "regionkit local up" in text


def _dead_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["users", "seed", "--count", "2"], "seeding users failed"),
        (["users", "move", mint_user_id(EU1), "--region", EU2], "the move did not complete"),
        (["conflicts", "list"], "cannot read the conflict log: no region answered"),
        (["conflicts", "stats"], "cannot read the conflict log: no region answered"),
    ],
)
def test_commands_against_a_dead_cluster_exit_1_clearly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    regions = [EU1, EU2, US]
    endpoints = {r: f"http://127.0.0.1:{p}" for r, p in zip(regions, _dead_ports(3), strict=True)}
    state = tmp_path / "cluster.json"
    write_state(state, {"endpoints": endpoints, "pids": {"owner": 1, "servers": {}}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(state))
    code, text = run(capsys, *args)
    assert code == 1, text
    assert says in text and "is the local cluster running?" in text


def test_users_move_needs_exactly_one_target(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uid = mint_user_id(EU1)
    for args in ([], ["--country", "US", "--region", US]):
        code, text = run(capsys, "users", "move", uid, *args)
        assert code == 2 and "--country XX or --region R" in text
    code, text = run(capsys, "users", "move", "not-an-id", "--country", "US")
    assert code == 2 and "malformed user ID" in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], "neither an ISO 8601 time"),
        (["--since", "99999999999999999999d"], "reaches before year 1"),
        (["--since", "5000000w"], "reaches before year 1"),
        (["--kind", "clash"], "--kind must be one of concurrent, inversion, lost_write"),
        (["--data-class", "photos"], "unknown data class 'photos'"),
    ],
)
def test_conflicts_list_rejects_bad_filters(
    no_cluster: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, text = run(capsys, "conflicts", "list", *args)
    assert code == 2 and says in text


# --- on the local cluster ---------------------------------------------------------------------


def _raw(cluster: Any, region: str, table: str, pk: str) -> dict[str, Any] | None:
    item = cluster.client(region).get_item(
        TableName=cluster.table_name(table), Key=to_ddb({"pk": pk}), ConsistentRead=True
    )
    return from_ddb(item.get("Item"))


def test_users_seed_creates_users_in_every_jurisdiction(
    on_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_json(capsys, "users", "seed", "--count", "9")
    assert out["created"] == 9
    assert out["by_jurisdiction"] == {"EU": 3, "US": 6}
    assert out["by_home_region"] == {EU1: 3, US: 6}
    assert sorted({u["country"] for u in out["users"]}) == ["DE", "FR", "IE", "NG", "US"]
    assert {u["jurisdiction"] for u in out["users"] if u["country"] == "NG"} == {"US"}
    assert out["fake_pii_attributes"] == ["display_name", "email"]
    for user in out["users"]:
        profile = _raw(on_cluster, user["home_region"], "profiles", user["user_id"])
        assert profile is not None and profile["email"].endswith("@example.invalid")
        entry = _raw(on_cluster, user["home_region"], "directory", user["user_id"])
        assert entry is not None and entry["home_region"] == user["home_region"]
        other = EU1 if user["home_region"] == US else US
        assert _raw(on_cluster, other, "profiles", user["user_id"]) is None

    code, text = run(capsys, "users", "seed", "-n", "4")
    assert code == 0 and "4 users created" in text
    assert "@example.invalid" not in text and "Seed User" not in text  # values never shown


def test_route_on_the_cluster_reads_the_directory_and_probes_health(
    on_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user = run_json(capsys, "users", "seed", "--count", "1")["users"][0]  # DE: home EU1
    out = run_json(capsys, "route", user["user_id"])
    assert out["home"]["source"] == "directory" and out["directory"]["reachable"]
    assert out["decision"]["region"] == EU1 and not out["decision"]["failover"]
    assert [(s["region"], s["health"]) for s in out["chain"]] == [(EU1, "up"), (EU2, "up")]

    on_cluster.outage(EU1, "refuse")
    out = run_json(capsys, "route", user["user_id"], "--op", "write")
    assert out["decision"]["region"] == EU2 and out["decision"]["failover"]
    assert out["chain"][0]["health"].startswith("unreachable")
    assert out["chain"][0]["available"] is False


def test_users_move_prints_the_steps(on_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = run_json(capsys, "users", "seed", "--count", "1")["users"][0]
    uid = user["user_id"]
    code, text = run(capsys, "users", "move", uid, "--country", "US")
    assert code == 0, text
    for step in (
        f"1. directory: moving {EU1} -> {US}",
        f"2. profile: copied to {US}",
        f"3. profile: fenced in {EU1}, {EU2}",
        f"4. directory: home is {US} (verifying)",
        f"5. directory: home is {US}",
        "ok done",
    ):
        assert step in text
    fence = _raw(on_cluster, EU1, "profiles", uid)
    assert fence is not None and fence["rk_del"] == "moved" and "email" not in fence
    assert _raw(on_cluster, US, "profiles", uid) is not None
    again = run_json(capsys, "users", "move", uid, "--region", US)
    assert again["steps"] == ["already there"]
    code, text = run(capsys, "users", "move", "--resume")
    assert code == 0 and "no pending move" in text


def test_a_malformed_conflict_record_is_named_never_shown(
    on_cluster: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One record that does not parse is listed by pseudonym and the fields at fault; the
    rest of the log is still read, and nothing it holds reaches the terminal."""
    tag = uuid.uuid4().hex[:8]
    _plant(on_cluster, f"good-{tag}", "concurrent", "content", timedelta(minutes=1))
    marker, pk = f"zelda.{tag}@example.org", f"Zelda Markerface {tag}"
    table = on_cluster.table_prefix + on_cluster.policy.system.conflict_log_table
    raw = on_cluster.clients.client("dynamodb", EU1)
    bad = {"pk": {"S": pk}, "key": {"S": marker}, "kind": {"S": marker}, marker: {"S": "x"}}
    raw.put_item(TableName=table, Item=bad)
    try:
        out = run_json(capsys, "conflicts", "list", "--key", f"good-{tag}")
        assert len(out["conflicts"]) == 1  # the rest is read
        named = run(capsys, "audit", "pseudonym", pk, "--table", table)[1].strip()
        [entry] = [u for u in out["unreadable"] if u["record"] == named]
        assert {"kind", "table", "winner_version"} <= set(entry["fields"])
        assert entry["fields"][-1] == "1 unexpected attribute"  # counted, never named
        monkeypatch.setenv("COLUMNS", "200")
        texts = [json.dumps(out)]
        for args in (("conflicts", "list"), ("conflicts", "stats")):
            code, text = run(capsys, *args)
            assert code == 0
            texts.append(text)
        texts.append(json.dumps(run_json(capsys, "conflicts", "stats")))
        for text in texts:
            assert marker not in text and "Markerface" not in text
        assert "unreadable record" in texts[1] and "unreadable record" in texts[2]
    finally:
        raw.delete_item(TableName=table, Key={"pk": {"S": pk}})


def _plant(cluster: Any, key: str, kind: str, data_class: str, age: timedelta) -> None:
    now = datetime.now(UTC)
    rec = ConflictRecord(
        conflict_id=uuid.uuid4().hex,
        table=cluster.table_name(data_class),
        data_class=data_class,
        key=key,
        kind=kind,
        winner_version=f"{int((now - age).timestamp() * 1000):012x}.0000.{US}",
        loser_version=f"{int((now - age).timestamp() * 1000):012x}.0000.{EU1}",
        winner_region=US,
        loser_region=EU1,
        resolution="lww",
        occurred_at=now - age,
        detected_at=now,
        detected_in=US,
    )
    log = ConflictLog(cluster.policy, cluster.clients, table_prefix=cluster.table_prefix)
    for region in cluster.policy.regions:  # as every region's detector would
        log.record(region, rec)


def test_conflicts_list_and_stats(
    on_cluster: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    _plant(on_cluster, f"new-{tag}", "concurrent", "content", timedelta(minutes=5))
    _plant(on_cluster, f"old-{tag}", "concurrent", "content", timedelta(days=3))
    _plant(on_cluster, f"inv-{tag}", "inversion", "content", timedelta(minutes=1))

    out = run_json(capsys, "conflicts", "list", "--since", "1h", "-d", "content", "-k",
                   "concurrent")  # fmt: skip
    table = on_cluster.table_name("content")
    named = {k: run(capsys, "audit", "pseudonym", f"{k}-{tag}", "--table", table)[1].strip()
             for k in ("new", "old", "inv")}  # fmt: skip
    assert all(n.startswith("pn-") for n in named.values())
    items = {c["item"] for c in out["conflicts"]}  # named as the audit names them
    assert named["new"] in items and named["old"] not in items and named["inv"] not in items
    assert out["region"] == EU1 and out["total"] >= 3
    out = run_json(capsys, "conflicts", "list", "--since", "2020-01-01T00:00:00Z")
    assert set(named.values()) <= {c["item"] for c in out["conflicts"]}
    assert tag not in json.dumps(out)  # no key is shown
    out = run_json(capsys, "conflicts", "list", "--key", f"old-{tag}")
    assert [c["item"] for c in out["conflicts"]] == [named["old"]]

    stats = run_json(capsys, "conflicts", "stats")
    assert stats["total"] >= 3 and stats["by_kind"]["concurrent"] >= 2
    assert stats["by_kind"]["inversion"] >= 1 and stats["by_data_class"]["content"] >= 3
    assert stats["by_regions"][f"{US} > {EU1}"] >= 3

    monkeypatch.setenv("COLUMNS", "160")
    code, text = run(capsys, "conflicts", "list", "--since", "10m")
    assert code == 0 and named["new"] in text and named["old"] not in text and tag not in text
    code, text = run(capsys, "conflicts", "stats")
    assert code == 0 and "logged conflicts" in text and "concurrent" in text

    on_cluster.outage(EU1, "refuse")  # the nearest region is gone: read the next one
    out = run_json(capsys, "conflicts", "list", "--since", "1h")
    assert out["region"] != EU1 and named["new"] in {c["item"] for c in out["conflicts"]}
