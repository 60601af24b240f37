"""regions.local.fastvalues gives moto's own answers (values cast, tables in key order).

The local servers and in-process moto run with it (conftest installs it); each test
compares it with moto's originals on generated values and tables.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regions.local import fastvalues

numbers = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.sampled_from(["1.0", "1", "-0", "1E+2", "100", "0.000", "12345678901234567890.5"]),
)
b64 = st.binary(max_size=6).map(lambda b: __import__("base64").b64encode(b).decode())
scalars = st.one_of(
    st.text(max_size=5).map(lambda s: {"S": s}),
    numbers.map(lambda n: {"N": n}),
    b64.map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(st.text(max_size=3), min_size=1, max_size=3).map(lambda s: {"SS": sorted(s)}),
    st.sets(numbers, min_size=1, max_size=3).map(lambda s: {"NS": sorted(s)}),
    st.sets(b64, min_size=1, max_size=3).map(lambda s: {"BS": sorted(s)}),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(lambda v: {"M": v}),
    ),
    max_leaves=6,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same Python types all the way down (Decimal stays Decimal)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(value=values)
def test_a_value_casts_as_moto_casts_it(value: dict[str, Any]) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    original, _ = fastvalues.originals()
    typed = DynamoType(value)
    assert _same(typed.cast_value, original(typed))
    if "N" in value:
        assert isinstance(typed.cast_value, Decimal)


key_types = st.sampled_from(["S", "N", "B"])


@st.composite
def tables(draw: st.DrawFn) -> tuple[str, str | None, list[tuple[Any, Any]]]:
    hash_type = draw(key_types)
    range_type = draw(st.none() | key_types)
    by_type = {"S": st.text(min_size=1, max_size=4), "N": numbers, "B": b64.filter(bool)}
    keys = draw(
        st.lists(
            st.tuples(by_type[hash_type], by_type[range_type] if range_type else st.none()),
            max_size=25,
        )
    )
    return hash_type, range_type, keys


@settings(max_examples=60, deadline=None)
@given(table=tables())
def test_a_table_is_walked_in_moto_s_key_order(
    table: tuple[str, str | None, list[tuple[Any, Any]]],
) -> None:
    """Keys of every type, numbers that are equal in value but not in text ("1", "1.0")
    and hash keys shared by several range keys: the same items in the same order."""
    import boto3
    from moto import mock_aws
    from moto.dynamodb.models import dynamodb_backends

    hash_type, range_type, keys = table
    _, original = fastvalues.originals()
    with mock_aws():
        backend = dynamodb_backends["123456789012"]["eu-west-1"]
        schema = [{"AttributeName": "h", "KeyType": "HASH"}]
        attrs = [{"AttributeName": "h", "AttributeType": hash_type}]
        if range_type:
            schema.append({"AttributeName": "r", "KeyType": "RANGE"})
            attrs.append({"AttributeName": "r", "AttributeType": range_type})
        name = f"t-{uuid.uuid4().hex[:6]}"
        boto3.client("dynamodb", region_name="eu-west-1").create_table(
            TableName=name,
            KeySchema=schema,
            AttributeDefinitions=attrs,
            BillingMode="PAY_PER_REQUEST",
        )
        for h, r in keys:
            item = {"h": {hash_type: h}, "x": {"S": "v"}}
            if range_type:
                item["r"] = {range_type: r}
            backend.put_item(name, item)
        t = backend.get_table(name)
        ours = [
            (i.hash_key.to_json(), i.range_key and i.range_key.to_json()) for i in t.all_items()
        ]
        theirs = [
            (i.hash_key.to_json(), i.range_key and i.range_key.to_json()) for i in original(t)
        ]
        assert ours == theirs


def test_install_is_idempotent_and_fails_loudly_without_moto_s_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    fastvalues.install()
    cast, walk = DynamoType.__dict__["cast_value"], Table.all_items
    fastvalues.install()
    assert DynamoType.__dict__["cast_value"] is cast and Table.all_items is walk
    assert fastvalues.originals()[0] is not cast.fget  # installed: the original is kept
    monkeypatch.delattr(Table, "all_items")
    with pytest.raises(AttributeError):
        fastvalues.install()
