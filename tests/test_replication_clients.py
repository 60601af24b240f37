"""Real clients against the local cluster (a moto server per region, the emulator between).

What they write must arrive in every replica, binary values included:

* boto3's resource API: ``batch_writer`` (B, BS, B nested in a map), a transaction,
  a plain item after them, read back in every region with a scan paginator;
* the AWS CLI (``aws dynamodb put-item`` / ``transact-write-items``), when installed;
* PynamoDB, an object mapper on botocore (a dev dependency): a model with every
  attribute kind it maps, saved, conditionally updated and deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"


def _keys_everywhere(cluster: Any, table: str, keys: set[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    missing: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        missing = {}
        for region in (EU1, EU2, US):
            pages = cluster.client(region).get_paginator("scan").paginate(TableName=table)
            have = {i["pk"]["S"] for page in pages for i in page["Items"]}
            if keys - have:
                missing[region] = keys - have
        if not missing:
            return
        time.sleep(0.2)
    raise AssertionError(f"not replicated: {missing}")


def test_resource_api_writes_reach_every_replica(cluster: Any) -> None:
    import boto3

    table_name = cluster.table_name("content")
    run = uuid.uuid4().hex[:8]
    resource = boto3.resource(
        "dynamodb",
        region_name=EU1,
        endpoint_url=cluster.endpoints[EU1],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    table = resource.Table(table_name)
    with table.batch_writer() as batch:
        batch.put_item(Item={"pk": f"{run}-b1", "blob": b"\x00\xff"})
        batch.put_item(Item={"pk": f"{run}-b2", "blobs": {b"a", b"b"}})
        batch.put_item(Item={"pk": f"{run}-b3", "m": {"inner": b"\x01", "n": 10**37}})
    resource.meta.client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table_name, "Item": {"pk": f"{run}-t1", "b": b"x"}}},
            {"Put": {"TableName": table_name, "Item": {"pk": f"{run}-t2", "s": "y"}}},
        ]
    )
    table.put_item(Item={"pk": f"{run}-after", "x": 1})
    keys = {f"{run}-{k}" for k in ("b1", "b2", "b3", "t1", "t2", "after")}
    _keys_everywhere(cluster, table_name, keys)
    for region in (EU2, US):
        got = cluster.client(region).get_item(
            TableName=table_name, Key={"pk": {"S": f"{run}-b3"}}, ConsistentRead=True
        )["Item"]
        assert got["m"]["M"]["inner"]["B"] == b"\x01"
    assert not cluster.replicator.engine.failed_count


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli_writes_reach_every_replica(cluster: Any) -> None:
    table_name = cluster.table_name("content")
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": EU1,
        "AWS_PAGER": "",
    }
    env.pop("BOTOCORE_EXPERIMENTAL__PLUGINS", None)  # another Python: the plugin is not there
    base = ["aws", "dynamodb", "--endpoint-url", cluster.endpoints[EU1], "--region", EU1]
    item = {"pk": {"S": f"{run}-cli"}, "blob": {"B": "AAE="}, "n": {"N": "1" * 38}}
    subprocess.run(
        [*base, "put-item", "--table-name", table_name, "--item", json.dumps(item)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    tx = [{"Put": {"TableName": table_name, "Item": {"pk": {"S": f"{run}-cli-tx"}}}}]
    subprocess.run(
        [*base, "transact-write-items", "--transact-items", json.dumps(tx)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    _keys_everywhere(cluster, table_name, {f"{run}-cli", f"{run}-cli-tx"})
    source, *replicas = (
        cluster.client(r).get_item(
            TableName=table_name, Key={"pk": {"S": f"{run}-cli"}}, ConsistentRead=True
        )["Item"]
        for r in (EU1, EU2, US)
    )
    # (AWS CLI v1 sends blob arguments as given; v2 decodes base64: compare with the source)
    assert all(r == source for r in replicas) and source["n"]["N"] == "1" * 38


def test_pynamodb_writes_reach_every_replica(cluster: Any) -> None:
    from pynamodb.attributes import (
        BinaryAttribute,
        BooleanAttribute,
        ListAttribute,
        MapAttribute,
        NumberAttribute,
        NumberSetAttribute,
        UnicodeAttribute,
        UnicodeSetAttribute,
    )
    from pynamodb.models import Model

    table_name = cluster.table_name("content")
    run = uuid.uuid4().hex[:8]

    class Inner(MapAttribute[str, Any]):
        label = UnicodeAttribute()
        blob = BinaryAttribute(legacy_encoding=False)

    class Post(Model):
        class Meta:
            table_name = ""
            region = EU1
            host = cluster.endpoints[EU1]
            aws_access_key_id = "testing"
            aws_secret_access_key = "testing"

        pk = UnicodeAttribute(hash_key=True)
        body = UnicodeAttribute()
        likes = NumberAttribute(default=0)
        tags = UnicodeSetAttribute()
        scores = NumberSetAttribute()
        flag = BooleanAttribute()
        raw = BinaryAttribute(legacy_encoding=False)
        inner = Inner()
        items = ListAttribute[str]()

    Post.Meta.table_name = table_name
    post = Post(
        f"{run}-pyn",
        body="héllo ✓",
        likes=10**37,
        tags={"a", "ü"},
        scores={1, 2.5},
        flag=True,
        raw=b"\x00\xff",
        inner=Inner(label="x", blob=b"\x01"),
        items=["one", "two"],
    )
    post.save(condition=Post.pk.does_not_exist())
    post.update(actions=[Post.likes.add(1), Post.tags.add({"new"})], condition=Post.flag == True)  # noqa: E712
    gone = Post(
        f"{run}-pyn-gone",
        body="x",
        tags={"t"},
        scores={0},
        flag=False,
        raw=b"\x02",
        inner=Inner(label="y", blob=b"\x03"),
        items=[],
    )
    gone.save()
    gone.delete()
    _keys_everywhere(cluster, table_name, {f"{run}-pyn"})
    assert cluster.replicator.wait_converged(60)
    images = [
        cluster.client(r).get_item(
            TableName=table_name, Key={"pk": {"S": f"{run}-pyn"}}, ConsistentRead=True
        )["Item"]
        for r in (EU1, EU2, US)
    ]
    assert images[1] == images[0] and images[2] == images[0]
    assert images[0]["likes"]["N"] == str(10**37 + 1)
    assert set(images[0]["tags"]["SS"]) == {"a", "ü", "new"}
    for r in (EU1, EU2, US):
        assert "Item" not in cluster.client(r).get_item(
            TableName=table_name, Key={"pk": {"S": f"{run}-pyn-gone"}}, ConsistentRead=True
        )
    assert not cluster.replicator.engine.failed_count
