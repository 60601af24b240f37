"""How the audit reads the failures of its AWS clients.

The audit never builds a client. It is handed a
:class:`residency.clients.ClientProvider` and asks it for
``client(service, region)`` (``dynamodb``, ``sts``, ``kms``, ``s3``, ...).
:class:`regions.pool.ClientPool` is one (the CLI uses it); tests pass adapters
over the local cluster or over in-process moto.
"""

from __future__ import annotations

from residency.audit.safety import clean_text
from residency.clients import error_code
from residency.errors import RegionkitError

__all__ = [
    "error_code",
    "error_reason",
    "is_access_denied",
    "is_missing",
    "is_unreachable",
]


_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "NotAuthorized",
    }
)
_THROTTLED = frozenset(
    {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"}
)
_MISSING = frozenset({"ResourceNotFoundException", "TableNotFoundException", "NoSuchKey"})


def is_unreachable(exc: BaseException) -> bool:
    """Connection refused, timed out or reset; or no endpoint configured for the region."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    from residency.errors import SettingsError, UnknownRegion

    return isinstance(exc, (BotoConnectionError, HTTPClientError, SettingsError, UnknownRegion))


def is_access_denied(exc: BaseException) -> bool:
    return error_code(exc) in _DENIED


def is_missing(exc: BaseException) -> bool:
    return error_code(exc) in _MISSING


def error_reason(exc: BaseException) -> str:
    """A short, PII-free description of a failure for a finding.

    Built by regionkit from the failure's *kind* (its class, the AWS error code and
    operation), never from a library's message text, which may echo a value it was
    given (a key, a pydantic ``input_value``). regionkit's own errors carry
    messages regionkit wrote; they are still scrubbed.
    """
    if isinstance(exc, RegionkitError):
        return clean_text(str(exc))
    code = error_code(exc)
    if is_unreachable(exc):
        what = "unreachable"
    elif is_access_denied(exc):
        what = "access denied"
    elif is_missing(exc):
        what = "not found"
    elif code in _THROTTLED:
        what = "throttled"
    else:
        what = "failed"
    op = getattr(exc, "operation_name", None)
    where = f" in {op}" if isinstance(op, str) and op.isalnum() else ""
    name = type(exc).__name__
    return f"{what}: {code}{where}" + (f" ({name})" if name != code else "")
