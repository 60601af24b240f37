"""The contract between the local server (regions/local/_server_main.py) and moto.

The server stands on moto's own code: moto's per-service Flask apps, its domain
dispatcher, and one memoised helper. A moto release that moves or changes any of
them must fail here, loudly, and not make the cluster slower or every call a 500
without anyone noticing. Each test names what it guards.
"""

from __future__ import annotations

import http.client
import io
import json
import sys
import tomllib
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from regions.local import _server_main, servers

ROOT = Path(__file__).resolve().parent.parent
AUTH = (
    "AWS4-HMAC-SHA256 Credential=contract/20200101/eu-west-1/{service}/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


def _moto_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["optional-dependencies"]["local"]:
        req = Requirement(spec)
        if req.name == "moto":
            return req
    raise AssertionError("pyproject.toml's 'local' extra does not name moto")


def test_moto_is_pinned_and_the_installed_release_is_in_the_pin() -> None:
    req = _moto_requirement()
    assert str(req.specifier) == "~=5.2", "pin moto to the range this contract was checked on"
    installed = version("moto")
    assert req.specifier.contains(installed), (
        f"moto {installed} is installed, outside the pin {req.specifier}: run this file "
        "against it, then move the pin"
    )


def _environ(target: str, body: dict[str, Any], service: str) -> dict[str, Any]:
    data = json.dumps(body).encode()
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:1",
        "CONTENT_TYPE": "application/x-amz-json-1.0",
        "CONTENT_LENGTH": str(len(data)),
        "HTTP_X_AMZ_TARGET": target,
        "HTTP_AUTHORIZATION": AUTH.format(service=service),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(data),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


STREAM = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


def _table(name: str, **extra: Any) -> dict[str, Any]:
    """A CreateTable body: one string hash key ``pk``, on demand."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
        **extra,
    }


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[int, bytes]:
    status: list[str] = []
    result = app(environ, lambda s, h, exc_info=None: status.append(s))
    body = b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()
    return int(status[0].split()[0]), body


@pytest.fixture
def spied_app(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, int]]:
    """The server's app, built in this process, with counters on moto's entry points."""
    from moto.core import responses
    from moto.core import utils as moto_utils
    from moto.kms import models as kms_models
    from moto.kms import utils as kms_utils
    from moto.moto_server import werkzeug_app

    # build_app replaces three helpers in moto's modules: put them back afterwards.
    monkeypatch.setattr(responses, "method_names_from_class", moto_utils.method_names_from_class)
    monkeypatch.setattr(
        responses.ActionResult, "execute_result", responses.ActionResult.execute_result
    )
    monkeypatch.setattr(kms_models, "generate_private_key", kms_utils.generate_private_key)
    calls = {"dispatcher": 0, "moto_view": 0}
    dispatch = werkzeug_app.DomainDispatcherApplication.__call__
    view = moto_utils.convert_to_flask_response.__call__

    def counted_dispatch(self: Any, *args: Any) -> Any:
        calls["dispatcher"] += 1
        return dispatch(self, *args)

    def counted_view(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["moto_view"] += 1
        return view(self, *args, **kwargs)

    monkeypatch.setattr(werkzeug_app.DomainDispatcherApplication, "__call__", counted_dispatch)
    monkeypatch.setattr(moto_utils.convert_to_flask_response, "__call__", counted_view)
    return _server_main.build_app("eu-west-1"), calls


def test_the_cluster_services_go_straight_to_moto_s_own_view(
    spied_app: tuple[Any, dict[str, int]],
) -> None:
    """DynamoDB, Streams and KMS calls reach moto's Flask view, never the dispatcher."""
    app, calls = spied_app
    table = _table("contract", StreamSpecification=STREAM)
    requests = [
        ("DynamoDB_20120810.CreateTable", table, "dynamodb"),
        (
            "DynamoDB_20120810.PutItem",
            {"TableName": "contract", "Item": {"pk": {"S": "a"}}},
            "dynamodb",
        ),
        ("DynamoDBStreams_20120810.ListStreams", {}, "dynamodb"),
        ("TrentService.ListKeys", {}, "kms"),
    ]
    for target, body, service in requests:
        status, reply = _call(app, _environ(target, body, service))
        assert status == 200, (target, reply[:300])
    assert calls == {"dispatcher": 0, "moto_view": len(requests)}, (
        "a cluster call fell back to moto's dispatcher, or moto's view is no longer "
        "convert_to_flask_response"
    )
    assert set(_server_main.ROUTES.values()) == {"dynamodb", "dynamodbstreams", "kms"}


def test_other_requests_go_through_moto_s_dispatcher(spied_app: tuple[Any, dict[str, int]]) -> None:
    app, calls = spied_app
    environ = _environ("AWSSecurityTokenServiceV20110615.GetCallerIdentity", {}, "sts")
    environ.update(CONTENT_TYPE="application/x-www-form-urlencoded", HTTP_X_AMZ_TARGET="")
    data = b"Action=GetCallerIdentity&Version=2011-06-15"
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(data), str(len(data))
    status, reply = _call(app, environ)
    assert status == 200 and b"GetCallerIdentityResult" in reply
    assert calls["dispatcher"] == 1


def test_item_results_take_the_fast_path(spied_app: tuple[Any, dict[str, int]]) -> None:
    """The server writes item results itself (regions/local/fastjson.py, whose own tests
    check the documents are moto's); if moto stops calling ActionResult.execute_result,
    the fast path is dead and every scan pays moto's serializer again: fail."""
    from moto.core import responses

    app, _ = spied_app
    stats = getattr(responses.ActionResult.execute_result, "regionkit_fast_results", None)
    assert stats is not None, "build_app() did not install the fast path"
    table = {
        "TableName": "fast",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    _call(app, _environ("DynamoDB_20120810.CreateTable", table, "dynamodb"))
    before = stats.hits
    for target, body in (
        ("PutItem", {"TableName": "fast", "Item": {"pk": {"S": "a"}, "b": {"B": "AP8="}}}),
        ("GetItem", {"TableName": "fast", "Key": {"pk": {"S": "a"}}}),
        ("Scan", {"TableName": "fast"}),
    ):
        status, reply = _call(app, _environ(f"DynamoDB_20120810.{target}", body, "dynamodb"))
        assert status == 200, (target, reply[:300])
    assert stats.hits == before + 3, "an item result went through moto's serializer"
    assert json.loads(reply)["Items"] == [{"pk": {"S": "a"}, "b": {"B": "AP8="}}]


def test_the_memoised_helper_is_the_one_moto_calls(spied_app: tuple[Any, dict[str, int]]) -> None:
    """moto.core.responses calls method_names_from_class by its module-level name on
    every request; if moto stops doing so, the memo is dead weight: fail."""
    from moto.core import responses

    app, _ = spied_app
    cached = responses.method_names_from_class
    assert hasattr(cached, "cache_info"), "build_app() did not memoise method_names_from_class"
    for key in ("m1", "m2"):
        body = {"TableName": "nothing-here", "Key": {"pk": {"S": key}}}
        _call(app, _environ("DynamoDB_20120810.GetItem", body, "dynamodb"))
    info = cached.cache_info()
    assert info.hits + info.misses >= 2 and info.hits >= 1, (
        "moto no longer calls the memoised helper"
    )


def test_the_server_keeps_connections_alive(isolated_cluster: Any) -> None:
    """The reason for the server swap: pooled connections stay open between calls."""
    host, _, port = isolated_cluster.endpoints["eu-west-1"].removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": AUTH.format(service="dynamodb"),
    }
    try:
        conn.request("POST", "/", body=b"{}", headers=headers)
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        conn.request("POST", "/", body=b"{}", headers=headers)
        second = conn.getresponse()
        second.read()
        reused = sock is not None and conn.sock is sock  # http.client reconnects if closed
    finally:
        conn.close()
    assert first.status == second.status == 200
    assert (first.getheader("Connection") or "").lower() != "close"
    assert reused, "the server closed the connection after one response"
    assert "regionkit-moto" in (first.getheader("Via") or first.getheader("Server") or "")


def test_kms_key_pairs_are_made_on_first_use(spied_app: tuple[Any, dict[str, int]]) -> None:
    """moto still makes a KMS key's pair through kms.models.generate_private_key, the
    one build_app defers; and a deferred key still signs and verifies."""
    from moto.kms import models as kms_models

    app, _ = spied_app
    assert kms_models.generate_private_key.__name__ == "lazy_private_key"
    spec = {"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"}
    status, reply = _call(app, _environ("TrentService.CreateKey", spec, "kms"))
    assert status == 200, reply[:300]
    key_id = json.loads(reply)["KeyMetadata"]["KeyId"]
    backend = kms_models.kms_backends["123456789012"]["eu-west-1"]
    assert type(backend.keys[key_id].private_key).__name__ == "_LazyPrivateKey", (
        "moto no longer makes key pairs through kms.models.generate_private_key"
    )
    sign = {"KeyId": key_id, "Message": "aGk=", "SigningAlgorithm": "RSASSA_PSS_SHA_256"}
    status, reply = _call(app, _environ("TrentService.Sign", sign, "kms"))
    assert status == 200, reply[:300]
    verify = {**sign, "Signature": json.loads(reply)["Signature"]}
    status, reply = _call(app, _environ("TrentService.Verify", verify, "kms"))
    assert status == 200 and json.loads(reply)["SignatureValid"] is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_servers_get_the_parent_death_signal() -> None:
    """Without prctl, a SIGSTOPped server would outlive a SIGKILLed owner."""
    assert servers._prctl is not None, "prctl could not be loaded: servers may outlive owners"


def test_the_server_makes_moto_s_writes_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_app() serialises moto's DynamoDB writes (regions/local/atomic.py, whose own
    tests race them); if a method it wraps is gone from moto, installing fails loudly."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    from regions.local import atomic

    # this process has them wrapped already (conftest): unwrap, so build_app must wrap
    for cls, name in [(DynamoDBBackend, n) for n in atomic.WRITES] + [(StreamShard, "add")]:
        method = getattr(cls, name)
        monkeypatch.setattr(cls, name, getattr(method, "__wrapped__", method))
        assert not getattr(getattr(cls, name), "_regionkit_atomic", False)
    _server_main.build_app("eu-west-1")
    for cls, name in [(DynamoDBBackend, n) for n in atomic.WRITES] + [(StreamShard, "add")]:
        assert getattr(getattr(cls, name), "_regionkit_atomic", False), name
    monkeypatch.delattr(DynamoDBBackend, "execute_transaction")
    with pytest.raises(AttributeError):
        atomic.install()


