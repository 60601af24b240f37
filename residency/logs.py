"""structlog configuration with PII redaction.

Every regionkit log line passes :class:`PiiRedactor`. It removes

* the value of any key named as a PII attribute in the policy (at any depth), and
* any string value that looks like an e-mail address or a phone number,

so a profile value cannot reach a log even if a caller logs a whole item.
regionkit's own code never logs item values in the first place; the redactor is
the safety net, and the host application cannot switch it off: when a service
configures structlog its own way, regionkit's loggers still run the redactor
first, in front of the service's chain; when it configures only the standard
library's logging, regionkit hands it finished text, never an exception to format.
The PII attributes of every policy the process holds are redacted (a
:class:`~residency.policy.Policy` registers them when it is built), whether or not
:func:`configure_logging` ran.

An exception attached to an event is formatted by regionkit *before* redaction: its
frames (file, line, function, source line) as Python prints them, and the message
of a regionkit error (which never quotes a value), but not the message of any other
exception, which may quote one (botocore's parameter errors do, so may a
``KeyError``): that line names the exception's type and says the message was
withheld.

The library never configures logging on import. The CLI calls
:func:`configure_logging`; a service may call it too.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

from residency import pii_registry
from residency.names import normalize_name

__all__ = [
    "REDACTED",
    "PiiRedactor",
    "configure_logging",
    "get_logger",
    "redact_attributes",
    "redaction_processor",
]

REDACTED = "[redacted]"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International or national phone numbers: 8+ digits with optional separators.
_PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d\s().-]{6,}\d(?![\w-])")


def _looks_like_phone(value: str) -> bool:
    return any(sum(ch.isdigit() for ch in m.group()) >= 8 for m in _PHONE.finditer(value))


class PiiRedactor:
    """A structlog processor removing PII values from an event dict."""

    def __init__(self, pii_attributes: Iterable[str] = ()) -> None:
        self.names = frozenset(normalize_name(a) for a in pii_attributes)

    def with_attributes(self, pii_attributes: Iterable[str]) -> PiiRedactor:
        return PiiRedactor(self.names | {normalize_name(a) for a in pii_attributes})

    def _clean(self, value: Any, names: frozenset[str], depth: int = 0) -> Any:
        if depth > 8:
            return REDACTED
        if isinstance(value, str):
            if _EMAIL.search(value) or _looks_like_phone(value):
                return REDACTED
            return value
        if isinstance(value, Mapping):
            return {
                k: (
                    REDACTED
                    if normalize_name(str(k)) in names
                    else self._clean(v, names, depth + 1)
                )
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(v, names, depth + 1) for v in value]
        return value

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # Live: the names of every policy registered since this redactor was built too,
        # so a host chain holding it from before a policy loaded still redacts them.
        registered = pii_registry.registered()
        names = self.names if registered <= self.names else self.names | registered
        for key in list(event_dict):
            if normalize_name(key) in names:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._clean(event_dict[key], names)
        return event_dict


_redactor = PiiRedactor()


def redaction_processor() -> PiiRedactor:
    """The process-wide redactor, for services that build their own structlog chain."""
    global _redactor
    registered = pii_registry.registered()
    if not registered <= _redactor.names:  # a policy registered names since: widen
        _redactor = _redactor.with_attributes(registered)
    return _redactor


def redact_attributes(names: Iterable[str]) -> None:
    """Withhold the values of attributes called ``names`` from every regionkit log line,
    from now on. Names are only ever added: redaction never narrows."""
    pii_registry.register(names)


def configure_logging(
    *,
    log_format: Literal["console", "json"] = "console",
    level: str = "warning",
    pii_attributes: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for regionkit: redaction first, then JSON or console output.

    Logs go to standard error, so command output on standard output stays clean.
    """
    redact_attributes(pii_attributes)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            _redact,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def _redact(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    exc_info = event_dict.pop("exc_info", None)
    exc = _exception_of(exc_info)
    if exc is not None:  # formatted here, so no later processor sees the exception itself
        event_dict["exception"] = _scrub_text(_exception_text(exc))
    return redaction_processor()(logger, method_name, event_dict)


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        exc = exc_info[1] if len(exc_info) > 1 else None
        return exc if isinstance(exc, BaseException) else None
    return sys.exc_info()[1] if exc_info else None


def _exception_text(exc: BaseException) -> str:
    """A traceback as Python prints one, chained causes included, with the message of
    every exception that is not a regionkit error withheld."""
    from residency.errors import RegionkitError

    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for e, link_text in reversed(chain):
        kind = f"{type(e).__module__}.{type(e).__qualname__}"
        message = _own_message(e) if isinstance(e, RegionkitError) else _WITHHELD
        frames = "".join(traceback.format_tb(e.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{kind}: {message}\n")
        if link_text:
            parts.append(link_text)
    return "".join(parts).rstrip("\n")


def _own_message(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:  # a broken __str__ must not break the log line
        return "(message unavailable)"


_WITHHELD = "(message withheld: it may quote a data value)"
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _scrub_text(text: str) -> str:
    """Free text (a traceback) with e-mail addresses and phone-like numbers replaced."""
    text = _EMAIL.sub(REDACTED, text)
    return _PHONE.sub(
        lambda m: REDACTED if sum(c.isdigit() for c in m.group()) >= 8 else m.group(), text
    )


class _Logger:
    """Resolves the logger at each call, so module-level loggers follow later configuration."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        bound: Any
        if structlog.is_configured():
            chain = list(structlog.get_config()["processors"])
            if not chain or chain[0] is not _redact:  # the host's own chain: redact first
                chain.insert(0, _redact)
            bound = structlog.wrap_logger(None, processors=chain, logger_factory_args=(self._name,))
        else:
            bound = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=[
                    _redact,
                    structlog.processors.add_log_level,
                    structlog.processors.JSONRenderer(),
                ],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        if method == "exception":
            # A standard-library logger's exception() (the fallback's, or a host's chain
            # ending in one) would append the raw traceback to the finished line: log at
            # error level, with the traceback regionkit formatted and redacted in it.
            return functools.partial(bound.error, exc_info=True)
        return getattr(bound, method)


def get_logger(name: str) -> Any:
    """A structlog logger for a regionkit module.

    Before :func:`configure_logging` (or the service's own ``structlog.configure``)
    runs, events go through the redactor to the standard-library logger of the
    same name, which by default shows warnings on standard error and nothing on
    standard output: the library never prints.
    """
    return _Logger(name)
