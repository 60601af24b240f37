"""Deterministic names of what the CDK app deploys: :mod:`residency.names`, re-exported.

The names live in the base layer so the audit and the drills, which may not import
``infra``, compute the same ones.
"""

from __future__ import annotations

from residency.names import (
    DETECTOR_ALARMS,
    DISRUPT_TAG,
    DISRUPT_TAG_VALUE,
    FIS_OUTPUT_KEY,
    TAG_DATA_CLASS,
    TAG_JURISDICTION,
    TAG_POLICY,
    TAG_REGION,
    access_stack_name,
    composite_alarm_name,
    detector_alarm_name,
    detector_function_name,
    fis_role_name,
    key_alias,
    keys_stack_name,
    regional_stack_name,
    replication_alarm_name,
    tables_stack_name,
)

__all__ = [
    "DETECTOR_ALARMS",
    "DISRUPT_TAG",
    "DISRUPT_TAG_VALUE",
    "FIS_OUTPUT_KEY",
    "TAG_DATA_CLASS",
    "TAG_JURISDICTION",
    "TAG_POLICY",
    "TAG_REGION",
    "access_stack_name",
    "composite_alarm_name",
    "detector_alarm_name",
    "detector_function_name",
    "fis_role_name",
    "key_alias",
    "keys_stack_name",
    "regional_stack_name",
    "replication_alarm_name",
    "tables_stack_name",
]
