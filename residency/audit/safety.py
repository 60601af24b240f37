"""Keeping values out of findings: items by keyed pseudonym, values by kind.

The audit reads item keys, attribute *names*, and (for PII detection) values;
nothing it read from an item may reach a finding, a reason, an error or a log.

* Items are named by keyed pseudonym (:mod:`residency.pseudonym`): ``pn-<24 hex>``,
  HMAC-SHA256 of the key under the deployment's secret, scoped to the table.
  Without the secret a guessed key cannot be confirmed; operators holding it
  recompute the pseudonym of a known key (``regionkit audit pseudonym KEY
  --table T``) to find every finding about it. This holds for regionkit's user
  IDs too: they are opaque, but they identify a person.
* Values are named by kind (:meth:`residency.pii_detect.PiiDetector.describe`):
  "a value shaped like a phone number".
* :func:`clean_text` scrubs regionkit's own error messages (the audit never
  uses a library's message text: see :func:`residency.audit.clients.error_reason`).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from residency.logs import REDACTED
from residency.pseudonym import Pseudonymizer

__all__ = ["USER_ID", "clean_text", "item_pseudonym", "key_value_text"]

USER_ID = re.compile(r"^u-([a-z]{2}(?:-[a-z]+)+-\d)-([0-9A-HJKMNP-TV-Z]{26})$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_DIGITS = re.compile(r"\d")
_PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d\s().-]{6,}\d(?![\w-])")


def key_value_text(typed: Any) -> str:
    """A key attribute's value (DynamoDB-typed JSON) as the text its pseudonym is made of.

    ``{"S": v}`` and ``{"N": v}`` give ``v``; ``{"B": b}`` its base64; anything else
    its canonical JSON.
    """
    if isinstance(typed, dict):
        for tag in ("S", "N"):
            v = typed.get(tag)
            if isinstance(v, str):
                return v
        b = typed.get("B")
        if isinstance(b, (bytes, bytearray)):
            return base64.b64encode(bytes(b)).decode("ascii")
    return json.dumps(typed, sort_keys=True, default=str)


def item_pseudonym(
    pn: Pseudonymizer, table: str, partition: Any, sort: Any = None, *, typed: bool = True
) -> str:
    """The pseudonym of one item (:meth:`Pseudonymizer.item`) from its typed key values."""
    if not typed:
        return pn.item(table, partition, sort)
    return pn.item(table, key_value_text(partition), None if sort is None else key_value_text(sort))


def clean_text(text: str, limit: int = 500) -> str:
    """A message fit for a report: PII-looking substrings removed, length bounded."""
    out = _EMAIL.sub(REDACTED, text)
    out = _PHONE.sub(lambda m: REDACTED if len(_DIGITS.findall(m.group())) >= 8 else m.group(), out)
    return out if len(out) <= limit else out[: limit - 3] + "..."