def test_replicated_changes_are_applied_by_moto_s_backend_not_its_request_layer(
    spied_app: tuple[Any, dict[str, int]],
) -> None:
    """The emulator's batches (regions/local/apply_endpoint.py) reach neither moto's view
    nor its dispatcher, and are written by DynamoDBBackend.put_item / delete_item with
    the parameters moto's own PutItem / DeleteItem pass (checked by name, so a moto that
    renames one fails here, not as a 500 per change)."""
    import inspect

    from moto.dynamodb import responses
    from moto.dynamodb.models import DynamoDBBackend

    from regions.local import apply_endpoint

    app, calls = spied_app
    table = _table("contract-apply")
    status, _ = _call(app, _environ("DynamoDB_20120810.CreateTable", table, "dynamodb"))
    assert status == 200
    calls.update(dispatcher=0, moto_view=0)
    key = {"pk": {"S": "a"}}
    absent = {
        "ConditionExpression": "attribute_not_exists(#k)",
        "ExpressionAttributeNames": {"#k": "pk"},
    }
    change = {
        "table": "contract-apply",
        "keys": key,
        "image": {**key, "x": {"N": "1"}},
        "condition": absent,
    }
    body = {"groups": [[change, change], [{**change, "image": None, "condition": {}}]]}
    status, reply = _call(app, _environ(apply_endpoint.TARGET, body, "dynamodb"))
    assert status == 200, reply[:300]
    assert json.loads(reply)["results"] == [
        {
            "applied": 1,
            "code": "ConditionalCheckFailedException",
            "message": "The conditional request failed",
        },
        {"applied": 1, "code": None, "message": None},
    ]
    assert calls == {"dispatcher": 0, "moto_view": 0}
    status, reply = _call(app, _environ(apply_endpoint.TARGET, {"groups": 3}, "dynamodb"))
    assert status == 400 and b"ValidationException" in reply
    put = inspect.signature(DynamoDBBackend.put_item).parameters
    delete = inspect.signature(DynamoDBBackend.delete_item).parameters
    assert {
        "condition_expression",
        "expression_attribute_names",
        "expression_attribute_values",
        "overwrite",
    } <= set(put)
    assert {
        "condition_expression",
        "expression_attribute_names",
        "expression_attribute_values",
    } <= set(delete)
    for name in (
        "validate_put_has_empty_keys",
        "validate_put_has_empty_attrs",
        "validate_put_has_gsi_keys_set_to_none",
    ):
        assert callable(getattr(responses, name, None)), f"moto.dynamodb.responses.{name} is gone"


def test_the_cluster_applies_replicated_changes_in_its_servers(cluster: Any) -> None:
    """The fast path is on in the local cluster (not silently the client path)."""
    from regions.local.appliers import ServerApplier

    assert isinstance(cluster.replicator.engine.applier, ServerApplier)


def test_the_server_casts_values_and_sorts_tables_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_app() installs regions/local/fastvalues.py (tests/test_fastvalues.py checks
    its answers are moto's)."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    from regions.local import fastvalues

    cast, walk = fastvalues.originals()
    monkeypatch.setattr(DynamoType, "cast_value", property(cast))
    monkeypatch.setattr(Table, "all_items", walk)
    _server_main.build_app("eu-west-1")
    assert DynamoType.__dict__["cast_value"].fget is not cast
    assert Table.all_items is not walk
