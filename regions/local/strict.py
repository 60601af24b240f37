"""A strict stand-in for real DynamoDB's request validation, as a botocore hook.

moto accepts requests that real DynamoDB answers with a ``ValidationException``,
so a test that passes against moto is no evidence that AWS accepts the request.
This module rejects those requests on the client side, before they are sent, with
the same error real DynamoDB returns (a :class:`botocore.exceptions.ClientError`
with code ``ValidationException``, its message prefixed ``[strict]``). The rules,
from the DynamoDB API reference and its developer guide:

==========================  ============================================================
``unused``                  an ``ExpressionAttributeNames`` / ``Values`` entry no
                            expression of the request uses
``undefined``               an expression uses ``#name`` / ``:value`` it does not define
``no-expression``           names or values given, but no expression at all
``empty-map``               an empty ``ExpressionAttributeNames`` / ``Values`` map
``reserved``                a reserved word used as an attribute name without ``#``
``empty-key``               an empty string or binary in a key attribute (table or index),
                            in an item, a key, or an update's ``SET`` of an index key
``key-type``                a key attribute (table or index) of another type than the
                            table's ``AttributeDefinitions`` declare
``item-size``               an item over 400 KB
``transaction-size``        more than 100 actions, or over 4 MB of items, in a transaction
``transaction-duplicate``   two actions on one item in a transaction
``batch-size``              more than 25 writes, or 100 keys to get, in one batch
``batch-duplicate``         one key twice in a batch
``empty-set``               an empty ``SS``, ``NS`` or ``BS``
``set-duplicate``           a set with one element twice
``number``                  more than 38 significant digits, or out of range
``legacy-mix``              a legacy parameter (``Expected``, ``AttributeUpdates``,
                            ``KeyConditions``, ``QueryFilter``, ``ScanFilter``,
                            ``AttributesToGet``) next to an expression
``return-values``           ``ReturnValues`` other than ``NONE``/``ALL_OLD`` on a put
                            or a delete
==========================  ============================================================

Messages name the rule, the operation and the attribute name or placeholder,
never a value, so no item content reaches an error or a log.

How it is switched on: botocore loads client plugins named in the environment
variable ``BOTOCORE_EXPERIMENTAL__PLUGINS`` (``regionkit_strict=regions.local.strict``)
into every client any session creates, in this process and in every process it
starts. ``tests/conftest.py`` sets it for the whole test suite, so every request
that the router, the detector, the drills, the audit, the emulator and the tests
send passes through :func:`validate`. :func:`install` does the same for one
client. Key schemas are learned from ``CreateTable`` requests and, for tables
created elsewhere, from one ``DescribeTable`` per endpoint and table.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from regions.codec import item_size

__all__ = [
    "ENV_VALUE",
    "ENV_VAR",
    "RULES",
    "StrictStats",
    "initialize_client_plugin",
    "install",
    "item_size",
    "stats",
    "validate",
]

ENV_VAR = "BOTOCORE_EXPERIMENTAL__PLUGINS"
ENV_VALUE = "regionkit_strict=regions.local.strict"
RULES = (
    "unused",
    "undefined",
    "no-expression",
    "empty-map",
    "reserved",
    "empty-key",
    "key-type",
    "item-size",
    "transaction-size",
    "transaction-duplicate",
    "batch-size",
    "batch-duplicate",
    "empty-set",
    "set-duplicate",
    "number",
    "legacy-mix",
    "return-values",
)
MAX_ITEM_BYTES = 400 * 1024
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
_EXPRESSIONS = (
    "ConditionExpression",
    "UpdateExpression",
    "ProjectionExpression",
    "FilterExpression",
    "KeyConditionExpression",
)
_LEGACY = (
    "Expected",
    "AttributeUpdates",
    "KeyConditions",
    "QueryFilter",
    "ScanFilter",
    "AttributesToGet",
)
_GRAMMAR = frozenset(
    {
        "and",
        "or",
        "not",
        "between",
        "in",
        "set",
        "remove",
        "add",
        "delete",
    }
)
_NAME = re.compile(r"#[A-Za-z0-9_]+")
_VALUE = re.compile(r":[A-Za-z0-9_]+")
_WORD = re.compile(r"(?<![#:A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")
_reserved: frozenset[str] | None = None
_EXACT = Context(prec=200)


class StrictStats:
    """What the validator has seen in this process (thread-safe counters)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checked = 0
        self.rejected: list[str] = []  # "rule: Operation" only, never a value

    def reset(self) -> None:
        with self.lock:
            self.checked = 0
            self.rejected = []


