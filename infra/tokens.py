"""The deploying account's partition and ID, as the CDK's tokens, read once per process.

``cdk.Aws.PARTITION`` is a static property of the Node side: every read is a round
trip to the jsii process, and the token it returns never changes.
"""

from __future__ import annotations

from functools import cache

import aws_cdk as cdk

__all__ = ["partition_and_account"]


@cache
def partition_and_account() -> tuple[str, str]:
    """``(Aws.PARTITION, Aws.ACCOUNT_ID)``: tokens CloudFormation resolves at deploy."""
    return cdk.Aws.PARTITION, cdk.Aws.ACCOUNT_ID
