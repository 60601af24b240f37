"""The write-path serializer and the read-path deserializer give exactly what boto3's
TypeSerializer and TypeDeserializer give."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from hypothesis import given
from hypothesis import strategies as st

from regions.codec import from_ddb, to_ddb

scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        places=3,
        min_value=Decimal("-1e20"),
        max_value=Decimal("1e20"),
    ),
    st.binary(max_size=8),
    st.frozensets(st.text(min_size=1, max_size=5), min_size=1, max_size=3).map(set),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=6))
def test_same_as_boto3(item: dict[str, Any]) -> None:
    ser = TypeSerializer()
    assert to_ddb(item) == {k: ser.serialize(v) for k, v in item.items()}


@given(st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=6))
def test_reads_same_as_boto3(item: dict[str, Any]) -> None:
    ddb = {k: TypeSerializer().serialize(v) for k, v in item.items()}
    de = TypeDeserializer()
    back = from_ddb(ddb)
    assert back == {k: de.deserialize(v) for k, v in ddb.items()}
    # the same types too (Decimal, not int; set, not frozenset; Binary, not bytes)
    assert repr(back) == repr({k: de.deserialize(v) for k, v in ddb.items()})


@pytest.mark.parametrize("bad", [{}, {"X": 1}])
def test_malformed_values_are_refused_like_boto3(bad: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        TypeDeserializer().deserialize(bad)
    with pytest.raises(TypeError):
        from_ddb({"a": bad})


def test_floats_are_refused_like_boto3() -> None:
    with pytest.raises(TypeError):
        to_ddb({"x": 1.5})


def test_round_trip() -> None:
    item = {
        "pk": "u-1",
        "n": 3,
        "d": Decimal("1.25"),
        "ok": True,
        "none": None,
        "m": {"a": [1, "b"]},
    }
    back = from_ddb(to_ddb(item))
    assert back == {**item, "n": Decimal(3), "m": {"a": [Decimal(1), "b"]}}
