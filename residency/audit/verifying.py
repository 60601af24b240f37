"""Verifying evidence files: a signed JSON (audit report or erasure receipt), or a page
rendered from one.

What ``regionkit audit verify FILE`` vouches for, and how:

* **A signed JSON** is parsed strictly (a duplicate key, ``NaN`` or a lone surrogate
  is refused: a person or another parser could read a value the signature does not
  cover), must be a report or a receipt, and its signature must hold over its body
  with a trusted key (:func:`residency.signing.verify`).
* **Any other file** (Markdown, HTML, JUnit, OCSF, terminal text) must name a signed
  JSON beside it that verifies, *and be exactly what that JSON renders to* in one of
  the formats. Carrying the digest and the signature is not enough: a page saying
  "all passed" that quotes them would otherwise pass.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from residency.audit.model import REPORT_SCHEMA, AuditReport, verify_report
from residency.audit.render import FORMATS, render
from residency.receipts import RECEIPT_KIND, receipt_markdown
from residency.signing import TrustedKey, Verification, canonical_json

__all__ = ["EvidenceCheck", "check_evidence", "load_strict_json"]

KINDS = {REPORT_SCHEMA: "audit report", RECEIPT_KIND: "erasure receipt"}
_JSON_NAME = re.compile(r"[\w.+-]+\.json")
_MAX_BYTES = 256 * 1024 * 1024
_MAX_NAME = 255  # bytes in a file name on every common file system


class _Unreadable(ValueError):
    """A file that is not a readable, well-formed piece of evidence (regionkit's words)."""


@dataclass(frozen=True)
class EvidenceCheck:
    """What :func:`check_evidence` found; truthy only when the file is vouched for."""

    ok: bool
    reason: str
    file: Path
    signed_json: Path | None = None
    kind: str = ""  # "audit report" or "erasure receipt"
    rendering: str = ""  # the format ``file`` is, when it is not the signed JSON itself
    verification: Verification | None = None

    def __bool__(self) -> bool:
        return self.ok


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Unreadable(f"the key {key[:40]!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Unreadable(f"{name} is not a JSON number")


def load_strict_json(text: str) -> Any:
    """JSON as signed evidence must be: no duplicate key, no NaN or Infinity, valid Unicode.

    Raises ``ValueError`` saying, in regionkit's words, what is wrong.
    """
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Unreadable:
        raise
    except ValueError as exc:
        raise _Unreadable(f"not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
    except RecursionError:
        raise _Unreadable("nested too deeply to be a report") from None
    try:
        canonical_json(data).encode("utf-8")
    except UnicodeEncodeError:
        raise _Unreadable("it holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise _Unreadable("nested too deeply to be a report") from None
    return data


def _read(path: Path) -> str:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never end
            raise _Unreadable("not a regular file")
        if info.st_size > _MAX_BYTES:
            raise _Unreadable(f"larger than {_MAX_BYTES // 2**20} MiB")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise _Unreadable("cannot be read as UTF-8 text") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the file system refuses
        return False


def _kind(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    return KINDS.get(str(data.get("schema") or data.get("kind") or ""), "")


def _verify_signed(path: Path, trusted: Sequence[TrustedKey]) -> tuple[EvidenceCheck, Any]:
    """``path`` as a signed JSON: strictly parsed, of a known kind, validly signed; and
    the data read (what a page is compared against: never a second read of the file)."""
    try:
        data = load_strict_json(_read(path))
    except _Unreadable as exc:
        return EvidenceCheck(False, f"{path.name}: {exc}", path, path), None
    kind = _kind(data)
    if not kind:
        return EvidenceCheck(
            False, f"{path.name} is neither a regionkit audit report nor a receipt", path, path
        ), None
    result = verify_report(data, trusted=trusted)
    return EvidenceCheck(result.ok, result.reason, path, path, kind, "", result), data


def _renderings(data: dict[str, Any], kind: str, json_name: str) -> dict[str, set[str]]:
    """Every text ``data`` renders to, by format (both show-passed variants where any)."""
    if kind == "erasure receipt":
        return {"markdown": {receipt_markdown(data, json_name)}}
    report = AuditReport.model_validate(data)
    out: dict[str, set[str]] = {}
    for fmt in FORMATS:
        if fmt == "json":
            continue
        out[fmt] = {
            render(report, fmt, show_passed=shown, signed_json=json_name) for shown in (False, True)
        }
    return out


def check_evidence(path: Path, trusted: Sequence[TrustedKey]) -> EvidenceCheck:
    """Verify ``path``: a signed JSON, or a faithful rendering of one kept beside it."""
    try:
        text = _read(path)
    except _Unreadable as exc:
        return EvidenceCheck(False, f"{path.name}: {exc}", path)
    if text.lstrip().startswith("{") and '"signature"' in text:
        try:
            data = load_strict_json(text)
        except _Unreadable as exc:
            return EvidenceCheck(False, f"{path.name}: {exc}", path, path)
        if isinstance(data, dict) and "signature" in data:
            return _verify_signed(path, trusted)[0]
    names = [n for n in dict.fromkeys(_JSON_NAME.findall(text)) if n != path.name]
    candidates = [
        path.with_name(n) for n in names if len(n) <= _MAX_NAME and _is_file(path.with_name(n))
    ]
    if not candidates:
        return EvidenceCheck(
            False,
            f"{path.name} is not a signed JSON and names none beside it "
            "(keep the signed JSON next to the files rendered from it)",
            path,
        )
    last = EvidenceCheck(False, f"{path.name}: no signed JSON it names verifies", path)
    for signed in candidates:
        check, data = _verify_signed(signed, trusted)
        if not check.ok:
            last = check
            continue
        for fmt, texts in _renderings(data, check.kind, signed.name).items():
            if text in texts:
                return EvidenceCheck(
                    True, check.reason, path, signed, check.kind, fmt, check.verification
                )
        last = EvidenceCheck(
            False,
            f"{path.name} names {signed.name}, whose signature holds, but does not say what "
            f"it says: it differs from every rendering of that {check.kind}",
            path,
            signed,
            check.kind,
            "",
            check.verification,
        )
    return last
