"""Keeping PII out of findings: keys are shown only when they are plainly opaque IDs.

The audit reads item *keys* (a pinned item's partition key is its subject's user
ID, which regionkit mints and which holds no PII) and attribute *names*. It never
puts an attribute value in a finding. Two safety nets stand behind that:

* :func:`safe_key` shows a key as it is only when it is a regionkit user ID or a
  short token that does not look like an e-mail address or a phone number;
  anything else is shown as ``sha256:<16 hex>``, enough to find the item again
  by hashing candidate keys, and useless to a reader of the report;
* :func:`clean_text` passes every reason and error message through the same
  redaction the logs use (e-mail addresses and phone numbers removed), since a
  backend error message could in principle echo a value.
"""

from __future__ import annotations

import hashlib
import re

from residency.logs import REDACTED

__all__ = ["USER_ID", "clean_text", "hashed", "safe_key"]

USER_ID = re.compile(r"^u-([a-z]{2}(?:-[a-z]+)+-\d)-([0-9A-HJKMNP-TV-Z]{26})$")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:#/=+-]{0,127}$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_DIGITS = re.compile(r"\d")
_PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d\s().-]{6,}\d(?![\w-])")


def hashed(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def safe_key(value: object, *, user_ids_only: bool = False) -> str:
    """How a key may appear in a report.

    With ``user_ids_only`` (the keys of pinned tables), anything but a regionkit
    user ID is hashed.
    """
    text = value if isinstance(value, str) else repr(value)
    if USER_ID.match(text):
        return text
    if user_ids_only:
        return hashed(text)
    if (
        _TOKEN.match(text)
        and "@" not in text
        and not _EMAIL.search(text)
        and len(_DIGITS.findall(text)) < 8
    ):
        return text
    return hashed(text)


def clean_text(text: str, limit: int = 500) -> str:
    """A message fit for a report: PII-looking substrings removed, length bounded."""
    out = _EMAIL.sub(REDACTED, text)
    out = _PHONE.sub(lambda m: REDACTED if len(_DIGITS.findall(m.group())) >= 8 else m.group(), out)
    return out if len(out) <= limit else out[: limit - 3] + "..."
