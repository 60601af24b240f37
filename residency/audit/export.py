"""Reading a table from a DynamoDB point-in-time export in S3 instead of scanning it.

An export consumes no read capacity. :func:`start_export` asks for one
(``ExportTableToPointInTime``, DynamoDB JSON) into a prefix unique to this audit
run, region and table; :func:`wait_for_export` polls ``DescribeExport`` until it
completes; :func:`iter_export_items` streams the items file by file and line by
line, never holding a table (or a whole file) in memory.

The documented layout (the DynamoDB Developer Guide, "table export output format")::

    <prefix>/AWSDynamoDB/<ExportId>/manifest-summary.json   {"manifestFilesS3Key": ...,
                                                             "itemCount": ..., ...}
    <prefix>/AWSDynamoDB/<ExportId>/manifest-files.json     one JSON object a line:
                                                            {"dataFileS3Key": ..., "itemCount": ...}
    <prefix>/AWSDynamoDB/<ExportId>/data/<name>.json.gz     one {"Item": {...}} a line

The manifest is found through ``DescribeExport``'s ``ExportManifest``, else at the
documented key. moto (5.2) writes only the data file (as ``data/<uuid>.gz``, under
a directory that is not the export ID) and no manifest; for such an export the
reader falls back to the data files under ``<prefix>/AWSDynamoDB/``, and only when
that prefix holds exactly one export, which the prefixes this module chooses
guarantee.

Residency: an export of a pinned table is itself a copy of personal data.
:func:`start_export` refuses a bucket outside the table's jurisdiction.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from residency.errors import ConfigError, ExportFailed

__all__ = [
    "ExportFailed",
    "bucket_region",
    "iter_export_items",
    "start_export",
    "wait_for_export",
]


def bucket_region(s3: Any, bucket: str) -> str:
    """The region of an S3 bucket (``GetBucketLocation``)."""
    loc = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    if not loc:
        return "us-east-1"
    if loc == "EU":  # the legacy name of eu-west-1
        return "eu-west-1"
    return str(loc)


def start_export(
    ddb: Any,
    s3: Any,
    *,
    table_arn: str,
    bucket: str,
    prefix: str,
    allowed_bucket_regions: frozenset[str] | None,
) -> str:
    """Request a full DynamoDB-JSON export of ``table_arn``; return its ARN.

    ``allowed_bucket_regions`` (for pinned tables: the jurisdiction's regions)
    limits where the bucket may be; None allows any.
    """
    if allowed_bucket_regions is not None:
        where = bucket_region(s3, bucket)
        if where not in allowed_bucket_regions:
            raise ConfigError(
                message=(
                    f"export bucket {bucket!r} is in {where}, outside the table's jurisdiction "
                    f"(regions: {', '.join(sorted(allowed_bucket_regions))}); exporting would "
                    "copy personal data across the border: use a bucket in the jurisdiction, "
                    "e.g. --export-bucket 'audit-{region}'"
                )
            )
    desc = ddb.export_table_to_point_in_time(
        TableArn=table_arn,
        S3Bucket=bucket,
        S3Prefix=prefix,
        ExportFormat="DYNAMODB_JSON",
        ExportType="FULL_EXPORT",
    )["ExportDescription"]
    return str(desc["ExportArn"])


def wait_for_export(
    ddb: Any,
    export_arn: str,
    *,
    timeout_s: float = 3600.0,
    poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll ``DescribeExport`` until the export completes; return its description."""
    deadline = clock() + timeout_s
    delay = min(poll_s, 0.2)
    while True:
        desc: dict[str, Any] = ddb.describe_export(ExportArn=export_arn)["ExportDescription"]
        status = desc.get("ExportStatus")
        if status == "COMPLETED":
            return desc
        if status == "FAILED":
            raise ExportFailed(
                what=export_arn,
                # the code only: the service's FailureMessage is not regionkit's text
                reason=f"the export failed ({desc.get('FailureCode') or 'no failure code'})",
            )
        if clock() >= deadline:
            raise ExportFailed(
                what=export_arn, reason=f"not complete after {timeout_s:.0f} s (status {status})"
            )
        sleep(delay)
        delay = min(delay * 2, max(poll_s, 0.2), 30.0)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


def _get_json(s3: Any, bucket: str, key: str) -> Any:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return json.loads(body.read())
    finally:
        body.close()


def _manifest_lines(s3: Any, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for line in body.iter_lines():
            if line.strip():
                yield json.loads(line)
    finally:
        body.close()


def _data_files(s3: Any, desc: dict[str, Any]) -> tuple[list[str], int | None]:
    """The data file keys of an export, and the item count its manifest promises."""
    bucket = str(desc["S3Bucket"])
    prefix = str(desc.get("S3Prefix") or "")
    export_id = str(desc["ExportArn"]).rsplit("/", 1)[-1]
    manifest = desc.get("ExportManifest")
    if not manifest:
        documented = _join(prefix, "AWSDynamoDB", export_id, "manifest-summary.json")
        if _exists(s3, bucket, documented):
            manifest = documented
    if manifest:
        return _manifest_data_files(s3, bucket, prefix, str(manifest))
    return _listed_data_files(s3, desc, bucket, prefix), None


def _manifest_data_files(
    s3: Any, bucket: str, prefix: str, manifest: str
) -> tuple[list[str], int | None]:
    """The data files an export's manifest lists, and the item count it promises."""
    summary = _get_json(s3, bucket, manifest)
    files_key = str(summary["manifestFilesS3Key"])
    if not _exists(s3, bucket, files_key) and prefix and not files_key.startswith(prefix):
        files_key = _join(prefix, files_key)
    keys = []
    for entry in _manifest_lines(s3, bucket, files_key):
        key = str(entry["dataFileS3Key"])
        if prefix and not key.startswith(prefix.strip("/") + "/"):
            key = _join(prefix, key)
        keys.append(key)
    count = summary.get("itemCount")
    return keys, int(count) if isinstance(count, int) else None


def _listed_data_files(s3: Any, desc: dict[str, Any], bucket: str, prefix: str) -> list[str]:
    """No manifest (moto): every data file under the prefix, if it holds one export only."""
    root = _join(prefix, "AWSDynamoDB") + "/"
    keys, dirs = [], set()
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": root}
    while True:
        page = s3.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            key = str(obj["Key"])
            rest = key[len(root) :].split("/")
            if len(rest) >= 3 and rest[1] == "data" and key.endswith(".gz"):
                dirs.add(rest[0])
                keys.append(key)
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    if len(dirs) > 1:
        raise ExportFailed(
            what=str(desc["ExportArn"]),
            reason=f"no manifest, and s3://{bucket}/{root} holds {len(dirs)} exports: "
            "cannot tell which data files belong to this one",
        )
    if not keys:
        raise ExportFailed(
            what=str(desc["ExportArn"]), reason=f"no manifest and no data files under {root}"
        )
    return sorted(keys)


def iter_export_items(
    s3: Any, desc: dict[str, Any], *, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of a completed export, in DynamoDB JSON, streamed.

    With no ``limit`` and a manifest that states ``itemCount``, a short read raises.
    """
    bucket = str(desc["S3Bucket"])
    keys, promised = _data_files(s3, desc)
    n = 0
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            with gzip.GzipFile(fileobj=body, mode="rb") as gz:
                for line in gz:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    item = record.get("Item") if isinstance(record, dict) else None
                    if not isinstance(item, dict):
                        raise ExportFailed(
                            what=str(desc["ExportArn"]),
                            reason=f"s3://{bucket}/{key}: a line is not an {{'Item': ...}} record",
                        )
                    yield item
                    n += 1
                    if limit is not None and n >= limit:
                        return
        finally:
            body.close()
    if promised is not None and n != promised:
        raise ExportFailed(
            what=str(desc["ExportArn"]),
            reason=f"the manifest promises {promised} items but the data files hold {n}",
        )
