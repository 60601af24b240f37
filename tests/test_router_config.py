"""Library configuration is explicit (issue #18 item 6).

``RegionRouter(policy, config=RouterConfig(...))`` and ``RegionRouter(policy)`` read no
``REGIONKIT_*`` variable, no ``.env`` and no cluster state file; ``RegionRouter.from_env()``
(and the CLI) read all three. CLI-only settings are not part of the library's config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from regions import RegionRouter, RouterConfig
from residency.errors import ConfigError, SettingsError
from residency.policy import load_policy
from residency.settings import DEFAULT_STATE_FILE, Settings

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "policies" / "minimal.yaml"
EU1 = "eu-west-1"
STATE_ENDPOINTS = {r: f"http://127.0.0.1:{5100 + i}" for i, r in enumerate(["eu-central-1", EU1])}
CLI_ONLY = {
    "policy",
    "policy_max_bytes",
    "log_format",
    "log_level",
    "state_file",
    "drill_history",
    "signing_key_file",
    "signing_kms_key",
    "partition",
}


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a .env and a `local up` state file, and REGIONKIT_* set."""
    for key in [k for k in os.environ if k.startswith("REGIONKIT_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "REGIONKIT_HLC_MAX_OFFSET_MS=777\nREGIONKIT_DIRECTORY_CACHE_SIZE=12\n", encoding="utf-8"
    )
    state = tmp_path / DEFAULT_STATE_FILE
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"endpoints": STATE_ENDPOINTS, "pids": {}}), encoding="utf-8")
    monkeypatch.setenv("REGIONKIT_POLICY", str(MINIMAL))
    monkeypatch.setenv("REGIONKIT_TABLE_PREFIX", "fromenv_")
    monkeypatch.setenv("REGIONKIT_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("REGIONKIT_REGION", EU1)
    return tmp_path


def _bogus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values that would break (or visibly change) a router that read them."""
    monkeypatch.setenv("REGIONKIT_MODE", "bogus-mode")
    monkeypatch.setenv("REGIONKIT_REGION", "xx-nowhere-9")
    monkeypatch.setenv("REGIONKIT_ENDPOINTS", "not json")
    monkeypatch.setenv("REGIONKIT_CONNECT_TIMEOUT", "-1")
    monkeypatch.setenv("REGIONKIT_METRICS", "bogus")
    monkeypatch.setenv("REGIONKIT_HLC_ADOPT_DRIFT_MS", "not a number")


def test_an_explicit_config_ignores_the_environment_dotenv_and_state_file(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bogus(monkeypatch)
    config = RouterConfig(mode="aws", region=EU1, table_prefix="mine_")
    with RegionRouter(load_policy(MINIMAL), config=config) as router:
        assert router.config is config
        assert router.region == EU1
        assert (router.config.table_prefix, router.config.read_timeout) == ("mine_", 1.0)
        assert router.config.endpoints == {}  # not the state file's
        assert router.config.hlc_max_offset_ms == 500  # not the .env's
        assert router.clock.adopt_drift_ms == 0  # not the environment's
        assert router.routes.tables["content"] == "mine_content"
    with RegionRouter(load_policy(MINIMAL), config=RouterConfig(hlc_adopt_drift_ms=10_000)) as r:
        assert r.clock.adopt_drift_ms == 10_000


def test_a_router_given_nothing_reads_nothing(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bogus(monkeypatch)
    with RegionRouter(load_policy(MINIMAL)) as router:
        assert router.config == RouterConfig()
        assert type(router.config) is RouterConfig
        assert router.config.endpoints == {} and router.config.table_prefix == ""
        assert router.region is None


def test_router_config_itself_reads_nothing(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bogus(monkeypatch)
    assert RouterConfig() == RouterConfig.model_construct()  # the defaults, nothing else
    assert RouterConfig(_env_file=".env").hlc_max_offset_ms == 500  # type: ignore[call-arg]


def test_from_env_honours_the_environment_dotenv_and_state_file(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGIONKIT_HLC_ADOPT_DRIFT_MS", "60000")
    with RegionRouter.from_env() as router:
        assert router.clock.adopt_drift_ms == 60_000
        config = router.config
        assert isinstance(config, Settings)  # a Settings is a RouterConfig
        assert router.policy.name == load_policy(MINIMAL).name  # REGIONKIT_POLICY
        assert router.region == EU1  # REGIONKIT_REGION
        assert (config.table_prefix, config.read_timeout) == ("fromenv_", 7.5)  # env
        assert (config.hlc_max_offset_ms, config.directory_cache_size) == (777, 12)  # .env
        assert config.endpoints == STATE_ENDPOINTS  # the `local up` state file
        assert router.routes.tables["content"] == "fromenv_content"


def test_from_env_takes_a_policy_and_router_arguments(environment: Path) -> None:
    policy = load_policy(MINIMAL)
    with RegionRouter.from_env(policy, region="eu-central-1") as router:
        assert router.policy is policy
        assert router.region == "eu-central-1"
        assert router.config.table_prefix == "fromenv_"


def test_router_config_has_no_cli_only_settings() -> None:
    assert set(RouterConfig.model_fields) & CLI_ONLY == set()
    assert set(Settings.model_fields) >= CLI_ONLY
    assert set(RouterConfig.model_fields) <= set(Settings.model_fields)
    for name in CLI_ONLY:
        with pytest.raises(SettingsError, match="there is no such setting"):
            RouterConfig(**{name: "x"})


def test_a_bad_config_value_is_a_settings_error_that_pickles() -> None:
    """One error tree: exit 2 with the field named, never pydantic's ValidationError; a
    secret's value is never shown."""
    import pickle

    with pytest.raises(SettingsError) as err:
        RouterConfig(read_timeout=-1)
    assert isinstance(err.value, ConfigError) and "read_timeout" in str(err.value)  # exit 2
    assert "pass a valid read_timeout" in str(err.value)
    assert pickle.loads(pickle.dumps(err.value)).args == err.value.args
    with pytest.raises(SettingsError) as secret:
        RouterConfig(pseudonym_key="short")
    assert "short" not in str(secret.value)


def test_router_config_is_immutable() -> None:
    config = RouterConfig(region=EU1)
    with pytest.raises(ValidationError):
        config.region = "us-east-1"  # type: ignore[misc]


def test_the_router_keyword_is_config() -> None:
    with pytest.raises(TypeError, match="settings"):
        RegionRouter(load_policy(MINIMAL), settings=RouterConfig())  # type: ignore[call-arg]
    assert not hasattr(RegionRouter, "from_settings")


def test_the_local_clusters_config_reads_nothing_but_takes_a_base(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cluster.config()`` points at the cluster from its own values; the CLI passes its
    settings as the base so a service's REGIONKIT_* timeouts still apply to a drill."""
    from types import SimpleNamespace

    from regions.local.cluster import LocalCluster
    from residency.settings import load_settings

    cluster: Any = SimpleNamespace(endpoints=STATE_ENDPOINTS, table_prefix="cl_")
    cli = load_settings()  # REGIONKIT_READ_TIMEOUT=7.5 from the environment
    _bogus(monkeypatch)
    alone = LocalCluster.config(cluster, read_timeout=2.0)
    assert type(alone) is RouterConfig
    assert (alone.mode, alone.endpoints, alone.table_prefix) == ("local", STATE_ENDPOINTS, "cl_")
    assert (alone.read_timeout, alone.hlc_max_offset_ms) == (2.0, 500)
    based = LocalCluster.config(cluster, cli)
    assert isinstance(based, Settings) and based.read_timeout == 7.5
    assert (based.endpoints, based.table_prefix) == (STATE_ENDPOINTS, "cl_")
