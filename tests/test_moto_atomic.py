"""moto's DynamoDB writes are atomic here, as DynamoDB's are (regions/local/atomic.py).

moto takes no lock, and the local servers answer on eight threads. Unpatched, a
stream shard hands out one sequence number twice under concurrent writes (the
replication emulator then saw its last record again on every read and never went
quiet), and two conditional writes can both pass their condition. Both are tried
here with a thread switch forced every microsecond.
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from regions.local import atomic

TABLE = "atomic"


@pytest.fixture
def ddb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }.items():
        monkeypatch.setenv(k, v)
    atomic.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # a thread switch wherever one can happen
        try:
            yield client
        finally:
            sys.setswitchinterval(old)


def _follow(client: Any, start: str) -> tuple[Any, str]:
    """(a streams client, a shard iterator of the table's stream from ``start``): raw boto3."""
    import boto3

    streams = boto3.client("dynamodbstreams", region_name="eu-west-1")
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    it = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType=start
    )["ShardIterator"]
    return streams, it


def _sequence_numbers(client: Any) -> list[int]:
    """Every record's sequence number, in the order the stream lists them (raw boto3)."""
    streams, it = _follow(client, "TRIM_HORIZON")
    out: list[int] = []
    for _ in range(100):
        page = streams.get_records(ShardIterator=it, Limit=1000)
        if not page["Records"]:
            break
        out += [int(r["dynamodb"]["SequenceNumber"]) for r in page["Records"]]
        it = page["NextShardIterator"]
    return out


def test_concurrent_writes_get_distinct_increasing_sequence_numbers(ddb: Any) -> None:
    def write(i: int) -> None:
        key = {"pk": {"S": f"k{i % 50}"}}
        if i % 3 == 2:
            ddb.update_item(
                TableName=TABLE,
                Key=key,
                UpdateExpression="SET n = :n",
                ExpressionAttributeValues={":n": {"N": str(i)}},
            )
        else:
            ddb.put_item(TableName=TABLE, Item={**key, "body": {"S": "x" * 500}})

    for i in range(50):  # (moto streams an update that creates an item twice)
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": f"k{i}"}})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(400)))
    seqs = _sequence_numbers(ddb)
    assert len(seqs) == 450  # every write streamed once, none read twice
    assert seqs == sorted(set(seqs))  # distinct and in the order of the shard
    assert seqs[-1] - seqs[0] == len(seqs) - 1


def test_of_concurrent_conditional_creates_exactly_one_wins(ddb: Any) -> None:
    from botocore.exceptions import ClientError

    start = threading.Barrier(8)
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def create(i: int) -> None:
        start.wait()
        try:
            ddb.put_item(
                TableName=TABLE,
                Item={"pk": {"S": "once"}, "writer": {"N": str(i)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
            outcome = "won"
        except ClientError as exc:
            outcome = exc.response["Error"]["Code"]
        with lock:
            outcomes[outcome] += 1

    for _ in range(20):
        ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "once"}})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(8)))
    assert outcomes == {"won": 20, "ConditionalCheckFailedException": 140}


def test_a_cancelled_transaction_writes_nothing_not_even_a_stream_record(ddb: Any) -> None:
    """moto applied a transaction's Put, then, on a later failed condition, swapped in a
    copy of the table taken before: the Put's stream record stayed in the stream the
    replication emulator reads, so a refused write replicated everywhere (review
    finding). The conditions are judged first now, as DynamoDB does."""
    from botocore.exceptions import ClientError

    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "fence"}, "rk_del": {"S": "erased"}})
    before = len(_sequence_numbers(ddb))
    # A reader already following the stream, as the replication emulator is.
    streams, following = _follow(ddb, "LATEST")
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "new"}, "v": {"S": "x"}}}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "fence"}},
                        "ConditionExpression": "attribute_not_exists(rk_del)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
    reasons = caught.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"]["rk_del"] == {"S": "erased"}
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "new"}})
    assert len(_sequence_numbers(ddb)) == before  # no record of the write that never was
    assert streams.get_records(ShardIterator=following)["Records"] == []  # not even here
    ddb.transact_write_items(  # and one whose conditions hold is applied
        TransactItems=[{"Put": {"TableName": TABLE, "Item": {"pk": {"S": "ok"}}}}]
    )
    assert len(_sequence_numbers(ddb)) == before + 1


def test_a_transaction_failing_otherwise_leaves_the_stream_as_it_was(ddb: Any) -> None:
    """Round 3: a failure that is no condition (an item too large, a bad update) still had
    moto write the earlier ops and swap in a copy of the table; the follower saw the
    undone write and then nothing more (it kept reading the old stream)."""
    from botocore.exceptions import ClientError

    streams, following = _follow(ddb, "LATEST")
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "text"}, "s": {"S": "a string"}})
    following = streams.get_records(ShardIterator=following)["NextShardIterator"]
    with pytest.raises(ClientError):  # op 1 is written before op 2 fails, inside moto
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "undone"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "text"}},
                        "UpdateExpression": "ADD s :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "undone"}})
    page = streams.get_records(ShardIterator=following)
    assert page["Records"] == []  # not the write moto undid
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "later"}})
    seen = streams.get_records(ShardIterator=page["NextShardIterator"])["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in seen] == ["later"]  # and not stuck


def test_install_is_idempotent_and_names_what_it_wraps() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    lock = atomic.install()
    assert atomic.install() is lock
    for method in [getattr(DynamoDBBackend, n) for n in atomic.WRITES] + [StreamShard.add]:
        assert getattr(method, "_regionkit_atomic", False)
        assert not getattr(method.__wrapped__, "_regionkit_atomic", False)  # wrapped once
        assert method.lock is lock  # what the TTL sweep holds around a delete and its mark
