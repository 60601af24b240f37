"""User IDs minted by the router, with the home region inside.

Format: ``u-<home region>-<ULID>``, for example ``u-eu-central-1-01JD3X9Q4M8V2R6T0BNC5K7H1E``.

Why the hint: a profile must be routable from every region the instant the
user signs up, before the directory entry has replicated (replication is
asynchronous, typically under a second, with no SLA). The router reads the home
region straight out of the ID when the directory has no entry yet. The
directory stays the authority: after ``move_user`` it overrides the hint.

The hint is not personal data: it names a region, which the directory holds
anyway. The ULID is time-ordered and random (80 bits); with an idempotency key
it is derived from the key, so a retried sign-up gets the same ID.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import NamedTuple

from residency.errors import MalformedId, describe_value

__all__ = ["UserId", "mint_user_id", "parse_user_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# ASCII only and whole-string (fullmatch): ``\d`` takes any Unicode digit and ``$`` a
# trailing newline, so a mistyped ID could pass as a well-formed one.
_ID = re.compile(r"u-([a-z]{2}(?:-[a-z]+)+-[0-9])-([0-9A-HJKMNP-TV-Z]{26})", re.ASCII)


class UserId(NamedTuple):
    value: str
    home_hint: str


def _ulid(ms: int, entropy: bytes) -> str:
    n = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(entropy[:10], "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))


def mint_user_id(
    home_region: str, *, idempotency_key: str | None = None, now_ms: int | None = None
) -> str:
    if idempotency_key is not None:
        digest = hashlib.blake2b(
            f"{home_region}\0{idempotency_key}".encode(), digest_size=16
        ).digest()
        ms, entropy = int.from_bytes(digest[:6], "big"), digest[6:]
    else:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        entropy = os.urandom(10)
    return f"u-{home_region}-{_ulid(ms, entropy)}"


def parse_user_id(value: str) -> UserId:
    if not isinstance(value, str):
        raise MalformedId(kind="user ID", value=describe_value(value), reason="must be a string")
    m = _ID.fullmatch(value)
    if not m:
        raise MalformedId(
            kind="user ID",
            value=describe_value(value),
            reason="expected 'u-<region>-<26-character ULID>', as minted by router.new_user_id()",
        )
    return UserId(value, m.group(1))