stats = StrictStats()
_schemas: dict[tuple[str, str], tuple[str, ...]] = {}
_types: dict[tuple[str, str], dict[str, str]] = {}  # key attribute -> S, N or B
_schema_lock = threading.Lock()


def _reserved_words() -> frozenset[str]:
    global _reserved
    if _reserved is None:
        # DynamoDB's published list of 573 reserved words, as moto ships it.
        from moto.dynamodb.parsing.reserved_keywords import ReservedKeywords

        _reserved = frozenset(w.lower() for w in ReservedKeywords.get_reserved_keywords())
    return _reserved


class _Invalid(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail

    def __reduce__(self) -> tuple[object, ...]:  # pickles like every regionkit error
        return (type(self), (self.rule, self.detail))


# --- the rules -------------------------------------------------------------------


def _check_expressions(req: dict[str, Any]) -> None:
    exprs = [str(req[k]) for k in _EXPRESSIONS if req.get(k)]
    names = req.get("ExpressionAttributeNames")
    values = req.get("ExpressionAttributeValues")
    given_maps = (("ExpressionAttributeNames", names), ("ExpressionAttributeValues", values))
    for label, given in given_maps:
        if given is None:
            continue
        if not given:
            raise _Invalid("empty-map", f"{label} must not be empty")
        if not exprs:
            raise _Invalid("no-expression", f"{label} can only be specified with expressions")
    if exprs and any(req.get(k) for k in _LEGACY):
        legacy = [k for k in _LEGACY if req.get(k)]
        raise _Invalid("legacy-mix", f"cannot use both expression and non-expression {legacy}")
    used_names: set[str] = set()
    used_values: set[str] = set()
    for expr in exprs:
        n, v, bad = _parse(expr)
        used_names |= n
        used_values |= v
        if bad:
            raise _Invalid("reserved", f"attribute name is a reserved keyword: {bad}")
    unused = sorted(set(names or {}) - used_names) + sorted(set(values or {}) - used_values)
    if unused:
        raise _Invalid("unused", f"provided but unused in expressions: keys {unused}")
    undefined = sorted(used_names - set(names or {})) + sorted(used_values - set(values or {}))
    if undefined:
        raise _Invalid("undefined", f"used in an expression but not defined: {undefined}")
    for value in (values or {}).values():
        _check_value(value)


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> tuple[frozenset[str], frozenset[str], str | None]:
    """An expression's ``#names``, ``:values`` and its first unescaped reserved word
    (cached: a service sends the same few expressions over and over)."""
    reserved = _reserved_words()
    bad = None
    stripped = _VALUE.sub(" ", _NAME.sub(" ", expr))
    for m in _WORD.finditer(stripped):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _GRAMMAR:
            continue
        if word.lower() in reserved:
            bad = word
            break
    return frozenset(_NAME.findall(expr)), frozenset(_VALUE.findall(expr)), bad


def _check_value(v: Any, depth: int = 0) -> None:
    if not isinstance(v, dict) or len(v) != 1 or depth > 32:
        return
    ((t, x),) = v.items()
    if t in ("SS", "NS", "BS"):
        if not x:
            raise _Invalid("empty-set", f"an {t} set may not be empty")
        members = [_number(n) for n in x] if t == "NS" else list(x)
        if len(set(members)) != len(members):
            raise _Invalid("set-duplicate", f"an {t} set contains duplicates")
    elif t == "N":
        _number(x)
    elif t == "M":
        for sub in x.values():
            _check_value(sub, depth + 1)
    elif t == "L":
        for sub in x:
            _check_value(sub, depth + 1)


def _number(text: Any) -> Decimal:
    try:
        d = Decimal(str(text))
    except InvalidOperation:
        raise _Invalid("number", "a number attribute is not a number") from None
    if not d.is_finite():
        raise _Invalid("number", "a number attribute is not finite")
    digits = "".join(map(str, d.as_tuple().digits)).strip("0") or "0"
    if len(digits) > 38:
        raise _Invalid("number", "more than 38 significant digits in a number")
    if d and not (Decimal("1e-130") <= abs(d) < Decimal("1e126")):
        raise _Invalid("number", "a number is outside DynamoDB's range")
    return d.normalize(_EXACT)


def _check_item(
    item: dict[str, Any], keys: tuple[str, ...], types: dict[str, str] | None = None
) -> None:
    for value in item.values():
        _check_value(value)
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise _Invalid("item-size", f"item size {size} bytes exceeds the 400 KB limit")
    _check_key(item, keys, types)


def _check_key(
    key: dict[str, Any], names: tuple[str, ...] | None = None, types: dict[str, str] | None = None
) -> None:
    for name in names if names is not None else tuple(key):
        v = key.get(name)
        if isinstance(v, dict) and len(v) == 1:
            ((t, x),) = v.items()
            if t in ("S", "B") and len(x) == 0:
                raise _Invalid("empty-key", f"an empty {t} value in key attribute {name!r}")
            declared = (types or {}).get(name)
            if declared is not None and t != declared:
                raise _Invalid(
                    "key-type",
                    f"type mismatch for key attribute {name!r}: expected {declared}, got {t}",
                )


_CLAUSE = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b", re.IGNORECASE)


def _set_assignments(expr: str) -> Iterator[tuple[str, str]]:
    """``(path, value)`` of each ``path = :value`` in an update's ``SET`` clauses (the only
    form that can put a bare value in a key attribute)."""
    parts = _CLAUSE.split(expr)
    for verb, body in zip(parts[1::2], parts[2::2], strict=False):
        if verb.upper() != "SET":
            continue
        depth, start = 0, 0
        pieces = []
        for i, ch in enumerate(body):
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                pieces.append(body[start:i])
                start = i + 1
        pieces.append(body[start:])
        for piece in pieces:
            path, eq, value = piece.partition("=")
            if eq and _VALUE.fullmatch(value.strip()):
                yield path.strip(), value.strip()


def _check_update_keys(
    params: dict[str, Any], keys: tuple[str, ...], types: dict[str, str] | None
) -> None:
    """An update may not set an index key to an empty value or another type."""
    names = params.get("ExpressionAttributeNames") or {}
    values = params.get("ExpressionAttributeValues") or {}
    for path, ref in _set_assignments(str(params.get("UpdateExpression", ""))):
        attr = names.get(path, path)
        if attr in keys and ref in values:
            _check_key({attr: values[ref]}, (attr,), types)


def _key_of(item: dict[str, Any], names: tuple[str, ...], table: str) -> str:
    import json

    return table + "\0" + json.dumps({n: item.get(n) for n in names}, sort_keys=True, default=str)


# --- key schemas ---------------------------------------------------------------------


def _schema_from_table(desc: dict[str, Any]) -> tuple[str, ...]:
    names = [k["AttributeName"] for k in desc.get("KeySchema", [])]
    for idx in desc.get("GlobalSecondaryIndexes", []) + desc.get("LocalSecondaryIndexes", []):
        names.extend(k["AttributeName"] for k in idx.get("KeySchema", []))
    return tuple(dict.fromkeys(names))


def _types_from_table(desc: dict[str, Any]) -> dict[str, str]:
    return {
        str(a["AttributeName"]): str(a["AttributeType"])
        for a in desc.get("AttributeDefinitions", [])
    }


class _Schemas:
    """Key attribute names (table and index keys) per (endpoint, table)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.endpoint = (
            str(getattr(client.meta, "endpoint_url", ""))
            + "|"
            + str(getattr(client.meta, "region_name", ""))
        )
        self._local = threading.local()

    def get(self, table: str) -> tuple[str, ...] | None:
        slot = (self.endpoint, table)
        with _schema_lock:
            if slot in _schemas:
                return _schemas[slot]
        if getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            desc = self.client.describe_table(TableName=table)["Table"]
        except Exception:  # unknown table: the real call fails on its own
            return None
        finally:
            self._local.busy = False
        schema = _schema_from_table(desc)
        with _schema_lock:
            _schemas[slot] = schema
            _types[slot] = _types_from_table(desc)
        return schema

    def types(self, table: str) -> dict[str, str] | None:
        """The declared type of each key attribute (after :meth:`get` found the table)."""
        with _schema_lock:
            return _types.get((self.endpoint, table))

    def learn(self, table: str, desc: dict[str, Any]) -> None:
        with _schema_lock:
            _schemas[(self.endpoint, table)] = _schema_from_table(desc)
            _types[(self.endpoint, table)] = _types_from_table(desc)


# --- per operation -------------------------------------------------------------------


def _transact_parts(params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in params.get("TransactItems", []):
        yield from entry.items()


def _schema_of(schemas: _Schemas | None, table: str) -> tuple[str, ...]:
    """The table's key attribute names, or () when unknown."""
    return (schemas.get(table) if schemas is not None else None) or ()


def _types_of(schemas: _Schemas | None, table: str) -> dict[str, str] | None:
    return schemas.types(table) if schemas is not None else None


def _check_item_op(operation: str, params: dict[str, Any], schemas: _Schemas | None) -> None:
    """PutItem, UpdateItem, DeleteItem, GetItem, Query and Scan."""
    _check_expressions(params)
    rv = params.get("ReturnValues")
    if operation in ("PutItem", "DeleteItem") and rv not in (None, "NONE", "ALL_OLD"):
        raise _Invalid("return-values", f"ReturnValues {rv} is not valid on {operation}")
    table = str(params.get("TableName"))
    if "Key" in params:
        keys = _schema_of(schemas, table)
        _check_key(params["Key"], None, _types_of(schemas, table))
        if operation == "UpdateItem":
            _check_update_keys(params, keys, _types_of(schemas, table))
    if operation == "PutItem":
        keys = _schema_of(schemas, table)
        _check_item(params.get("Item", {}), keys, _types_of(schemas, table))
    if operation == "Query":  # key condition values are key values
        values = params.get("ExpressionAttributeValues") or {}
        for ref in _VALUE.findall(str(params.get("KeyConditionExpression", ""))):
            if ref in values:
                _check_key({ref: values[ref]})


def _check_transaction(operation: str, params: dict[str, Any], schemas: _Schemas | None) -> None:
    """TransactWriteItems and TransactGetItems: at most 100 actions, one per item."""
    parts = list(_transact_parts(params))
    if len(parts) > 100:
        raise _Invalid("transaction-size", f"{len(parts)} actions (at most 100)")
    seen: set[str] = set()
    total = 0
    for action, body in parts:
        _check_expressions(body)
        table = str(body.get("TableName"))
        keys, types = _schema_of(schemas, table), _types_of(schemas, table)
        if "Item" in body:
            _check_item(body["Item"], keys, types)
            total += item_size(body["Item"])
            ident = _key_of(body["Item"], keys[:2], table) if keys else None
        else:
            _check_key(body.get("Key", {}), None, types)
            if action == "Update":
                _check_update_keys(body, keys, types)
            total += item_size(body.get("Key", {})) + item_size(
                body.get("ExpressionAttributeValues") or {}
            )
            ident = _key_of(body.get("Key", {}), tuple(sorted(body.get("Key", {}))), table)
        if total > MAX_TRANSACTION_BYTES:
            raise _Invalid("transaction-size", f"over {MAX_TRANSACTION_BYTES} bytes of items")
        if ident is not None:
            if ident in seen:
                raise _Invalid("transaction-duplicate", "two actions on one item")
            seen.add(ident)


def _check_batch_write(operation: str, params: dict[str, Any], schemas: _Schemas | None) -> None:
    """BatchWriteItem: at most 25 requests, each key once per table."""
    requests = params.get("RequestItems", {})
    total = sum(len(r) for r in requests.values())
    if total > 25:
        raise _Invalid("batch-size", f"{total} write requests (at most 25)")
    for table, reqs in requests.items():
        keys = _schema_of(schemas, table)
        seen_keys: set[str] = set()
        for r in reqs:
            ident = _batch_write_ident(r, table, keys)
            if ident is not None:
                if ident in seen_keys:
                    raise _Invalid("batch-duplicate", "one key twice in a batch write")
                seen_keys.add(ident)


def _batch_write_ident(request: dict[str, Any], table: str, keys: tuple[str, ...]) -> str | None:
    """Check one put or delete request of a batch write; the identity of its item."""
    if "PutRequest" in request:
        item = request["PutRequest"].get("Item", {})
        _check_item(item, keys)
        return _key_of(item, keys[:2], table) if keys else None
    key = request.get("DeleteRequest", {}).get("Key", {})
    _check_key(key)
    return _key_of(key, tuple(sorted(key)), table)


def _check_batch_get(operation: str, params: dict[str, Any], schemas: _Schemas | None) -> None:
    """BatchGetItem: at most 100 keys."""
    requests = params.get("RequestItems", {})
    total = sum(len(r.get("Keys", [])) for r in requests.values())
    if total > 100:
        raise _Invalid("batch-size", f"{total} keys to get (at most 100)")
    for body in requests.values():
        _check_expressions(body)
        for key in body.get("Keys", []):
            _check_key(key)


_CHECKS: dict[str, Callable[[str, dict[str, Any], _Schemas | None], None]] = {
    **dict.fromkeys(
        ("PutItem", "UpdateItem", "DeleteItem", "GetItem", "Query", "Scan"), _check_item_op
    ),
    "TransactWriteItems": _check_transaction,
    "TransactGetItems": _check_transaction,
    "BatchWriteItem": _check_batch_write,
    "BatchGetItem": _check_batch_get,
}


def validate(operation: str, params: dict[str, Any], schemas: _Schemas | None = None) -> None:
    """Raise ``_Invalid`` if real DynamoDB would reject ``operation`` with ``params``."""
    if operation == "CreateTable":
        if schemas is not None:
            schemas.learn(str(params.get("TableName")), params)
        return
    check = _CHECKS.get(operation)
    if check is not None:
        check(operation, params, schemas)


# --- the botocore hook ------------------------------------------------------------------


def _error(operation: str, exc: _Invalid) -> Exception:
    from botocore.exceptions import ClientError

    response: Any = {
        "Error": {"Code": "ValidationException", "Message": f"[strict] {exc}"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


def install(client: Any) -> Any:
    """Validate every request ``client`` sends (a DynamoDB client; others are left alone)."""
    if client.meta.service_model.service_name != "dynamodb":
        return client
    if getattr(client.meta, "_regionkit_strict", False):
        return client
    schemas = _Schemas(client)

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        with stats.lock:
            stats.checked += 1
        try:
            validate(model.name, params, schemas)
        except _Invalid as exc:
            with stats.lock:
                stats.rejected.append(f"{exc.rule}: {model.name}")
            raise _error(model.name, exc) from None

    client.meta.events.register_last("before-parameter-build.dynamodb", hook)
    client.meta._regionkit_strict = True
    return client


def initialize_client_plugin(client: Any) -> None:
    """botocore's client-plugin entry point (see the module docstring)."""
    install(client)
