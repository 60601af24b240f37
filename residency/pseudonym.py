"""Keyed pseudonyms: how regionkit names an item or a value without showing it.

An error, a log line, a finding or a receipt that must point at one item (a
profile keyed by a user ID, a content item keyed by whatever the service chose,
perhaps an e-mail address) shows ``pn-<24 hex>`` instead of the value:
HMAC-SHA256 over the value under a per-deployment secret, truncated to 96 bits.

Why keyed: an unkeyed hash can be *confirmed by guessing*. Anyone who suspects
that a report is about ``alice@example.com`` hashes the guess and compares.
With HMAC the guess cannot be checked without the secret, so a report that
leaves the deployment (an auditor's copy, a ticket, a log shipper) names items
without identifying anyone. Holders of the secret (the operators) can still
recompute the pseudonym of a known key and find every line about it.

Where the secret comes from (see :class:`~residency.settings.Settings`):
``REGIONKIT_PSEUDONYM_KEY`` (hex, at least 16 bytes), or the key file kept
beside the local cluster's state; a process with neither gets a random key,
so its pseudonyms are stable within the process only (never guessable).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

__all__ = ["Pseudonymizer", "default_pseudonymizer", "set_default_pseudonymizer"]

_PREFIX = "pn-"
_MIN_KEY_BYTES = 16


class Pseudonymizer:
    """Turns values into keyed pseudonyms. Immutable and thread-safe."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key needs at least {_MIN_KEY_BYTES} bytes")
        self._key = bytes(key)
        # Names the key in reports (which key made these pseudonyms) without revealing it.
        self.key_id = (
            "pk-" + hmac.new(self._key, b"regionkit key id", hashlib.sha256).hexdigest()[:12]
        )

    @classmethod
    def random(cls) -> Pseudonymizer:
        return cls(os.urandom(32))

    @classmethod
    def from_hex(cls, text: str) -> Pseudonymizer:
        return cls(bytes.fromhex(text.strip()))

    def __call__(self, value: object, *, scope: str = "") -> str:
        """The pseudonym of ``value`` (its ``str``), optionally within ``scope`` (a table)."""
        msg = f"{scope}\0{value}".encode("utf-8", "surrogatepass")
        return _PREFIX + hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:24]

    def item(self, table: str, partition: object, sort: object = None) -> str:
        """The pseudonym of one item of ``table``: its partition key, then `` / `` and its
        sort key. The router, the conflict detector, the subject API and the audit all
        name an item this way, so one item has one pseudonym in every error, log line,
        receipt and finding (``regionkit audit pseudonym KEY --table T`` recomputes it)."""
        text = str(partition) if sort is None else f"{partition} / {sort}"
        return self(text, scope=table)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for another use of the same secret (HKDF-SHA256, ``purpose`` as info),
        e.g. the router's query cursors; independent of the pseudonyms themselves."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return kdf.derive(self._key)

    def __repr__(self) -> str:  # never the key
        return f"Pseudonymizer({self.key_id})"

    def __reduce__(self) -> tuple[object, ...]:
        return (Pseudonymizer, (self._key,))


_default: Pseudonymizer | None = None
_lock = threading.Lock()


def default_pseudonymizer() -> Pseudonymizer:
    """The process-wide pseudonymizer: the one set by the host, else a random key."""
    global _default
    with _lock:
        if _default is None:
            _default = Pseudonymizer.random()
        return _default


def set_default_pseudonymizer(p: Pseudonymizer) -> None:
    """Install the deployment's key (``RegionRouter.from_env`` and the CLI do this)."""
    global _default
    with _lock:
        _default = p
