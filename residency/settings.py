"""Configuration: how the router reaches AWS, and what an entry point reads to build it.

Two classes, one a subclass of the other:

* :class:`RouterConfig` is the library's configuration: the region, the mode and
  endpoints, timeouts, retries, breakers, hedging, caches, the pseudonym key. It is
  built from its keyword arguments **only**: constructing one reads no environment
  variable, no ``.env`` and no file, so a service (or a test) that passes one gets
  exactly what it wrote, wherever it runs. ``RegionRouter(policy)`` uses
  ``RouterConfig()``.
* :class:`Settings` adds what only entry points need (the policy file, logging, the
  drill history, signing keys, the cluster state file, the ARN partition) and the
  sources below. The CLI, ``RegionRouter.from_env()``, the CDK app and the detector
  Lambda build one with :func:`load_settings`. A ``Settings`` *is* a
  ``RouterConfig``, so an entry point passes its settings straight to the router.

Sources of :class:`Settings`, highest priority first:

1. keyword arguments (``Settings(region="eu-west-1")``);
2. environment variables prefixed ``REGIONKIT_`` (``REGIONKIT_ENDPOINTS='{"us-east-1": ...}'``);
3. a ``.env`` file in the working directory (only its ``REGIONKIT_*`` lines are read: it
   may hold other tools' variables, such as ``AWS_PROFILE``);
4. ``local`` mode only: the local-cluster state file written by ``regionkit local up``
   (``.regionkit/cluster.json`` unless ``REGIONKIT_STATE_FILE`` says otherwise), which
   supplies the per-region endpoints of the running cluster. It is never read in
   ``aws`` mode;
5. ``aws`` mode only, for ``region``: boto3's own resolution (``AWS_REGION``, then
   ``AWS_DEFAULT_REGION``, then the ``region`` of the profile in ``~/.aws/config``);
6. defaults.

:func:`explain_settings` reports where each effective value came from (``regionkit
config show``). Settings are immutable once built. In ``local`` mode every endpoint
must be on loopback: a typo must never send test traffic to a real AWS account.

Timeouts and retries (issue 15): botocore makes one attempt inside the router, and
the router owns the retry policy (:mod:`regions.transport`). The defaults are chosen
for a call that may cross regions: ``connect_timeout`` 0.5 s covers a TCP handshake
across the longest inter-region round trip (about 0.3 s, Mumbai to Oregon) with
room for jitter, and ``read_timeout`` 1.0 s is about three such round trips above
DynamoDB's single-digit-millisecond service time. A black-holed region then costs
about 1 s before the failover, a refusing one only the refusal.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from residency.errors import SettingsError
from residency.pseudonym import Pseudonymizer, default_pseudonymizer

__all__ = [
    "DEFAULT_STATE_FILE",
    "RouterConfig",
    "SettingSource",
    "Settings",
    "aws_region_from_environment",
    "explain_settings",
    "is_loopback_url",
    "load_settings",
]

DEFAULT_STATE_FILE = Path(".regionkit/cluster.json")


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` certainly connects to this machine.

    The host is read with urllib3's own parser (what botocore connects with), and
    the stdlib's reading must agree. Anything two parsers could read differently is
    refused: userinfo (``user@``), backslashes, whitespace or control characters,
    percent-escapes in the authority, and non-ASCII text.
    """
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    if not url.isascii() or any(c in url for c in "\\@%") or any(c <= " " for c in url):
        return False
    try:
        parsed = parse_url(url)
        std = urlsplit(url)
    except (LocationParseError, ValueError):
        return False
    host = (parsed.host or "").strip("[]").lower()
    if parsed.auth or host != (std.hostname or "").lower():
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def aws_region_from_environment() -> tuple[str | None, str]:
    """The region boto3 would use, and where it came from: ``AWS_REGION``, then
    ``AWS_DEFAULT_REGION``, then the profile's ``region`` (``AWS_PROFILE`` or default)."""
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(var, "").strip()
        if value:
            return value, f"env {var}"
    profile = os.environ.get("AWS_PROFILE", "").strip() or "default"
    try:
        import botocore.session
        from botocore.exceptions import BotoCoreError

        session = botocore.session.Session(profile=profile)
        region = session.get_scoped_config().get("region")
    except (BotoCoreError, OSError, ValueError):
        return None, ""
    if isinstance(region, str) and region.strip():
        return region.strip(), f"AWS profile {profile!r} (AWS config file)"
    return None, ""


