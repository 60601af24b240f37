"""The local cluster's fast path for item results writes what moto's serializer writes.

``regions/local/fastjson.py`` skips moto's shape-walking serializer for the results
that carry items. Here both run on every result (``FastResults.check``) for every
operation it covers, on generated items of every attribute type, and every pair of
documents must be equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from test_replication_types import _item

from regions.local import fastjson


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The process's fast path (conftest installs it) with checking on, for this test."""
    import boto3
    from moto import mock_aws
    from moto.core import responses

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "contract")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "contract")
    monkeypatch.setattr(
        responses.ActionResult, "execute_result", responses.ActionResult.execute_result
    )
    stats = fastjson.install()
    # this test's counts only: the process's counters are restored afterwards
    for name, value in (("check", True), ("hits", 0), ("checked", 0)):
        monkeypatch.setattr(stats, name, value)
    monkeypatch.setattr(stats, "operations", set())
    monkeypatch.setattr(stats, "mismatches", [])
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="eu-west-1")
        ddb.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield stats, boto3.resource("dynamodb", region_name="eu-west-1").Table("t"), ddb


def _every_operation(table: Any, ddb: Any, item: dict[str, Any], n: int) -> None:
    key = {"pk": f"k{n}", "sk": n}
    full = {**item, **key}
    table.put_item(Item=full, ReturnValues="ALL_OLD")
    table.put_item(Item=full, ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
    table.get_item(Key=key, ConsistentRead=True)
    table.update_item(
        Key=key,
        UpdateExpression="SET #x = :v",
        ExpressionAttributeNames={"#x": "x"},
        ExpressionAttributeValues={":v": b"\x00\xff"},
        ReturnValues="ALL_NEW",
    )
    table.query(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": f"k{n}"})
    table.scan(Limit=2)
    table.scan(Select="COUNT")
    ddb.batch_get_item(
        RequestItems={
            "t": {
                "Keys": [
                    {"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}},
                    {"pk": {"S": "absent"}, "sk": {"N": "0"}},
                ]
            }
        }
    )
    with table.batch_writer() as batch:
        batch.put_item(Item={**full, "pk": f"b{n}"})
    ddb.transact_get_items(
        TransactItems=[
            {"Get": {"TableName": "t", "Key": {"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}}}}
        ]
    )
    ddb.transact_write_items(
        TransactItems=[
            {"Delete": {"TableName": "t", "Key": {"pk": {"S": f"b{n}"}, "sk": {"N": str(n)}}}}
        ]
    )
    table.delete_item(Key=key, ReturnValues="ALL_OLD")


def _read_stream(ddb: Any) -> int:
    import boto3

    streams = boto3.client("dynamodbstreams", region_name="eu-west-1")
    arn = ddb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    count = 0
    for shard in shards:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        count += len(streams.get_records(ShardIterator=it)["Records"])
    return count


def test_every_item_result_is_the_document_moto_writes(checked: Any) -> None:
    stats, table, ddb = checked
    counter = iter(range(10**6))

    @settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_item)
    def run(item: dict[str, Any]) -> None:
        _every_operation(table, ddb, item, next(counter))

    run()
    assert _read_stream(ddb) > 0
    assert stats.mismatches == [], f"fast path differs from moto's serializer: {stats.mismatches}"
    covered = set().union(*fastjson.ITEM_OPERATIONS.values())
    assert stats.operations == covered, f"not taken for {sorted(covered - stats.operations)}"
    assert stats.checked == stats.hits > 0


def test_errors_and_other_results_keep_moto_s_serializer(checked: Any) -> None:
    stats, table, ddb = checked
    before = stats.hits
    ddb.describe_table(TableName="t")
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException) as err:
        table.put_item(
            Item={"pk": "c", "sk": 1},
            ConditionExpression="attribute_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert stats.hits == before


def test_install_is_once_per_process(checked: Any) -> None:
    stats, _, _ = checked
    assert fastjson.install() is stats
