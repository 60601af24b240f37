"""Replicated changes applied inside a region's server process, as DynamoDB applies them.

In AWS a global table's replication is internal to DynamoDB: a replicated change is
never a client request, and it is not throttled, signed or parsed as one. The
emulator used to send each change as a client would, a conditional ``PutItem`` over
HTTP. That cost the destination's server about 1.8 ms of CPU per change (HTTP,
botocore's wire format, moto's request layer and its condition parser, twice), so a
region back from a 10 s outage took five seconds to take its backlog in.

This module is the replica's side of a cheaper path. The emulator posts a batch of
changes to ``X-Amz-Target: RegionkitReplication.ApplyChanges`` on the region's own
server, through the same listener as every other request: a region that refuses
connections or is stopped refuses or stalls these too, exactly as before. Each change
is applied through **moto's own backend** (``DynamoDBBackend.put_item`` /
``delete_item``) with the same condition expression the HTTP path sent, after the
same request validation moto's ``PutItem`` / ``DeleteItem`` run, so what is stored,
what is refused and what is streamed are moto's. Only the request layer is skipped.

Request body (DynamoDB JSON, binary values base64 as on the wire; they are decoded to
bytes here, as moto's request parser decodes them, so that what is stored is what a
client's write would store)::

    {"groups": [[{"table": "content", "image": {...}, "keys": {...},
                  "condition": {"ConditionExpression": ..., ...}}, ...], ...]}

Each group holds the versions of one item, in order: a change that is not applied
leaves the rest of its group unapplied, so an item is never written over a version
that did not land. The answer gives, per group, how many were applied and the error
code and message of the change that stopped it (``ConditionalCheckFailedException``
for a lost condition)::

    {"results": [{"applied": 2, "code": null, "message": null}, ...]}

The server process loads this module by path (only the standard library and moto).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["PREFIX", "TARGET", "apply_groups", "make_app", "map_binary"]

PREFIX = "RegionkitReplication."
TARGET = PREFIX + "ApplyChanges"
"""The ``X-Amz-Target`` of a batch of replicated changes."""

_INTERNAL = "InternalServerError"  # the emulator retries it (a fault, not a refusal)


def _backend(region: str, table: str) -> Any:
    """The moto DynamoDB backend of ``region`` that holds ``table``."""
    from moto.dynamodb.exceptions import ResourceNotFoundException
    from moto.dynamodb.models import dynamodb_backends

    for by_region in list(dynamodb_backends.values()):
        backend = dict.get(by_region, region)  # an existing backend only: never make one
        if backend is not None and table in backend.tables:
            return backend
    raise ResourceNotFoundException(table_name=table)


def _validate(backend: Any, change: dict[str, Any]) -> None:
    """What moto's request layer checks before its backend is called."""
    from moto.dynamodb import responses
    from moto.dynamodb.exceptions import ProvidedKeyDoesNotExist

    table = backend.get_table(change["table"])
    image = change.get("image")
    if image is not None:
        responses.validate_put_has_empty_keys(image, table)
        responses.validate_put_has_empty_attrs(image, table)
        responses.validate_put_has_gsi_keys_set_to_none(image, table)
    elif not all(k in table.attribute_keys for k in change["keys"]):
        raise ProvidedKeyDoesNotExist


def map_binary(
    attrs: dict[str, Any] | None, convert: Callable[[Any], Any]
) -> dict[str, Any] | None:
    """``attrs`` (DynamoDB JSON attribute values by name) with ``convert`` applied to
    every binary value (B, and each member of BS), at any depth of M and L."""

    def value(v: Any) -> Any:
        if not isinstance(v, dict) or len(v) != 1:
            return v
        ((kind, inner),) = v.items()
        if kind == "B":
            return {"B": convert(inner)}
        if kind == "BS":
            return {"BS": [convert(b) for b in inner]}
        if kind == "M":
            return {"M": {k: value(x) for k, x in inner.items()}}
        if kind == "L":
            return {"L": [value(x) for x in inner]}
        return v

    return None if attrs is None else {k: value(v) for k, v in attrs.items()}


def _from_wire(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Attribute values as moto's request parser hands them to the backend: binary
    values decoded from the wire's base64 to bytes."""
    return map_binary(attrs, lambda b: base64.b64decode(b, validate=True))


def _apply_one(region: str, raw: dict[str, Any]) -> None:
    change = {**raw, "image": _from_wire(raw.get("image")), "keys": _from_wire(raw["keys"])}
    table = change["table"]
    backend = _backend(region, table)
    _validate(backend, change)
    cond = change.get("condition") or {}
    expression = cond.get("ConditionExpression")
    names = cond.get("ExpressionAttributeNames") or {}
    values = _from_wire(cond.get("ExpressionAttributeValues")) or {}
    if change.get("image") is not None:
        backend.put_item(
            table,
            change["image"],
            condition_expression=expression,
            expression_attribute_names=names,
            expression_attribute_values=values,
            overwrite=expression is None,
        )
    else:
        backend.delete_item(
            table,
            change["keys"],
            expression_attribute_names=names,
            expression_attribute_values=values,
            condition_expression=expression,
        )


def _error(exc: Exception) -> tuple[str, str]:
    """moto's error code and message for ``exc`` (``InternalServerError`` for a bug)."""
    code = getattr(exc, "error_type", None)
    if isinstance(code, str) and code:
        message = getattr(exc, "message", None) or str(exc)
        return code.rpartition("#")[2], str(message)
    return _INTERNAL, type(exc).__name__


def apply_groups(region: str, groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Apply each group's changes in order until one is not applied; one result per group."""
    results: list[dict[str, Any]] = []
    for group in groups:
        applied, code, message = 0, None, None
        for change in group:
            try:
                _apply_one(region, change)
            except Exception as exc:  # moto's refusals and bugs alike: reported, per group
                code, message = _error(exc)
                break
            applied += 1
        results.append({"applied": applied, "code": code, "message": message})
    return results


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_app(region: str) -> WsgiApp:
    """The WSGI app that answers :data:`TARGET` for the server of ``region``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, payload = "200 OK", b""
        try:
            if environ.get("HTTP_X_AMZ_TARGET") != TARGET:
                raise LookupError(f"unknown target {environ.get('HTTP_X_AMZ_TARGET')!r}")
            size = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(size))
            groups = body["groups"]
            if not isinstance(groups, list):
                raise TypeError("groups is not a list")
            payload = json.dumps({"results": apply_groups(region, groups)}).encode()
        except (LookupError, TypeError, ValueError) as exc:  # a malformed request: a bug
            status = "400 Bad Request"
            payload = json.dumps({"__type": "ValidationException", "message": str(exc)}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.0")]
        start_response(status, [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    return app
