"""The strict stand-in for real DynamoDB's request validation (regions.local.strict).

It is on for every test (tests/conftest.py sets botocore's plugin variable); these
tests show that it is, in this process and in a process a test starts, and that it
refuses each rule with the ValidationException real DynamoDB returns, naming no value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from regions.local import strict

SECRET = "Priya Sharma +91 98765 43210"  # a stand-in PII value: must never be echoed


@pytest.fixture
def ddb() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def _refused(call: Any, rule: str, **kwargs: Any) -> str:
    before = len(strict.stats.rejected)
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    message = str(err.value)
    assert "[strict]" in message and rule in message
    assert SECRET not in message and "Priya" not in message
    assert strict.stats.rejected[before:] == [f"{rule}: {err.value.operation_name}"]
    return message


def test_the_validator_is_on_for_every_client_of_this_process() -> None:
    import boto3

    assert os.environ[strict.ENV_VAR] == strict.ENV_VALUE
    for client in (
        boto3.client("dynamodb", region_name="us-east-1"),
        boto3.resource("dynamodb", region_name="us-east-1").meta.client,
        boto3.session.Session().client("dynamodb", region_name="ap-south-1"),
    ):
        assert getattr(client.meta, "_regionkit_strict", False)


def test_the_validator_is_on_in_a_process_a_test_starts() -> None:
    code = (
        "import boto3; c = boto3.client('dynamodb', region_name='us-east-1');"
        "print(getattr(c.meta, '_regionkit_strict', False))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "True"


def test_a_valid_request_passes(ddb: Any) -> None:
    ddb.put_item(
        TableName="t",
        Item={"pk": {"S": "a"}, "sk": {"S": "b"}, "name": {"S": SECRET}, "e": {"S": ""}},
        ConditionExpression="attribute_not_exists(#v) OR #v < :v",
        ExpressionAttributeNames={"#v": "rk_v"},
        ExpressionAttributeValues={":v": {"S": "1"}},
    )


def test_unused_expression_values_and_names(ddb: Any) -> None:
    item = {"pk": {"S": "a"}, "sk": {"S": "b"}}
    _refused(
        ddb.put_item,
        "unused",
        TableName="t",
        Item=item,
        ConditionExpression="#v = :base",
        ExpressionAttributeNames={"#v": "rk_v"},
        ExpressionAttributeValues={":base": {"S": "1"}, ":v": {"S": SECRET}},
    )
    _refused(
        ddb.put_item,
        "unused",
        TableName="t",
        Item=item,
        ConditionExpression="attribute_not_exists(pk)",
        ExpressionAttributeNames={"#v": "rk_v"},
    )


def test_undefined_placeholders_and_values_without_expressions(ddb: Any) -> None:
    key = {"pk": {"S": "a"}, "sk": {"S": "b"}}
    _refused(
        ddb.delete_item,
        "undefined",
        TableName="t",
        Key=key,
        ConditionExpression="#v = :v",
        ExpressionAttributeNames={"#v": "rk_v"},
    )
    _refused(
        ddb.get_item,
        "no-expression",
        TableName="t",
        Key=key,
        ExpressionAttributeNames={"#v": "rk_v"},
    )
    _refused(
        ddb.delete_item,
        "empty-map",
        TableName="t",
        Key=key,
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={},
    )


def test_reserved_words_need_a_placeholder(ddb: Any) -> None:
    _refused(
        ddb.update_item,
        "reserved",
        TableName="t",
        Key={"pk": {"S": "a"}, "sk": {"S": "b"}},
        UpdateExpression="SET status = :s",
        ExpressionAttributeValues={":s": {"S": SECRET}},
    )
    # functions and the grammar's own words are not attribute names
    ddb.update_item(
        TableName="t",
        Key={"pk": {"S": "a"}, "sk": {"S": "b"}},
        UpdateExpression="SET #s = if_not_exists(#s, :s) REMOVE gone",
        ConditionExpression="attribute_not_exists(pk) OR size(#s) > :n",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "x"}, ":n": {"N": "0"}},
    )


def test_empty_string_in_a_key(ddb: Any) -> None:
    _refused(ddb.put_item, "empty-key", TableName="t", Item={"pk": {"S": ""}, "sk": {"S": "b"}})
    _refused(ddb.get_item, "empty-key", TableName="t", Key={"pk": {"S": "a"}, "sk": {"S": ""}})
    _refused(
        ddb.query,
        "empty-key",
        TableName="t",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": ""}},
    )


def _indexed(ddb: Any) -> str:
    """A table with a secondary index on a string attribute, as regionkit's tables have."""
    ddb.create_table(
        TableName="g",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "author", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-author",
                "KeySchema": [{"AttributeName": "author", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return "g"


def test_an_update_may_not_empty_an_index_key(ddb: Any) -> None:
    """Real DynamoDB: "The update expression attempted to update a secondary index key to
    a value that is not supported"; moto accepts it."""
    table = _indexed(ddb)
    _refused(
        ddb.update_item,
        "empty-key",
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET #a = :a, body = :b",
        ExpressionAttributeNames={"#a": "author"},
        ExpressionAttributeValues={":a": {"S": ""}, ":b": {"S": SECRET}},
    )
    ddb.update_item(  # a non-key attribute may be empty
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET body = :b, author = if_not_exists(author, :a)",
        ExpressionAttributeValues={":a": {"S": "x"}, ":b": {"S": ""}},
    )


def test_key_attributes_of_another_type(ddb: Any) -> None:
    """Real DynamoDB: "Type mismatch for Index Key author Expected: S Actual: N"."""
    table = _indexed(ddb)
    _refused(
        ddb.put_item, "key-type", TableName=table, Item={"pk": {"S": "a"}, "author": {"N": "7"}}
    )
    _refused(ddb.get_item, "key-type", TableName=table, Key={"pk": {"N": "1"}})
    _refused(
        ddb.update_item,
        "key-type",
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET author = :a",
        ExpressionAttributeValues={":a": {"N": "7"}},
    )
    put = {"Put": {"TableName": table, "Item": {"pk": {"S": "a"}, "author": {"B": b"x"}}}}
    _refused(ddb.transact_write_items, "key-type", TransactItems=[put])
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "author": {"S": "x"}, "n": {"N": "1"}})


def test_item_over_400_kb(ddb: Any) -> None:
    big = {"pk": {"S": "a"}, "sk": {"S": "b"}, "blob": {"S": "x" * (400 * 1024)}}
    _refused(ddb.put_item, "item-size", TableName="t", Item=big)
    assert strict.item_size({"ab": {"S": "xyz"}, "n": {"N": "12"}}) == 2 + 3 + 1 + 2


def test_transactions(ddb: Any) -> None:
    def put(i: int) -> dict[str, Any]:
        return {"Put": {"TableName": "t", "Item": {"pk": {"S": f"p{i}"}, "sk": {"S": "s"}}}}

    many = [put(i) for i in range(101)]
    _refused(ddb.transact_write_items, "transaction-size", TransactItems=many)
    big = [put(i) for i in range(12)]  # 12 items of 390 KB each: 4.6 MB in all
    for action in big:
        action["Put"]["Item"]["blob"] = {"S": "x" * (390 * 1024)}
    _refused(ddb.transact_write_items, "transaction-size", TransactItems=big)
    ddb.transact_write_items(TransactItems=big[:10])  # 3.8 MB
    _refused(ddb.transact_write_items, "transaction-duplicate", TransactItems=[put(1), put(1)])


def test_batches(ddb: Any) -> None:
    def put(i: int) -> dict[str, Any]:
        return {"PutRequest": {"Item": {"pk": {"S": f"p{i}"}, "sk": {"S": "s"}}}}

    _refused(ddb.batch_write_item, "batch-size", RequestItems={"t": [put(i) for i in range(26)]})
    _refused(ddb.batch_write_item, "batch-duplicate", RequestItems={"t": [put(1), put(1)]})
    keys = [{"pk": {"S": f"p{i}"}, "sk": {"S": "s"}} for i in range(101)]
    _refused(ddb.batch_get_item, "batch-size", RequestItems={"t": {"Keys": keys}})


def test_sets_and_numbers(ddb: Any) -> None:
    def item(v: Any) -> dict[str, Any]:
        return {"pk": {"S": "a"}, "sk": {"S": "b"}, "v": v}

    _refused(ddb.put_item, "empty-set", TableName="t", Item=item({"SS": []}))
    _refused(ddb.put_item, "set-duplicate", TableName="t", Item=item({"NS": ["1", "1.0"]}))
    _refused(ddb.put_item, "number", TableName="t", Item=item({"N": "1" * 39}))
    _refused(ddb.put_item, "number", TableName="t", Item=item({"M": {"x": {"N": "1e126"}}}))
    ddb.put_item(TableName="t", Item=item({"N": "9" * 38}))


def test_legacy_parameters_next_to_expressions(ddb: Any) -> None:
    _refused(
        ddb.put_item,
        "legacy-mix",
        TableName="t",
        Item={"pk": {"S": "a"}, "sk": {"S": "b"}},
        ConditionExpression="attribute_not_exists(pk)",
        Expected={"x": {"Exists": False}},
    )


def test_return_values_a_put_does_not_take(ddb: Any) -> None:
    _refused(
        ddb.put_item,
        "return-values",
        TableName="t",
        Item={"pk": {"S": "a"}, "sk": {"S": "b"}},
        ReturnValues="UPDATED_NEW",
    )


def test_every_rule_is_shown_failing() -> None:
    """Each rule of the module has a test above that makes it refuse a request."""
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [rule for rule in strict.RULES if f'"{rule}"' not in source]
    assert not missing