def _merged(sources: tuple[PydanticBaseSettingsSource, ...]) -> dict[str, Any]:
    """What the higher-priority sources say, highest first winning."""
    out: dict[str, Any] = {}
    for src in reversed(sources):
        try:
            out.update(src())
        except (SourceError, ValueError):  # reported by the real pass, with its own message
            continue
    return out


class _StateFileSource(PydanticBaseSettingsSource):
    """Endpoints of a running ``regionkit local up``, read from its state file (local mode)."""

    def __init__(
        self, settings_cls: type[BaseSettings], higher: tuple[PydanticBaseSettingsSource, ...]
    ) -> None:
        super().__init__(settings_cls)
        self.higher = higher
        self.path: Path | None = None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        above = _merged(self.higher)
        if str(above.get("mode", "local")).lower() == "aws":
            return {}  # aws mode never reads the local cluster's state
        path = Path(
            above.get("state_file") or os.environ.get("REGIONKIT_STATE_FILE") or DEFAULT_STATE_FILE
        )
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(state, dict):
            return {}
        endpoints = state.get("endpoints")
        if not isinstance(endpoints, dict):
            return {}
        self.path = path
        return {"endpoints": endpoints, "mode": "local"}


class _AwsRegionSource(PydanticBaseSettingsSource):
    """aws mode without ``REGIONKIT_REGION``: the region boto3 itself would use."""

    def __init__(
        self, settings_cls: type[BaseSettings], higher: tuple[PydanticBaseSettingsSource, ...]
    ) -> None:
        super().__init__(settings_cls)
        self.higher = higher
        self.origin = ""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        above = _merged(self.higher)
        if str(above.get("mode", "local")).lower() != "aws" or above.get("region"):
            return {}
        region, self.origin = aws_region_from_environment()
        return {"region": region} if region else {}


