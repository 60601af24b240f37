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
``REGIONKIT_PSEUDONYM_KEY`` (hex, at least 16 bytes), else the key file
``REGIONKIT_PSEUDONYM_KEY_FILE`` (default ``.regionkit/pseudonym-key``, created in
local mode). A library process given neither gets a random key, so its pseudonyms
are stable within the process only (never guessable); the CLI refuses to write
evidence (audit reports, receipts) with such a key in aws mode, since nobody could
match their pseudonyms afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

__all__ = ["Pseudonymizer", "default_pseudonymizer", "set_default_pseudonymizer"]

_PREFIX = "pn-"
_MIN_KEY_BYTES = 16
_MIN_DISTINCT_BYTES = 6  # 00…00 or abab…ab is a placeholder, not a secret


class Pseudonymizer:
    """Turns values into keyed pseudonyms. Immutable and thread-safe."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key needs at least {_MIN_KEY_BYTES} bytes")
        if len(set(key)) < _MIN_DISTINCT_BYTES:
            raise ValueError("the pseudonym key looks like a placeholder (too few distinct bytes)")
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

    @classmethod
    def load_or_create(cls, path: Path) -> Pseudonymizer:
        """The key kept in ``path`` (hex), created (32 random bytes, mode 0600) if missing.

        Created whole or not at all (written aside, then linked into place), so processes
        starting together agree on one key. A file open to other users is refused, as
        the signing key is.
        """
        if not path.exists():
            import tempfile

            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym-key.")
            try:
                with os.fdopen(fd, "w", encoding="ascii") as fh:  # mkstemp: mode 0600
                    fh.write(os.urandom(32).hex() + "\n")
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                os.unlink(tmp)
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the read for ever
            raise ValueError(f"{path} is not a regular file")
        if mode & 0o077:
            raise ValueError(f"{path} is open to other users (mode {mode & 0o777:o}): chmod 600")
        return cls.from_hex(path.read_text(encoding="ascii"))

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
