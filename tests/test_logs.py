"""Logging: PII never reaches a log line, and the library never writes to stdout."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from residency import logs
from residency.logs import REDACTED, PiiRedactor, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logs, "_redactor", PiiRedactor())
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _redact(redactor: PiiRedactor, **event: Any) -> dict[str, Any]:
    return dict(redactor(None, "warning", dict(event)))


def test_pii_attribute_values_are_removed_at_any_depth() -> None:
    r = PiiRedactor(["email", "display_name", "phone"])
    out = _redact(
        r,
        event="profile written",
        email="asha@example.in",
        item={"pk": "u#123", "Display_Name": "Asha", "nested": {"phone": "12345"}},
        batch=[{"email": "x"}, {"pk": "u#2", "display_name": "Bo"}],
        pair=("eu-west-1", {"phone": "7"}),
    )
    assert out["event"] == "profile written"
    assert out["email"] == REDACTED
    assert out["item"] == {"pk": "u#123", "Display_Name": REDACTED, "nested": {"phone": REDACTED}}
    assert out["batch"] == [{"email": REDACTED}, {"pk": "u#2", "display_name": REDACTED}]
    assert out["pair"] == ["eu-west-1", {"phone": REDACTED}]
    assert "Asha" not in json.dumps(out) and "Bo" not in json.dumps(out)


def test_redactor_from_the_policy(example_policy_path: Any) -> None:
    from residency.policy import load_policy

    r = PiiRedactor(load_policy(example_policy_path).pii_attributes())
    out = _redact(r, event="e", birth_date="1990-01-01", address="1 Main St", region="sa-east-1")
    assert out == {"event": "e", "birth_date": REDACTED, "address": REDACTED, "region": "sa-east-1"}


def test_with_attributes_adds_names() -> None:
    r = PiiRedactor(["email"]).with_attributes(["Nickname"])
    assert r.names == frozenset({"email", "nickname"})
    assert _redact(r, nickname="ace", email="e")["nickname"] == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "contact asha@example.in for access",
        "ASHA.K+news@Mail.Example.co.uk",
        "call +91 98765 43210 now",
        "+55 (11) 91234-5678",
        "phone: 415-555-0134 (US)",
        "+4915123456789",
    ],
)
def test_emails_and_phone_numbers_in_free_text_are_removed(text: str) -> None:
    out = _redact(PiiRedactor(), event="note", note=text, nested={"deep": [text]})
    assert out["note"] == REDACTED
    assert out["nested"] == {"deep": [REDACTED]}


@pytest.mark.parametrize(
    "value",
    [
        "eu-west-1",
        "profile written to ap-south-1",
        "regionkit-conflicts",
        "http://127.0.0.1:5001",
        "2024-05-01T10:00:00Z",
        "u#3f2a9c",
        "rto 12.5 s, rpo 0.8 s",
        "123e4567-e89b-12d3-a456-426614174000",
        42,
        3.5,
        True,
        None,
    ],
)
def test_non_pii_is_kept(value: object) -> None:
    out = _redact(PiiRedactor(["email"]), event="e", value=value, nested={"v": value})
    assert out["value"] == value
    assert out["nested"] == {"v": value}


def test_very_deep_values_are_redacted_rather_than_walked() -> None:
    deep: dict[str, Any] = {"v": "kept?"}
    for _ in range(12):
        deep = {"d": deep}
    out = json.dumps(_redact(PiiRedactor(), event="e", deep=deep))
    assert "kept?" not in out and REDACTED in out


def test_configure_logging_json_is_valid_json_and_redacted() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", level="info", pii_attributes=["email"], stream=stream)
    log = get_logger("regionkit.test")
    log.info("user homed", email="asha@example.in", region="ap-south-1", attempt=2)
    log.debug("below the level")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "user homed"
    assert record["email"] == REDACTED
    assert record["region"] == "ap-south-1"
    assert record["attempt"] == 2
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")
    assert "asha" not in stream.getvalue()


def test_configure_logging_console_format() -> None:
    stream = io.StringIO()
    configure_logging(
        log_format="console", level="warning", pii_attributes=["phone"], stream=stream
    )
    get_logger("regionkit.test").warning("failover", phone="+91 98765 43210", region="eu-west-1")
    text = stream.getvalue()
    assert "failover" in text and "eu-west-1" in text
    assert "98765" not in text and REDACTED in text


def test_configured_logging_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", level="warning")
    get_logger("regionkit.test").warning("to stderr", email="a@b.example")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["event"] == "to stderr"
    assert "a@b.example" not in captured.err


def test_module_level_logger_follows_later_configuration() -> None:
    log = get_logger("regionkit.early")  # created before configure_logging, like a module global
    stream = io.StringIO()
    configure_logging(log_format="json", level="warning", stream=stream)
    log.warning("late")
    assert json.loads(stream.getvalue())["event"] == "late"


def test_unconfigured_fallback_never_writes_to_stdout(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert not structlog.is_configured()
    with caplog.at_level(logging.WARNING, logger="regionkit.fallback"):
        get_logger("regionkit.fallback").warning(
            "unconfigured", contact="asha@example.in", region="us-east-1"
        )
    assert capsys.readouterr().out == ""
    (record,) = [r for r in caplog.records if r.name == "regionkit.fallback"]
    payload = json.loads(record.getMessage())
    assert payload["event"] == "unconfigured"
    assert payload["contact"] == REDACTED
    assert payload["region"] == "us-east-1"


def test_unconfigured_fallback_uses_the_policy_redactor(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(logs, "_redactor", PiiRedactor(["display_name"]))
    with caplog.at_level(logging.WARNING, logger="regionkit.fallback"):
        get_logger("regionkit.fallback").warning("e", display_name="Asha")
    assert "Asha" not in caplog.text
    assert logs.redaction_processor() is logs._redactor


def test_a_host_configured_structlog_cannot_bypass_the_redactor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A service configures structlog (and stdlib logging) its own way, without our
    redactor; regionkit's loggers still redact, tracebacks included."""
    import logging as stdlib_logging

    import structlog

    from residency.logs import get_logger

    was, configured = structlog.get_config(), structlog.is_configured()
    root = stdlib_logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    stdlib_logging.basicConfig(level=stdlib_logging.DEBUG, force=True)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    try:
        log = get_logger("regionkit.test")
        log.warning("event", contact="zoe.q@example.org", phone="+91 98123 45678")
        try:
            raise ValueError("bad value zoe.q@example.org")
        except ValueError:
            log.exception("failed")
        out = capsys.readouterr().out
        assert "zoe.q@example.org" not in out and "98123" not in out
        assert "ValueError" in out and "[redacted]" in out
    finally:
        structlog.reset_defaults()
        if configured:
            structlog.configure(**was)
        # Put the root logger back: left at DEBUG with a handler on this test's captured
        # stream, every later test formatted botocore's debug lines into a closed file.
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in root_handlers:
                handler.close()
        for handler in root_handlers:
            root.addHandler(handler)
        root.setLevel(root_level)