class RouterConfig(BaseSettings):
    """The library's configuration, from keyword arguments only (immutable).

    ``RouterConfig(region="eu-west-1", mode="aws")`` reads no ``REGIONKIT_*``
    variable, no ``.env`` and no cluster state file: see :class:`Settings` and
    :func:`load_settings` for that. The default mode is ``local`` (loopback only),
    so a config that forgets its mode never reaches a real AWS account.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    def __init__(self, **values: Any) -> None:
        """A bad value is a :class:`SettingsError` naming the field (one error tree), not
        pydantic's ``ValidationError``; :func:`load_settings` words it for the environment."""
        if type(self) is not RouterConfig:  # Settings: load_settings() explains its sources
            super().__init__(**values)
            return
        try:
            super().__init__(**values)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            name = ".".join(str(x) for x in err["loc"]) or "config"
            secret = "key" in name
            raise SettingsError(
                setting=name,
                value="(hidden)" if secret else err.get("input"),
                reason="there is no such setting"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, "),
                fix=f"pass a valid {name} to RouterConfig"
                if err["type"] != "extra_forbidden"
                else "known: " + ", ".join(RouterConfig.model_fields),
            ) from None

    mode: Literal["local", "aws"] = Field(
        default="local",
        description="'local': the embedded cluster on loopback. 'aws': real AWS endpoints.",
    )
    region: str | None = Field(
        default=None, description="The region this service runs in; routes start from it."
    )
    endpoints: dict[str, str] = Field(
        default_factory=dict, description="Per-region endpoint URL overrides."
    )
    table_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.-]{0,50}$",
        description="Prepended to every table name. Stacks, alarms and the FIS template "
        "are named by the policy alone: one deployment of a policy per account.",
    )
    connect_timeout: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Seconds to open a connection; above the longest inter-region round trip.",
    )
    read_timeout: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="Seconds to wait for an answer; about three inter-region round trips.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts in the same region when it throttles (the router's retry; "
        "botocore itself makes one attempt).",
    )
    failover_attempts: int = Field(default=3, ge=1, le=10, description="Regions tried per call.")
    breaker_failures: int = Field(default=3, ge=1, description="Failures that open a breaker.")
    breaker_reset_seconds: float = Field(default=2.0, gt=0)
    breaker_probe_lease_seconds: float | None = Field(
        default=None,
        gt=0,
        description="How long a half-open probe may stay out before another caller may "
        "probe; default twice (connect_timeout + read_timeout).",
    )
    hedge_reads: bool = Field(
        default=False,
        description="Hedged reads of global data: a read not answered within the region's "
        "observed p95 also goes to the next replica; the first answer wins.",
    )
    hedge_max_delay_ms: float = Field(
        default=250.0, gt=0, le=10_000, description="The longest a read waits before hedging."
    )
    directory_cache_size: int = Field(default=100_000, ge=0)
    directory_cache_ttl_seconds: float = Field(default=300.0, ge=0)
    hlc_max_offset_ms: int = Field(default=500, gt=0)
    hlc_adopt_drift_ms: int = Field(
        default=0,
        ge=0,
        description="How far ahead of this clock a remote stamp may be and still be adopted "
        "(an operator's bound on clock skew, e.g. 10000); 0 refuses any stamp over "
        "hlc_max_offset_ms ahead.",
    )
    merge_modules: list[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]
    ] = Field(
        default_factory=list,
        description="Modules (besides regions.merges) whose functions a policy may name as "
        "merge functions, e.g. '[\"myco.merges\"]'. Set by the operator; never by a policy.",
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Hex secret (>= 16 bytes) keying the pseudonyms of items in errors, "
        "logs and reports; without it each process uses a random key.",
    )
    metrics: Literal["off", "emf-stdout", "emf-log"] = Field(
        default="off",
        description="Publish the router's request and error counts as CloudWatch Embedded "
        "Metric Format, per minute (the FIS drill's customer-harm stop alarm reads them): "
        "'emf-stdout' writes the lines to standard output (Lambda, ECS awslogs), 'emf-log' "
        "to the 'regionkit.metrics' logger.",
    )

    def pseudonymizer(self) -> Pseudonymizer:
        """The deployment's keyed pseudonymizer (a random key when none is set)."""
        if self.pseudonym_key is None:
            return default_pseudonymizer()
        return Pseudonymizer.from_hex(self.pseudonym_key.get_secret_value())

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # A field validator (not a model one) so the error names the endpoints setting;
        # ``mode`` is declared before ``endpoints``, so it is already validated here.
        for region, url in value.items():
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError(f"endpoint for {region} is not an http(s) URL: {url!r}")
            if info.data.get("mode") == "local" and not is_loopback_url(url):
                raise ValueError(
                    f"local mode refuses the non-loopback endpoint {url!r} for {region}; "
                    "use 127.0.0.1, or set REGIONKIT_MODE=aws for real AWS"
                )
        return value

    @field_validator("pseudonym_key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Pseudonymizer.from_hex(value.get_secret_value())
            except ValueError:
                raise ValueError(
                    "must be hex of at least 16 bytes, e.g. from: python -c "
                    "'import secrets; print(secrets.token_hex(32))'"
                ) from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # keyword arguments only: no environment, .env or file

    @property
    def probe_lease_seconds(self) -> float:
        lease = self.breaker_probe_lease_seconds
        return lease if lease is not None else 2 * (self.connect_timeout + self.read_timeout)

    def require_region(self) -> str:
        """The service region; in aws mode its absence is an error, never a default."""
        if self.region is None:
            raise SettingsError(
                setting="region",
                value="",
                reason=f"{self.mode} mode needs the region this service runs in, and the "
                "router was given none",
                fix="pass region= to RegionRouter (or RouterConfig(region=...)), or build the "
                "router with RegionRouter.from_env() to read REGIONKIT_REGION / AWS_REGION",
            )
        return self.region

    def endpoint_for(self, region: str) -> str | None:
        return self.endpoints.get(region)

    def table_name(self, logical: str) -> str:
        return f"{self.table_prefix}{logical}"


class Settings(RouterConfig):
    """An entry point's settings: the router's configuration plus what only the CLI, the
    CDK app and ``RegionRouter.from_env()`` need, read from the sources in the module
    docstring (keyword arguments, ``REGIONKIT_*``, ``.env``, the cluster state file, the
    AWS environment for the region)."""

    model_config = SettingsConfigDict(
        env_prefix="REGIONKIT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        dotenv_filtering="match_prefix",  # other tools' lines (AWS_PROFILE=...) are theirs
        frozen=True,
        validate_default=True,
    )

    policy: Path = Field(
        default=Path("policies/social-network.yaml"), description="The policy file."
    )
    policy_max_bytes: int = Field(
        default=1_000_000,
        ge=1_024,
        le=64_000_000,
        description="Policy files larger than this are refused before parsing.",
    )
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    state_file: Path = DEFAULT_STATE_FILE
    drill_history: Path = Path(".regionkit/drills")
    pseudonym_key_file: Path = Field(
        default=Path(".regionkit/pseudonym-key"),
        description="Without REGIONKIT_PSEUDONYM_KEY: the file holding the pseudonym key "
        "(hex; created in local mode, read in aws mode if present).",
    )
    signing_key_file: Path = Field(
        default=Path(".regionkit/signing-key.pem"),
        description="Local mode: the Ed25519 key that signs audit reports and receipts "
        "(created on first use).",
    )
    partition: Literal["aws", "aws-cn", "aws-us-gov"] = Field(
        default="aws",
        description="The AWS partition of the generated ARNs (IAM policies, guardrails).",
    )
    signing_kms_key: str | None = Field(
        default=None,
        description="aws mode: the KMS asymmetric signing key (ID, ARN or alias) for audit "
        "reports and receipts.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        higher = (init_settings, env_settings, dotenv_settings)
        return (
            *higher,
            _StateFileSource(settings_cls, higher),
            _AwsRegionSource(settings_cls, higher),
        )

    def require_region(self) -> str:
        """The service region; in aws mode its absence is an error, never a default."""
        if self.region is None:
            raise SettingsError(
                setting="REGIONKIT_REGION",
                value="",
                reason=f"{self.mode} mode needs the region this service runs in, and none of "
                "REGIONKIT_REGION, AWS_REGION, AWS_DEFAULT_REGION or the AWS profile's region "
                "is set",
                fix="set REGIONKIT_REGION (or AWS_REGION) to the region this process runs in",
            )
        return self.region

    def pseudonymizer(self) -> Pseudonymizer:
        """The deployment's pseudonymizer: ``REGIONKIT_PSEUDONYM_KEY``, else the key file
        (created in local mode, used in aws mode when present), else a random key."""
        if self.pseudonym_key is not None:
            return super().pseudonymizer()
        path = self.pseudonym_key_file
        if self.mode == "local" or path.exists():
            try:
                return Pseudonymizer.load_or_create(path)
            except (OSError, ValueError) as exc:
                raise SettingsError(
                    setting="REGIONKIT_PSEUDONYM_KEY_FILE",
                    value=str(path),
                    reason=str(exc) if isinstance(exc, ValueError) else "cannot be read",
                    fix="restore the key file (0600), or set REGIONKIT_PSEUDONYM_KEY",
                ) from None
        return super().pseudonymizer()

    def evidence_pseudonymizer(self) -> Pseudonymizer:
        """For what outlives the process (audit reports, erasure receipts, ``audit
        pseudonym``): refused without a kept key, whose pseudonyms nobody could match."""
        if (
            self.pseudonym_key is None
            and self.mode == "aws"
            and not self.pseudonym_key_file.exists()
        ):
            raise SettingsError(
                setting="REGIONKIT_PSEUDONYM_KEY",
                value="(unset)",
                reason="reports and receipts name items and subjects by keyed pseudonym; with "
                "a random key per run they could never be matched to anyone",
                fix="set REGIONKIT_PSEUDONYM_KEY (hex, >= 16 bytes), the same in every process "
                "of the deployment",
            )
        return self.pseudonymizer()


def _secret(name: str) -> bool:
    """Whether a setting holds a secret: its value is never shown, not even when wrong."""
    field = Settings.model_fields.get(name)
    return field is not None and "SecretStr" in str(field.annotation)


def _shown(name: str, value: object) -> object:
    return "(hidden: a secret)" if _secret(name) else value


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one readable SettingsError."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except SourceError as exc:  # a value pydantic-settings could not even parse (bad JSON)
        found = re.search(r'field "(\w+)"', str(exc))
        name = found[1] if found else "settings"
        raise SettingsError(
            setting=name,
            value=_shown(name, os.environ.get(f"REGIONKIT_{name.upper()}", "")),
            reason=f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc),
            fix=f"set REGIONKIT_{name.upper()} to JSON, e.g. "
            + (
                '\'{"us-east-1": "http://127.0.0.1:5001"}\''
                if name == "endpoints"
                else "'[\"myservice.merges\"]'"
                if name == "merge_modules"
                else "as `regionkit config show` prints it"
            ),
        ) from None
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = ".".join(str(x) for x in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":  # a misspelt REGIONKIT_ line in .env, usually
            key = name.upper()
            key = key if key.startswith("REGIONKIT_") else f"REGIONKIT_{key}"
            known = [f"REGIONKIT_{f.upper()}" for f in Settings.model_fields]
            close = difflib.get_close_matches(key, known, n=1)
            raise SettingsError(
                setting=key,
                # Not shown: a misspelt name may well carry a secret (REGIONKIT_PSEUDONYM_KY).
                value="(not shown)",
                reason="there is no such setting (check .env)",
                fix=f"did you mean {close[0]}?" if close else "known: " + ", ".join(known),
            ) from None
        raise SettingsError(
            setting=name,
            value=_shown(name, err.get("input")) if name != "settings" else "",
            reason=err["msg"].removeprefix("Value error, "),
            fix=f"set REGIONKIT_{name.upper()} or the matching CLI option correctly"
            if name != "settings"
            else "check REGIONKIT_* variables, .env and the cluster state file",
        ) from None


@dataclass(frozen=True)
class SettingSource:
    """One effective setting, where it came from, and what it overrode (``config show``)."""

    name: str
    value: str
    source: str
    note: str = ""


def _dotenv_keys(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    from dotenv import dotenv_values

    return {k.upper() for k, v in dotenv_values(path).items() if v not in (None, "")}


def explain_settings(settings: Settings, **overrides: Any) -> list[SettingSource]:
    """Every setting's effective value and its source, highest priority first (like
    ``aws configure list``). Secrets are shown only as set or unset."""
    env = {k.upper(): v for k, v in os.environ.items() if v != ""}
    dotenv_path = Path(str(Settings.model_config.get("env_file") or ".env"))
    sources = _SettingSources(
        settings=settings,
        env=env,
        dotenv_path=dotenv_path,
        dotenv=_dotenv_keys(dotenv_path),
        given={k for k, v in overrides.items() if v is not None},
        state_path=Path(env.get("REGIONKIT_STATE_FILE") or settings.state_file),
    )
    dumped = settings.model_dump(mode="json")
    out: list[SettingSource] = []
    for name, field in Settings.model_fields.items():
        shown = _shown_setting(settings, name, dumped.get(name))
        source, note = sources.source_of(name)
        if source == "default" and field.description and name == "breaker_probe_lease_seconds":
            shown = f"{settings.probe_lease_seconds:g} (derived)"
        note = sources.overriding_note(name, source) or note
        out.append(SettingSource(name, shown, source, note))
    return out


def _shown_setting(settings: Settings, name: str, value: Any) -> str:
    if name == "pseudonym_key":
        return "(set)" if settings.pseudonym_key is not None else "(unset)"
    if value is None:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class _SettingSources:
    """Where a setting may come from, highest priority first: the command's options, the
    environment, .env, the cluster state file, the AWS environment, the default."""

    settings: Settings
    env: dict[str, str]
    dotenv_path: Path
    dotenv: set[str]
    given: set[str]
    state_path: Path

    def source_of(self, name: str) -> tuple[str, str]:
        """(source, note) of one setting."""
        key = f"REGIONKIT_{name.upper()}"
        settings = self.settings
        if name in self.given:
            return "option", (f"overrides {key} from the environment" if key in self.env else "")
        if key in self.env:
            return f"env {key}", (
                f"overrides {key} in {self.dotenv_path}" if key in self.dotenv else ""
            )
        if key in self.dotenv:
            return f".env ({self.dotenv_path})", ""
        if (
            name in ("endpoints", "mode")
            and settings.mode == "local"
            and _state_has(self.state_path)
        ):
            return (f"state file ({self.state_path})" if name == "endpoints" else "state file"), ""
        if name == "region" and settings.mode == "aws" and settings.region is not None:
            return aws_region_from_environment()[1] or "AWS environment", ""
        return "default", ""

    def overriding_note(self, name: str, source: str) -> str:
        """A note that replaces the source's own: what this source overrides or ignores."""
        settings = self.settings
        if name == "region" and source != "default" and not source.startswith("env AWS"):
            aws_region, origin = aws_region_from_environment()
            if aws_region and aws_region != settings.region and settings.mode == "aws":
                return f"{origin} says {aws_region}, which {source} overrides"
        if name == "endpoints" and settings.mode == "aws" and _state_has(self.state_path):
            return f"aws mode ignores the state file {self.state_path}"
        return ""


def _state_has(path: Path) -> bool:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and isinstance(state.get("endpoints"), dict)
