"""Settings: sources and their priority, immutability, and the loopback guard of local mode."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from residency.errors import ConfigError, SettingsError
from residency.settings import DEFAULT_STATE_FILE, Settings, is_loopback_url, load_settings

AWS_ENDPOINT = "https://dynamodb.eu-west-1.amazonaws.com"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no .env, no state file) and no REGIONKIT_* variables."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("REGIONKIT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def _write_state(path: Path, endpoints: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"endpoints": endpoints, "pids": {}}), encoding="utf-8")
    return path


def test_defaults() -> None:
    s = load_settings()
    assert s.mode == "local"
    assert s.policy == Path("policies/social-network.yaml")
    assert s.endpoints == {}
    assert s.endpoint_for("us-east-1") is None
    assert s.table_name("profiles") == "profiles"


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONKIT_REGION", "eu-west-1")
    monkeypatch.setenv("REGIONKIT_TABLE_PREFIX", "staging-")
    monkeypatch.setenv("REGIONKIT_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("REGIONKIT_ENDPOINTS", '{"eu-west-1": "http://127.0.0.1:5001"}')
    monkeypatch.setenv("REGION", "ap-south-1")  # unprefixed: ignored
    s = load_settings()
    assert s.region == "eu-west-1"
    assert s.table_name("profiles") == "staging-profiles"
    assert s.max_attempts == 5
    assert s.endpoint_for("eu-west-1") == "http://127.0.0.1:5001"


def test_keyword_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONKIT_REGION", "eu-west-1")
    assert load_settings(region="us-east-1").region == "us-east-1"
    # None means "not given" (how the CLI passes options the user left out)
    assert load_settings(region=None).region == "eu-west-1"


def test_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "REGIONKIT_REGION=sa-east-1\nREGIONKIT_LOG_LEVEL=debug\n", encoding="utf-8"
    )
    s = load_settings()
    assert (s.region, s.log_level) == ("sa-east-1", "debug")
    monkeypatch.setenv("REGIONKIT_REGION", "eu-west-1")
    assert load_settings().region == "eu-west-1"  # the environment beats .env


def test_misspelt_dotenv_line_is_named_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REGIONKIT_REGOIN=sa-east-1\n", encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "REGIONKIT_REGOIN" in str(info.value)
    assert "did you mean REGIONKIT_REGION?" in str(info.value)


def test_settings_are_frozen() -> None:
    s = load_settings(region="eu-west-1")
    with pytest.raises(ValidationError):
        s.region = "us-east-1"  # type: ignore[misc]
    assert s.region == "eu-west-1"


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(regoin="eu-west-1")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url",
    [
        AWS_ENDPOINT,
        "http://10.0.0.5:8000",
        "http://192.168.1.10",
        "http://dynamodb.local:8000",
        "http://127.0.0.1.nip.io:5000",
    ],
)
def test_local_mode_refuses_non_loopback_endpoints(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(endpoints={"eu-west-1": url})
    err = info.value
    assert isinstance(err, ConfigError)
    assert url in str(err)
    assert "local mode refuses" in str(err)
    assert "REGIONKIT_MODE=aws" in str(err)
    assert err.setting == "endpoints"  # type: ignore[attr-defined]


def test_local_mode_refuses_non_loopback_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGIONKIT_ENDPOINTS", json.dumps({"us-east-1": AWS_ENDPOINT}))
    with pytest.raises(SettingsError, match=re.escape(AWS_ENDPOINT)):
        load_settings()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5001",
        "http://localhost:5002",
        "http://[::1]:5003",
        "https://127.0.0.2:443",
        "http://LOCALHOST:1",
    ],
)
def test_local_mode_accepts_loopback(url: str) -> None:
    assert is_loopback_url(url)
    assert load_settings(endpoints={"us-east-1": url}).endpoints == {"us-east-1": url}


def test_aws_mode_accepts_real_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONKIT_MODE", "aws")
    s = load_settings(endpoints={"eu-west-1": AWS_ENDPOINT})
    assert s.mode == "aws"
    assert s.endpoint_for("eu-west-1") == AWS_ENDPOINT


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:5000", "http://"])
def test_endpoint_must_be_an_http_url(url: str) -> None:
    with pytest.raises(SettingsError, match="not an http"):
        load_settings(mode="aws", endpoints={"eu-west-1": url})


def test_bad_json_in_the_environment_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONKIT_ENDPOINTS", "us-east-1=http://127.0.0.1:5001")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.setting == "endpoints"  # type: ignore[attr-defined]
    assert "REGIONKIT_ENDPOINTS to JSON" in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("max_attempts", 0, "greater than or equal to 1"),
        ("mode", "cloud", "'local' or 'aws'"),
        ("table_prefix", "bad prefix!", "pattern"),
        ("log_level", "verbose", "debug"),
    ],
)
def test_invalid_values_name_the_setting(setting: str, value: object, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**{setting: value})
    message = str(info.value)
    assert message.startswith(f"setting {setting}={value!r} is invalid")
    assert fragment in message
    assert f"REGIONKIT_{setting.upper()}" in message


def test_state_file_supplies_endpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = {"us-east-1": "http://127.0.0.1:5001", "eu-west-1": "http://127.0.0.1:5002"}
    state = _write_state(tmp_path / "run" / "cluster.json", endpoints)
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(state))
    s = load_settings()
    assert s.endpoints == endpoints
    assert s.mode == "local"
    assert s.state_file == state


def test_state_file_default_location(tmp_path: Path) -> None:
    endpoints = {"sa-east-1": "http://127.0.0.1:5009"}
    _write_state(tmp_path / DEFAULT_STATE_FILE, endpoints)
    assert load_settings().endpoints == endpoints


def test_state_file_has_the_lowest_priority_per_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-settings merges mappings across sources: overrides replace single regions."""
    state = _write_state(
        tmp_path / "cluster.json",
        {"us-east-1": "http://127.0.0.1:5001", "eu-west-1": "http://127.0.0.1:5002"},
    )
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(state))
    monkeypatch.setenv("REGIONKIT_ENDPOINTS", '{"us-east-1": "http://127.0.0.1:6001"}')
    assert load_settings().endpoints == {
        "us-east-1": "http://127.0.0.1:6001",
        "eu-west-1": "http://127.0.0.1:5002",
    }
    s = load_settings(endpoints={"eu-west-1": "http://127.0.0.1:7002"})
    assert s.endpoints == {
        "us-east-1": "http://127.0.0.1:6001",
        "eu-west-1": "http://127.0.0.1:7002",
    }


