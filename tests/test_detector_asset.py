"""The conflict detector's Lambda asset is self-contained: it runs where only boto3 is.

The asset is staged as the CDK app stages it (:func:`infra.asset.stage_detector_code`),
then imported and invoked by a Python that has nothing installed but boto3 and its
own dependencies (what the Lambda Python runtime provides): a new virtual
environment, not this one. It handles a recorded stream event of a real concurrent
overwrite against a moto server process, and the conflict it logs is read back with
raw boto3.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import stream_records

from infra.asset import (
    OPTIONAL_IMPORTS,
    RUNTIME_PROVIDED,
    distribution_files,
    handler_dependencies,
    lambda_platform,
    stage_detector_code,
)
from regions.router import RegionRouter

# builds a virtual environment and stages a 13 MB bundle: the second tier
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "policies" / "minimal.yaml"
EU1, EU2 = "eu-central-1", "eu-west-1"


@pytest.fixture(scope="module")
def asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_detector_code(MINIMAL, build_dir=tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def boto3_only_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment holding boto3 and what boto3 needs, nothing else."""
    env_dir = tmp_path_factory.mktemp("lambda-runtime")
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for name in sorted(RUNTIME_PROVIDED):
        try:
            files = distribution_files(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not needed by this boto3 (six, for one, only by older dateutils)
        for rel, src in files:
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    return python


def _run(python: Path, code_dir: Path, script: str, env: dict[str, str]) -> Any:
    # Nothing of this process's configuration: no regionkit or AWS settings, and not the
    # test suite's strict-validator plugin (BOTOCORE_EXPERIMENTAL__PLUGINS).
    own = ("REGIONKIT_", "AWS_", "BOTOCORE_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    base.pop("PYTHONPATH", None)
    done = subprocess.run(
        # -I: this interpreter's own site-packages only (no user site, no PYTHONPATH); the
        # function's directory goes first on the path, as /var/task does in Lambda.
        [str(python), "-I", "-c", f"import sys; sys.path.insert(0, {str(code_dir)!r})\n{script}"],
        env={**base, **env},
        cwd=code_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_asset_bundles_what_the_handler_imports_and_nothing_else(asset: Path) -> None:
    top = {p.name for p in asset.iterdir() if not p.name.endswith(".dist-info")}
    assert {"residency", "regions", "policy.yaml"} <= top
    assert {"pydantic", "pydantic_core", "structlog", "yaml", "tenacity", "iso3166"} <= top
    unneeded = ("cryptography", "cffi", "typer", "rich", "pytest", "hypothesis")
    for absent in ("boto3", "botocore", "moto", "aws_cdk", *unneeded):
        assert absent not in top, absent
    assert not list(asset.rglob("__pycache__"))
    assert not list(asset.rglob("*.pyc"))
    assert (asset / "policy.yaml").read_bytes() == MINIMAL.read_bytes()
    deps = handler_dependencies(asset)
    assert "pydantic" in deps and "structlog" in deps
    assert not {d.lower() for d in deps} & {n.lower() for n in RUNTIME_PROVIDED | OPTIONAL_IMPORTS}
    runtime, arch = lambda_platform()
    assert runtime == f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert arch in {"x86_64", "arm64"}


def test_the_clean_environment_really_lacks_regionkits_dependencies(
    boto3_only_python: Path, tmp_path: Path
) -> None:
    found = _run(
        boto3_only_python,
        tmp_path,
        "import importlib.util, json\n"
        "names = ['boto3', 'pydantic', 'structlog', 'yaml', 'regions', 'moto', 'rich']\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))",
        {},
    )
    assert found == {
        "boto3": True,
        "pydantic": False,
        "structlog": False,
        "yaml": False,
        "regions": False,
        "moto": False,
        "rich": False,
    }


def _as_lambda_event(records: list[dict[str, Any]], region: str, table: str, arn: str) -> Any:
    """Stream records as Lambda delivers them (JSON: the datetime as epoch seconds)."""
    out = []
    for r in records:
        body = dict(r["dynamodb"])
        created = body.get("ApproximateCreationDateTime")
        if hasattr(created, "timestamp"):
            body["ApproximateCreationDateTime"] = created.timestamp()
        out.append(
            {
                "eventName": r["eventName"],
                "eventSource": "aws:dynamodb",
                "awsRegion": region,
                "eventSourceARN": f"{arn}",
                "dynamodb": body,
            }
        )
    return {"Records": out}


@pytest.mark.cluster
def test_the_staged_handler_logs_a_real_concurrent_overwrite_with_only_boto3(
    asset: Path, boto3_only_python: Path, isolated_cluster: Any
) -> None:
    """Two routers edit the same version of an item in two regions; one region's copy is
    then overwritten by the other's (replication, done by hand: the cluster does not
    replicate). The edits are blind, so the overwritten region's detector needs the
    parent the other region's detector published to the lineage table (replicated by
    hand too): until it is there the record waits (reported for Lambda to retry); then
    the stream of that region, handed to the staged function in the clean environment,
    yields exactly one conflict, which is in that region's conflict log."""
    c = isolated_cluster
    table = c.table_name("content")
    key = f"asset-{os.getpid()}-{id(c)}"
    a = RegionRouter(c.policy, region=EU1, config=c.config(region=EU1))
    b = RegionRouter(c.policy, region=EU2, config=c.config(region=EU2))
    ddb_a, ddb_b = c.client(EU1), c.client(EU2)
    a.put("content", {"pk": key, "body": "v0"})
    v0 = ddb_a.get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True)["Item"]
    ddb_b.put_item(TableName=table, Item=v0)  # replicated to B
    assert a.get("content", {"pk": key}) is not None and b.get("content", {"pk": key})
    a.put("content", {"pk": key, "body": "edited in A"})
    b.put("content", {"pk": key, "body": "edited in B"})
    vb = ddb_b.get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True)["Item"]
    ddb_a.put_item(TableName=table, Item=vb)  # B's edit replicated over A's: A's is lost

    records = stream_records(c, EU1, table, key)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "MODIFY"]
    arn = ddb_a.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    event = _as_lambda_event(records, EU1, table, arn)
    log_table = c.table_name(c.policy.system.conflict_log_table)
    before = ddb_a.scan(TableName=log_table, ConsistentRead=True)["Count"]

    def invoke(region: str, lambda_event: Any) -> Any:
        return _run(
            boto3_only_python,
            asset,
            "import json, regions.detector_lambda as fn\n"
            f"print(json.dumps(fn.handler(json.loads({json.dumps(json.dumps(lambda_event))}))))",
            {
                "REGIONKIT_MODE": "aws",
                "REGIONKIT_POLICY": str(asset / "policy.yaml"),
                "REGIONKIT_TABLE_PREFIX": c.table_prefix,
                "REGIONKIT_LOG_FORMAT": "json",
                "REGIONKIT_LINEAGE_WAIT_S": "0",
                "AWS_REGION": region,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_ENDPOINT_URL_DYNAMODB": c.endpoints[region],
            },
        )

    # B's blind edit landed over v0 in B; only B's stream shows it: A's detector waits
    seq = event["Records"][-1]["dynamodb"]["SequenceNumber"]
    assert invoke(EU1, event) == {"batchItemFailures": [{"itemIdentifier": seq}], "conflicts": 0}
    arn_b = ddb_b.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    event_b = _as_lambda_event(stream_records(c, EU2, table, key), EU2, table, arn_b)
    assert invoke(EU2, event_b) == {"batchItemFailures": [], "conflicts": 0}
    lineage = c.table_name(c.policy.system.lineage_table)
    for entry in ddb_b.scan(TableName=lineage, ConsistentRead=True)["Items"]:
        ddb_a.put_item(TableName=lineage, Item=entry)  # the lineage table replicates
    out = invoke(EU1, event)
    assert out == {"batchItemFailures": [], "conflicts": 1}
    logged = ddb_a.scan(TableName=log_table, ConsistentRead=True)["Items"]
    assert len(logged) == before + 1
