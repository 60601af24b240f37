"""Erasure receipts: the signed JSON an auditor keeps, and the Markdown people read.

The body is what :meth:`regions.erasure.ErasureResult.receipt` builds: no personal
data, the subject by keyed pseudonym and the key that made it (``pseudonym_key``, a
key ID, never the key), so an operator holding the key can recompute the pseudonym of
the user meant and see that the receipt is theirs. It is signed as audit reports are
(:mod:`residency.signing`), with the deployment's key.

The Markdown is a pure function of the signed JSON (:func:`receipt_markdown`), so
``regionkit audit verify RECEIPT.md`` re-renders the JSON beside it and compares: a
receipt edited to say "done" no longer matches.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from residency.signing import Signer

__all__ = [
    "RECEIPT_KIND",
    "not_erased_at_once",
    "receipt_markdown",
    "sign_receipt",
    "write_receipt",
]

RECEIPT_KIND = "regionkit.erasure-receipt/2"
STREAM_RETENTION = timedelta(hours=24)
PITR_DEFAULT_DAYS = 35


def not_erased_at_once(erased_at: datetime) -> list[dict[str, str]]:
    """What an erasure at ``erased_at`` cannot remove at once, and until when it lingers."""
    pitr = (erased_at + timedelta(days=PITR_DEFAULT_DAYS)).date().isoformat()
    streams = (erased_at + STREAM_RETENTION).isoformat(timespec="seconds")
    return [
        {
            "what": "point-in-time-recovery backups",
            "until": pitr,
            "why": "each table's PITR window (35 days unless set lower) rolls off by then",
        },
        {
            "what": "DynamoDB stream records",
            "until": streams,
            "why": "streams keep records for 24 hours",
        },
        {
            "what": "exports made earlier",
            "until": "when their holders delete them",
            "why": "regionkit subject export files are copies outside DynamoDB",
        },
        {
            "what": "the conflict log",
            "until": "its retention",
            "why": "it holds keys and versions of conflicting writes (no attribute values)",
        },
    ]


def sign_receipt(body: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """The receipt as stored: the body, its digest and the signature over it."""
    # Imported here: the router imports this module (through regions.erasure), and
    # signing loads `cryptography`, 15 MB that the detector Lambda's package would carry.
    from residency.signing import body_digest, sign

    return {
        **body,
        "report_sha256": body_digest(body),
        "signature": sign(body, signer).model_dump(),
    }


def _cell(text: object) -> str:
    """Text safe in one Markdown table cell: no pipe, no line break."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")


def receipt_markdown(signed: dict[str, Any], json_name: str) -> str:
    """The receipt for people; ``json_name`` is the signed JSON beside it."""
    sig = signed.get("signature") or {}
    lines = [
        "# Erasure receipt",
        "",
        f"- subject (keyed pseudonym, key {_cell(signed.get('pseudonym_key', '?'))}): "
        f"`{_cell(signed['subject'])}`",
        f"- status: **{_cell(signed['status'])}**"
        + (f" ({_cell(signed['reason'])})" if signed.get("reason") else ""),
        f"- started: {_cell(signed['started_at'])}; finished: {_cell(signed['finished_at'])}",
        "",
        "## Erased (tombstones that refuse any later write)",
        "",
        "| region / table | data class | items | key pseudonyms |",
        "|---|---|---|---|",
    ]
    for where, e in sorted(signed["erased"].items()):
        keys = ", ".join(f"`{_cell(k)}`" for k in e["keys"][:5])
        keys += " …" if len(e["keys"]) > 5 else ""
        lines.append(f"| {_cell(where)} | {_cell(e['data_class'])} | {e['count']} | {keys} |")
    if not signed["erased"]:
        lines.append("| (none) | | 0 | |")
    if signed["anonymized"]:
        lines += ["", "## Anonymized", "", "| where | data class | items |", "|---|---|---|"]
        for where, e in sorted(signed["anonymized"].items()):
            lines.append(f"| {_cell(where)} | {_cell(e['data_class'])} | {e['count']} |")
    if signed["kept"]:
        lines += ["", "## Kept, by policy", "", "| data class | key | reason |", "|---|---|---|"]
        lines += [
            f"| {_cell(k['data_class'])} | `{_cell(k['key'])}` | {_cell(k['reason'])} |"
            for k in signed["kept"]
        ]
    lines += ["", "## Verified clean", "", "| region / table | at |", "|---|---|"]
    lines += [f"| {_cell(w)} | {_cell(t)} |" for w, t in sorted(signed["verified_clean"].items())]
    if signed["still_held"]:
        lines += ["", "**Still held:** " + ", ".join(_cell(h) for h in signed["still_held"])]
    lines += ["", "## Not erasable at once", "", "| what | until | why |", "|---|---|---|"]
    lines += [
        f"| {_cell(w['what'])} | {_cell(w['until'])} | {_cell(w['why'])} |"
        for w in signed["not_erased_at_once"]
    ]
    lines += [
        "",
        "## Signature",
        "",
        f"- signed JSON: {json_name}",
        f"- key: `{_cell(sig.get('key_id', '?'))}` ({_cell(sig.get('algorithm', '?'))}), "
        f"fingerprint `{_cell(sig.get('key_fingerprint', '?'))}`",
        f"- report sha256: `{_cell(signed.get('report_sha256', '?'))}`",
        f"- signature: `{_cell(sig.get('value', '?'))}`",
        "",
        "Verify with `regionkit audit verify` on this file or the JSON: it checks the "
        "signature and that this page says what the JSON says.",
    ]
    return "\n".join(lines) + "\n"


def _stem(body: dict[str, Any]) -> str:
    """``erasure-<subject pseudonym>-<finished, digits only>``: safe in any file system."""
    when = re.sub(r"[^0-9TZ]", "", str(body.get("finished_at") or body.get("started_at")))
    subject = re.sub(r"[^A-Za-z0-9-]", "", str(body["subject"]))
    return f"erasure-{subject}-{when or 'unfinished'}"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was already there keeps its mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_receipt(body: dict[str, Any], signer: Signer, directory: Path) -> Path:
    """Sign ``body`` and write it as ``<stem>.json`` (mode 0600) and ``<stem>.md`` in
    ``directory``; returns the JSON's path.

    The erasure it records has already happened and cannot be re-run into the same
    receipt, so a signing failure keeps the body as ``<stem>.unsigned.json`` (not
    evidence until signed) and raises :class:`~residency.errors.OperationError` naming it.
    """
    from residency.errors import OperationError, RegionkitError

    stem = directory / _stem(body)
    try:
        signed = sign_receipt(body, signer)
    except RegionkitError as exc:
        kept = stem.with_suffix(".unsigned.json")
        _write_private(kept, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        raise OperationError(
            message=f"the receipt could not be signed ({exc}); the erasure's record is kept "
            f"unsigned in {kept}: it is not evidence until signed"
        ) from exc
    json_path = stem.with_suffix(".json")
    _write_private(json_path, json.dumps(signed, indent=2, ensure_ascii=False) + "\n")
    _write_private(stem.with_suffix(".md"), receipt_markdown(signed, json_path.name))
    return json_path
