"""Signatures over canonical JSON: audit reports, erasure receipts, any evidence.

::

    from residency.signing import LocalSigner, sign, verify
    signer = LocalSigner.load_or_create(Path(".regionkit/signing-key.pem"))
    sig = sign(body, signer)              # body: a JSON-able dict
    result = verify(body, sig, trusted=[signer.public_key_pem()])
    assert result.ok, result.reason

**What is signed.** The SHA-256 of the body's canonical JSON (:func:`canonical_json`:
keys sorted, no whitespace, UTF-8, no floats; for such data this is the RFC 8785
JCS form, so any JCS implementation reproduces the bytes). The 32-byte digest
is the message: Ed25519 signs those bytes; KMS signs them as a ``RAW`` message
(ECDSA_SHA_256 or RSASSA_PSS_SHA_256, which hash them once more), so one
definition serves both and any verifier can follow it. Anyone can recompute the
digest, only the key holder can sign it, so editing a body *and* recomputing
its hash still fails.

**Keys.**

* locally, an Ed25519 key the tool creates on first use and keeps in a PEM file
  (mode 0600; ``REGIONKIT_SIGNING_KEY_FILE``, default
  ``.regionkit/signing-key.pem``) via ``cryptography``;
* in aws mode, a KMS asymmetric signing key (``REGIONKIT_SIGNING_KMS_KEY``: key
  ID, ARN or alias; key spec ``ECC_NIST_P256`` with ``ECDSA_SHA_256``, or an RSA
  key with ``RSASSA_PSS_SHA_256``): the private key never leaves KMS.

**Verifying.** A :class:`Signature` carries the public key, so the arithmetic can be
checked offline; but anyone can sign with a key of their own, so :func:`verify`
also says whether the key is one the verifier *trusts* (a public key kept
out of band: ``regionkit audit public-key`` prints the local one; KMS
``GetPublicKey`` gives the aws one). ``Verification.ok`` needs all three: the
digest matches the body, the signature matches the digest, the key is trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_KEY_FILE",
    "KmsSigner",
    "LocalSigner",
    "Signature",
    "Signer",
    "TrustedKey",
    "Verification",
    "body_digest",
    "canonical_json",
    "deployment_signer",
    "key_fingerprint",
    "sign",
    "trusted_keys",
    "verify",
]

DEFAULT_KEY_FILE = Path(".regionkit/signing-key.pem")

Algorithm = Literal["ED25519", "ECDSA_SHA_256", "RSASSA_PSS_SHA_256"]
# A KMS key ARN: key/<uuid>, or key/mrk-<32 hex> for a multi-Region key (some tools
# write the multi-Region ID with the dashes of a UUID).
_KMS_KEY_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov)?:kms:[a-z0-9-]+:[0-9]{12}:key/(?:mrk-)?[0-9a-f]{8}-?[0-9a-f]{4}-?"
    r"[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"
)


def canonical_json(data: Any) -> str:
    """The canonical form digests and signatures are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def body_digest(body: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``body``."""
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _der(public_pem: str) -> bytes:
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_fingerprint(public_pem: str) -> str:
    """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo: names a key without trust."""
    return "sha256:" + hashlib.sha256(_der(public_pem)).hexdigest()[:32]


class Signature(BaseModel):
    """A signature over one body, with what a verifier needs to check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Algorithm
    key_id: str  # the local key's fingerprint, or the KMS key ARN
    key_fingerprint: str  # sha256 of the public key (DER SubjectPublicKeyInfo)
    public_key: str  # PEM
    digest_sha256: str  # of the canonical body
    value: str  # base64 signature over the 32 digest bytes


class Signer(Protocol):
    algorithm: Algorithm

    @property
    def key_id(self) -> str: ...

    def public_key_pem(self) -> str: ...

    def sign_digest(self, digest: bytes) -> bytes: ...


class LocalSigner:
    """An Ed25519 key kept in a PEM file (created, mode 0600, on first use)."""

    algorithm: Algorithm = "ED25519"

    def __init__(self, private_key: ed25519.Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path
        self._public = (
            private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    @classmethod
    def generate(cls) -> LocalSigner:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path = DEFAULT_KEY_FILE) -> LocalSigner:
        path = Path(path)
        if path.is_symlink() and not path.exists():
            raise ValueError(
                f"{path} is a symbolic link to nothing; remove it or point it at the key"
            )
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise ValueError(f"{path} is not a regular file")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            key = ed25519.Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return cls(key, path)
        if path.stat().st_mode & 0o077:
            # As ssh does: a private key others can read (or replace) signs nothing.
            raise ValueError(
                f"{path} is open to other users (mode {path.stat().st_mode & 0o777:o}): "
                f"chmod 600 {path}"
            )
        loaded = serialization.load_pem_private_key(data, password=None)
        if not isinstance(loaded, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(loaded, path)

    @property
    def key_id(self) -> str:
        return key_fingerprint(self._public)

    def public_key_pem(self) -> str:
        return self._public

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(digest)

    def __repr__(self) -> str:  # never the key
        return f"LocalSigner({self.key_id})"


class KmsSigner:
    """A KMS asymmetric signing key: ``kms:Sign`` on the digest bytes (a RAW message),
    ``kms:GetPublicKey`` once."""

    def __init__(self, kms: Any, key_id: str, algorithm: Algorithm | None = None) -> None:
        self._kms = kms
        meta = kms.get_public_key(KeyId=key_id)
        self._arn = str(meta.get("KeyId") or key_id)
        if not self._arn.startswith("arn:") and key_id.startswith("arn:"):
            self._arn = key_id  # AWS answers with the ARN; name the key by it
        usage = meta.get("KeyUsage")
        if usage is not None and usage != "SIGN_VERIFY":
            raise ValueError(
                f"KMS key {self._arn} has KeyUsage {usage}; evidence needs a SIGN_VERIFY key "
                "(ECC_NIST_P256 or RSA)"
            )
        der = meta["PublicKey"]
        self._public = (
            serialization.load_der_public_key(der)
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        offered = [str(a) for a in meta.get("SigningAlgorithms") or []]
        if algorithm is None:
            algorithm = "ECDSA_SHA_256" if "ECDSA_SHA_256" in offered else "RSASSA_PSS_SHA_256"
        if offered and algorithm not in offered:
            raise ValueError(
                f"KMS key {self._arn} does not offer {algorithm} (it offers {', '.join(offered)})"
            )
        self.algorithm = algorithm

    @property
    def key_id(self) -> str:
        return self._arn

    def public_key_pem(self) -> str:
        return self._public

    def sign_digest(self, digest: bytes) -> bytes:
        """``kms:Sign``; a failure is a :class:`~residency.errors.BackendError` naming the
        service's error code (never its message), so the caller can say what was lost."""
        try:
            out = self._kms.sign(
                KeyId=self._arn,
                Message=digest,
                MessageType="RAW",
                SigningAlgorithm=self.algorithm,
            )
        except Exception as exc:
            from residency.clients import error_code
            from residency.errors import BackendError

            arn = self._arn.split(":")
            raise BackendError(
                operation="kms:Sign",
                region=arn[3] if len(arn) > 5 and arn[3] else "-",
                code=error_code(exc),
                reason=f"KMS key {self._arn} did not sign the evidence",
            ) from exc
        return bytes(out["Signature"])


def sign(body: Any, signer: Signer) -> Signature:
    """Sign the canonical JSON of ``body``."""
    hex_digest = body_digest(body)
    value = signer.sign_digest(bytes.fromhex(hex_digest))
    public = signer.public_key_pem()
    return Signature(
        algorithm=signer.algorithm,
        key_id=signer.key_id,
        key_fingerprint=key_fingerprint(public),
        public_key=public,
        digest_sha256=hex_digest,
        value=base64.b64encode(value).decode("ascii"),
    )


@dataclass(frozen=True)
class TrustedKey:
    """A public key a verifier trusts, and where the verifier got it.

    ``name`` is the key's identity when the source knows one (a KMS key's ARN); a PEM
    file only knows the key itself, named by its fingerprint.
    """

    pem: str
    source: str  # "--public-key auditor.pem", "local signing key .regionkit/...", "KMS key ..."
    name: str = ""

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.pem)


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`; ``reason`` says what failed, in regionkit's words."""

    ok: bool
    reason: str
    key_id: str = ""  # when ok: the identity verified (KMS ARN, else the fingerprint)
    key_fingerprint: str = ""
    algorithm: str = ""
    digest_matches: bool = False
    signature_valid: bool = False
    trusted: bool = False
    key_source: str = ""  # when ok: where the trusted key came from

    def __bool__(self) -> bool:
        return self.ok


def _check(sig: Signature, digest: bytes) -> bool:
    key = serialization.load_pem_public_key(sig.public_key.encode("ascii"))
    raw = base64.b64decode(sig.value, validate=True)
    try:
        if sig.algorithm == "ED25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(raw, digest)
        elif sig.algorithm == "ECDSA_SHA_256":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            key.verify(raw, digest, ec.ECDSA(hashes.SHA256()))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(
                raw,
                digest,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                hashes.SHA256(),
            )
    except InvalidSignature:
        return False
    return True


def verify(
    body: Any,
    signature: Signature | dict[str, Any],
    *,
    trusted: Iterable[str | TrustedKey] = (),
) -> Verification:
    """Check ``signature`` over ``body``; ``trusted``: the keys the verifier trusts (PEM
    text, or :class:`TrustedKey` naming where each came from)."""
    try:
        sig = signature if isinstance(signature, Signature) else Signature.model_validate(signature)
    except ValueError:
        return Verification(False, "the signature block is malformed")
    base = Verification(
        False,
        "",
        key_id=sig.key_id,
        key_fingerprint=sig.key_fingerprint,
        algorithm=sig.algorithm,
    )
    hex_digest = body_digest(body)
    if hex_digest != sig.digest_sha256:
        return replace(base, reason="the report was changed after it was signed")
    base = replace(base, digest_matches=True)
    try:
        valid = _check(sig, bytes.fromhex(hex_digest))
        fingerprint = key_fingerprint(sig.public_key)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return replace(base, reason="the signature or its public key cannot be decoded")
    if not valid:
        return replace(
            base,
            reason="the signature does not match the body's digest (edited, then re-hashed?)",
        )
    base = replace(base, signature_valid=True)
    if fingerprint != sig.key_fingerprint:
        return replace(base, reason="the key fingerprint does not match the public key it names")
    key = _trusted(fingerprint, trusted)
    if key is None:
        return replace(
            base,
            reason=f"validly signed, but by key {fingerprint}, which is not a trusted key: "
            "pass the signer's public key (--public-key)",
        )
    # key_id is a label in the unsigned signature block: it must not name another key.
    # An Ed25519 key is regionkit's local key, labelled by its fingerprint; a KMS key (ECDSA
    # or RSA-PSS) by its key ARN, which only a trusted KMS key can confirm: with a bare
    # PEM, a key ARN is accepted as a label this verifier could not check (and said so).
    known = key.name or fingerprint
    label = sig.key_id
    unchecked = (
        not key.name and sig.algorithm != "ED25519" and _KMS_KEY_ARN.fullmatch(label) is not None
    )
    if label not in (known, fingerprint) and not unchecked and not _same_mrk(label, known):
        return replace(
            base,
            reason=f"the signature calls its key {label!r}, but it was made by {known} "
            f"({key.source})",
        )
    note = f"; it calls itself {label}, which this key file cannot confirm" if unchecked else ""
    return replace(
        base,
        ok=True,
        trusted=True,
        key_id=known,
        key_source=key.source,
        reason=f"signed by {known} ({sig.algorithm}), trusted as {key.source}{note}",
    )


def _trusted(fingerprint: str, trusted: Iterable[str | TrustedKey]) -> TrustedKey | None:
    for entry in trusted:
        key = entry if isinstance(entry, TrustedKey) else TrustedKey(entry, "a given key")
        try:
            if key.fingerprint == fingerprint:
                return key
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    return None


def deployment_signer(settings: Any, client: Any = None) -> Signer:
    """The deployment's signing key, for audit reports and erasure receipts alike.

    In aws mode with ``signing_kms_key`` set: that KMS key (``client(service, region)``
    builds the KMS client, in the key's region when an ARN names it, else the
    settings' region). Otherwise the local Ed25519 key file ``signing_key_file``,
    created on first use. Raises ``ValueError`` or the client's error when the key
    cannot be used; the caller turns that into its own error.
    """
    kms_key = getattr(settings, "signing_kms_key", None)
    if getattr(settings, "mode", "local") == "aws" and kms_key:
        if client is None:
            raise ValueError("a KMS signing key needs a client factory")
        parts = str(kms_key).split(":")
        region = parts[3] if str(kms_key).startswith("arn:") and len(parts) > 4 else None
        region = region or getattr(settings, "region", None)
        if not region:
            raise ValueError("name the KMS key by ARN, or set the region")
        return KmsSigner(client("kms", region), str(kms_key))
    return LocalSigner.load_or_create(Path(getattr(settings, "signing_key_file", DEFAULT_KEY_FILE)))


_MRK_ARN = re.compile(r"arn:([a-z-]+):kms:[a-z0-9-]+:(\d{12}):key/(mrk-[0-9a-f]{32})")


def _same_mrk(a: str, b: str) -> bool:
    """Two ARNs of one multi-Region key (its replicas share the key material and the
    ``mrk-`` ID, and differ only by region): a report signed with the replica in one
    region verifies against the replica in another."""
    ma, mb = _MRK_ARN.fullmatch(a), _MRK_ARN.fullmatch(b)
    return ma is not None and mb is not None and ma.groups() == mb.groups()


def trusted_keys(
    settings: Any, client: Any = None, given: Iterable[TrustedKey] = ()
) -> list[TrustedKey]:
    """The keys a verifier trusts: ``given`` (kept out of band) and nothing else when any
    is given; otherwise this deployment's own, the local key file (if it exists) and the
    KMS key in aws mode.

    Keys given are exclusive because the deployment's key is found through the working
    directory (``.env``, the default key path): a report shipped with a key file of its
    own would otherwise vouch for itself.
    """
    keys = list(given)
    if keys:
        return keys
    path = Path(getattr(settings, "signing_key_file", DEFAULT_KEY_FILE))
    if path.exists():
        try:
            signer = LocalSigner.load_or_create(path)
            keys.append(TrustedKey(signer.public_key_pem(), f"the local signing key {path}"))
        except (OSError, ValueError):
            pass
    if getattr(settings, "mode", "local") == "aws" and getattr(settings, "signing_kms_key", None):
        try:
            kms = deployment_signer(settings, client)
            keys.append(TrustedKey(kms.public_key_pem(), f"KMS key {kms.key_id}", kms.key_id))
        except Exception:  # an unreachable key is simply not trusted; verify says so
            pass
    return keys