def test_a_policy_makes_its_pii_attributes_redacted_without_any_configuration(
    example_policy_path: Any,
) -> None:
    from residency.policy import load_policy

    policy = load_policy(example_policy_path)
    from residency.names import normalize_name

    names = {normalize_name(n) for n in policy.pii_attributes()}
    assert names and names <= logs.redaction_processor().names


def test_logged_tracebacks_withhold_the_messages_of_foreign_exceptions() -> None:
    from residency.errors import ConfigError

    value = " ".join(["Jane", "Q.", "Public"])  # built, so no source line quotes it
    try:
        try:
            raise KeyError(value)
        except KeyError as inner:
            raise ConfigError(message="profile.display_name is not a string") from inner
    except ConfigError as exc:
        text = logs._exception_text(exc)
    assert "Jane" not in text
    assert "builtins.KeyError: (message withheld" in text
    assert "profile.display_name is not a string" in text  # regionkit's own message: no value
    assert "direct cause" in text
    assert text.index("KeyError") < text.index("ConfigError")  # printed as Python prints it
    assert "raise KeyError(value)" in text  # the source line, as code


def test_a_host_with_only_stdlib_logging_gets_no_raw_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert not structlog.is_configured()
    with caplog.at_level(logging.WARNING, logger="regionkit.fallback"):
        value = " ".join(["Jane", "Q.", "Public"])
        try:
            raise RuntimeError(f"cannot serialize the profile of {value}")
        except RuntimeError:
            get_logger("regionkit.fallback").exception("failed", path="/fault")
    (record,) = [r for r in caplog.records if r.name == "regionkit.fallback"]
    assert record.exc_info is None  # the standard library is given finished text
    assert "Jane" not in caplog.text
    assert "RuntimeError: (message withheld" in json.loads(record.getMessage())["exception"]


def _run_isolated(code: str) -> str:
    """``code`` in a fresh interpreter (its own logging configuration); its output."""
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_a_host_chain_ending_in_stdlib_logging_gets_no_raw_traceback() -> None:
    out = _run_isolated(
        """
        import logging, sys
        import structlog
        logging.basicConfig(stream=sys.stdout, level=logging.INFO)
        structlog.configure(
            processors=[structlog.processors.KeyValueRenderer()],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        from residency.logs import get_logger
        value = "".join(["dave", "@", "example.com"])
        try:
            {}[value]
        except KeyError:
            get_logger("regionkit.test").exception("failed")
        """
    )
    assert "dave" not in out
    assert "builtins.KeyError: (message withheld" in out


def test_the_redactor_a_host_took_early_redacts_a_policy_loaded_later() -> None:
    out = _run_isolated(
        """
        from residency.logs import redaction_processor
        early = redaction_processor()  # a host builds its chain before any policy loads
        from residency.policy import load_policy
        load_policy("policies/social-network.yaml")
        print(early(None, "info", {"display_name": "Ju" + "no", "other": "kept"}))
        """
    )
    assert "Juno" not in out and "kept" in out


def test_an_unpickled_policy_registers_its_pii_attributes_in_a_fresh_process(
    example_policy_path: Any, tmp_path: Path
) -> None:
    import pickle

    from residency.policy import load_policy

    blob = tmp_path / "policy.pickle"
    blob.write_bytes(pickle.dumps(load_policy(example_policy_path)))
    out = _run_isolated(
        f"""
        import pickle
        from residency import pii_registry
        pickle.loads(open({str(blob)!r}, "rb").read())
        print(sorted(pii_registry.registered()))
        """
    )
    assert "displayname" in out and "email" in out