def test_state_file_with_a_non_loopback_endpoint_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _write_state(tmp_path / "cluster.json", {"us-east-1": AWS_ENDPOINT})
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(state))
    with pytest.raises(SettingsError, match="local mode refuses"):
        load_settings()


@pytest.mark.parametrize("content", ["", "{not json", '{"endpoints": ["a"]}', '["x"]'])
def test_unreadable_state_file_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    state = tmp_path / "cluster.json"
    state.write_text(content, encoding="utf-8")
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(state))
    assert load_settings().endpoints == {}


def test_missing_state_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONKIT_STATE_FILE", str(tmp_path / "absent.json"))
    assert load_settings().endpoints == {}


# --- issue 15 item 1: every source of the service region, and every conflict ----------------


@pytest.fixture
def no_aws_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS_REGION, AWS_DEFAULT_REGION or AWS_PROFILE; an empty AWS config file."""
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    config = tmp_path / "aws-config"
    config.write_text("", encoding="utf-8")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return config


def _source(s: Settings, name: str, **overrides: object) -> tuple[str, str, str]:
    from residency.settings import explain_settings

    row = next(r for r in explain_settings(s, **overrides) if r.name == name)
    return row.value, row.source, row.note


def test_aws_mode_takes_the_region_from_aws_region(
    no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGIONKIT_MODE", "aws")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")  # AWS_REGION wins, as in the SDKs
    s = load_settings()
    assert s.region == "eu-west-1"
    assert _source(s, "region")[:2] == ("eu-west-1", "env AWS_REGION")


def test_aws_mode_takes_the_region_from_aws_default_region(
    no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    s = load_settings(mode="aws")
    assert s.region == "sa-east-1"
    assert _source(s, "region", mode="aws")[1] == "env AWS_DEFAULT_REGION"


def test_aws_mode_takes_the_region_from_the_profile(
    no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_aws_region.write_text(
        "[default]\nregion = us-west-2\n[profile prod]\nregion = eu-central-1\n", encoding="utf-8"
    )
    assert load_settings(mode="aws").region == "us-west-2"
    monkeypatch.setenv("AWS_PROFILE", "prod")
    s = load_settings(mode="aws")
    assert s.region == "eu-central-1"
    assert _source(s, "region", mode="aws")[1] == "AWS profile 'prod' (AWS config file)"


def test_regionkit_region_beats_every_aws_source(
    no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("REGIONKIT_REGION", "us-east-1")
    s = load_settings(mode="aws")
    assert s.region == "us-east-1"
    value, source, note = _source(s, "region", mode="aws")
    assert (value, source) == ("us-east-1", "env REGIONKIT_REGION")
    assert note == "env AWS_REGION says eu-west-1, which env REGIONKIT_REGION overrides"


def test_local_mode_never_takes_the_aws_region(
    no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert load_settings().region is None


def test_aws_mode_without_any_region_is_an_exit_2_error(no_aws_region: Path) -> None:
    from regions.router import RegionRouter
    from residency.policy import load_policy

    s = load_settings(mode="aws")
    assert s.region is None
    with pytest.raises(SettingsError) as info:
        s.require_region()
    assert isinstance(info.value, ConfigError)  # the CLI's exit 2
    assert "REGIONKIT_REGION, AWS_REGION, AWS_DEFAULT_REGION" in str(info.value)
    policy = load_policy(Path(__file__).resolve().parent.parent / "policies/social-network.yaml")
    with pytest.raises(SettingsError, match="needs the region this service runs in"):
        RegionRouter(policy, config=s)  # never a silent ap-south-1


def test_aws_mode_never_reads_the_state_file(tmp_path: Path, no_aws_region: Path) -> None:
    _write_state(tmp_path / DEFAULT_STATE_FILE, {"us-east-1": "http://127.0.0.1:5001"})
    assert load_settings().endpoints == {"us-east-1": "http://127.0.0.1:5001"}  # local: read
    s = load_settings(mode="aws", region="us-east-1")
    assert s.endpoints == {}  # aws: never
    assert _source(s, "endpoints", mode="aws")[2].startswith("aws mode ignores the state file")


def test_aws_mode_from_dotenv_never_reads_the_state_file(
    tmp_path: Path, no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_state(tmp_path / DEFAULT_STATE_FILE, {"us-east-1": "http://127.0.0.1:5001"})
    (tmp_path / ".env").write_text("REGIONKIT_MODE=aws\nAWS_REGION=eu-west-1\n", encoding="utf-8")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = load_settings()
    assert (s.mode, s.endpoints, s.region) == ("aws", {}, "eu-west-1")


def test_dotenv_may_hold_other_tools_variables(tmp_path: Path, no_aws_region: Path) -> None:
    (tmp_path / ".env").write_text(
        "AWS_PROFILE=prod\nDATABASE_URL=postgres://x\nREGIONKIT_LOG_LEVEL=info\n",
        encoding="utf-8",
    )
    s = load_settings()
    assert s.log_level == "info"
    assert _source(s, "log_level")[1] == ".env (.env)"


def test_environment_beats_dotenv_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("REGIONKIT_READ_TIMEOUT=5\n", encoding="utf-8")
    monkeypatch.setenv("REGIONKIT_READ_TIMEOUT", "0.8")
    s = load_settings()
    assert s.read_timeout == 0.8
    assert _source(s, "read_timeout") == (
        "0.8",
        "env REGIONKIT_READ_TIMEOUT",
        "overrides REGIONKIT_READ_TIMEOUT in .env",
    )


def test_option_beats_environment_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONKIT_READ_TIMEOUT", "0.8")
    s = load_settings(read_timeout=0.4)
    assert _source(s, "read_timeout", read_timeout=0.4) == (
        "0.4",
        "option",
        "overrides REGIONKIT_READ_TIMEOUT from the environment",
    )


def test_state_file_source_is_named(tmp_path: Path) -> None:
    _write_state(tmp_path / DEFAULT_STATE_FILE, {"us-east-1": "http://127.0.0.1:5001"})
    s = load_settings()
    assert _source(s, "endpoints")[1] == f"state file ({DEFAULT_STATE_FILE})"
    assert _source(s, "connect_timeout")[1] == "default"


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from residency.settings import explain_settings

    key = "0123456789abcdef" * 4
    monkeypatch.setenv("REGIONKIT_PSEUDONYM_KEY", key)
    rows = explain_settings(load_settings())
    assert all(key not in r.value and key not in r.note for r in rows)
    assert _source(load_settings(), "pseudonym_key")[0] == "(set)"


def test_a_wrong_or_misspelt_secret_is_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped key (63 hex digits) and a misspelt name carrying one: the error names
    the setting and the fix, never the value (review finding: it echoed both)."""
    wrong = "5e" * 31 + "5"
    monkeypatch.setenv("REGIONKIT_PSEUDONYM_KEY", wrong)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "REGIONKIT_PSEUDONYM_KEY" in str(caught.value) or "pseudonym_key" in str(caught.value)
    assert wrong not in str(caught.value) and wrong[:16] not in repr(caught.value.__dict__)
    monkeypatch.delenv("REGIONKIT_PSEUDONYM_KEY")
    (tmp_path / ".env").write_text(f"REGIONKIT_PSEUDONYM_KY={'ab' * 32}\n", encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "REGIONKIT_PSEUDONYM_KEY" in str(caught.value)  # the fix: did you mean ...
    assert "abab" not in str(caught.value) and "abab" not in repr(caught.value.__dict__)


def test_pseudonyms_stay_the_same_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key set, each run used a random key: two `audit pseudonym` runs disagreed
    and a receipt could not be tied to its subject (review finding)."""
    first = load_settings().evidence_pseudonymizer()
    again = load_settings().evidence_pseudonymizer()  # a later run, the same key file
    assert first("u-1", scope="subject") == again("u-1", scope="subject")
    key_file = tmp_path / ".regionkit" / "pseudonym-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o644)
    with pytest.raises(SettingsError, match="open to other users"):
        load_settings().pseudonymizer()
    key_file.unlink()

    monkeypatch.setenv("REGIONKIT_MODE", "aws")
    monkeypatch.setenv("REGIONKIT_REGION", "eu-west-1")
    aws = load_settings()
    assert aws.pseudonymizer() is not None  # a service may run with a per-process key...
    with pytest.raises(SettingsError, match="REGIONKIT_PSEUDONYM_KEY"):
        aws.evidence_pseudonymizer()  # ...but no evidence is written with one
    assert not key_file.exists()  # aws mode never creates the file
    for placeholder in ("00" * 32, "ab" * 32):
        monkeypatch.setenv("REGIONKIT_PSEUDONYM_KEY", placeholder)
        with pytest.raises(SettingsError):
            load_settings()


def test_retry_defaults_are_the_fast_failover_ones() -> None:
    s = load_settings()
    assert (s.connect_timeout, s.read_timeout, s.max_attempts) == (0.5, 1.0, 3)
    assert s.probe_lease_seconds == 3.0
    assert not s.hedge_reads


def _regionkit(*args: str, cwd: Path, env: dict[str, str]) -> Any:
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "regionkit"
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_config_show_names_every_source(tmp_path: Path, no_aws_region: Path) -> None:
    policy = Path(__file__).resolve().parent.parent / "policies" / "social-network.yaml"
    (tmp_path / ".env").write_text("AWS_PROFILE=prod\nREGIONKIT_MODE=aws\n", encoding="utf-8")
    _write_state(tmp_path / DEFAULT_STATE_FILE, {"eu-west-1": "http://127.0.0.1:5001"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGIONKIT_", "AWS_PROFILE"))}
    env |= {"AWS_REGION": "eu-west-1", "REGIONKIT_READ_TIMEOUT": "0.8"}
    proc = _regionkit("--policy", str(policy), "config", "show", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["mode"]["source"] == ".env (.env)"
    assert (rows["region"]["value"], rows["region"]["source"]) == ("eu-west-1", "env AWS_REGION")
    assert rows["read_timeout"]["source"] == "env REGIONKIT_READ_TIMEOUT"
    assert rows["endpoints"]["value"] == "{}"
    assert "ignores the state file" in rows["endpoints"]["note"]
    assert rows["policy"]["source"] == "option"


def test_aws_mode_without_region_exits_2_from_the_cli(tmp_path: Path, no_aws_region: Path) -> None:
    policy = Path(__file__).resolve().parent.parent / "policies" / "social-network.yaml"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGIONKIT_", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"))
    }
    env["REGIONKIT_MODE"] = "aws"
    user = "u-eu-west-1-01M8S27PWKD5QPKZNEY6GE7HS4"
    proc = _regionkit("--policy", str(policy), "route", user, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "REGIONKIT_REGION" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_dotenv_region_beats_the_aws_environment(
    tmp_path: Path, no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "REGIONKIT_MODE=aws\nREGIONKIT_REGION=sa-east-1\n", encoding="utf-8"
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    s = load_settings()
    assert (s.mode, s.region) == ("aws", "sa-east-1")
    value, source, note = _source(s, "region")
    assert (value, source) == ("sa-east-1", ".env (.env)")
    assert note == "env AWS_DEFAULT_REGION says us-west-2, which .env (.env) overrides"


def test_option_mode_local_beats_aws_mode_in_the_environment(
    tmp_path: Path, no_aws_region: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_state(tmp_path / DEFAULT_STATE_FILE, {"eu-west-1": "http://127.0.0.1:5001"})
    monkeypatch.setenv("REGIONKIT_MODE", "aws")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = load_settings(mode="local")
    assert (s.mode, s.region) == ("local", None)  # no AWS region in local mode
    assert s.endpoints == {"eu-west-1": "http://127.0.0.1:5001"}  # the state file again
