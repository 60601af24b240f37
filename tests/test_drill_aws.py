"""AWS drills measured like local ones: the router's workload during a FIS experiment,
the deadline from the experiment's own duration, stop_experiment on interrupt and a
check that the pause statement is gone. Tested on moto (the simulation's tables and
replication) plus a fake FIS client on the same virtual time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regions.drills import DrillOptions, get_scenario
from regions.drills.aws import (
    REPLICATION_ROLE,
    FisBackend,
    FisFault,
    duration_seconds,
    pause_statements,
)
from regions.drills.backends import SimBackend, replication_groups
from regions.drills.launch import open_aws_drill
from regions.local.sim import Simulation, simulation
from residency.errors import ConfigError
from residency.policy import load_policy
from residency.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = load_policy(ROOT / "policies" / "minimal.yaml")
REGION = "eu-central-1"
ACCOUNT = "123456789012"


def _deny() -> dict[str, Any]:
    return {
        "Sid": "FISPauseReplication",
        "Effect": "Deny",
        "Principal": {
            "AWS": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/replication.dynamodb."
            f"amazonaws.com/{REPLICATION_ROLE}"
        },
        "Action": "dynamodb:*",
        "Resource": "*",
    }


class FakeFis:
    """FIS on the simulation's virtual clock: pauses replication with a deny statement.

    ``leave_statement``: FIS fails to remove its statement (the case the drill must
    catch and repair loudly).
    """

    def __init__(self, sim: Simulation, duration: str, *, leave_statement: bool = False) -> None:
        self.sim, self.duration, self.leave = sim, duration_seconds(duration), leave_statement
        self.exp: dict[str, Any] | None = None
        self.calls: list[str] = []
        self.tables = [
            (REGION, f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}")
            for t, regions in replication_groups(MINIMAL)
            if REGION in regions
        ]

    def list_experiment_templates(self, **_: Any) -> dict[str, Any]:
        tags = {"regionkit:policy": MINIMAL.name, "regionkit:region": REGION}
        return {"experimentTemplates": [{"id": "EXT1", "tags": tags}]}

    def get_experiment_template(self, id: str) -> dict[str, Any]:
        return {
            "experimentTemplate": {
                "id": id,
                "actions": {"Pause": {"parameters": {"duration": f"PT{self.duration}S"}}},
            }
        }

    def start_experiment(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("start")
        self.exp = {"id": "EXP1", "status": "initiating", "t0": self.sim.now}
        return {"experiment": {"id": "EXP1", "state": {"status": "initiating"}}}

    def _pause(self, on: bool) -> None:
        client = self.sim.clients.raw(REGION)
        if on:
            self.sim.faults.pause(src=REGION)
            self.sim.faults.pause(dst=REGION)
            for _, arn in self.tables:
                doc = {"Version": "2012-10-17", "Statement": [_deny()]}
                client.put_resource_policy(ResourceArn=arn, Policy=json.dumps(doc))
        else:
            self.sim.faults.resume(src=REGION)
            self.sim.faults.resume(dst=REGION)
            if not self.leave:
                for _, arn in self.tables:
                    client.delete_resource_policy(ResourceArn=arn)

    def get_experiment(self, id: str) -> dict[str, Any]:
        assert self.exp is not None
        e, now = self.exp, self.sim.now
        if e["status"] == "initiating" and now >= e["t0"] + 1.0:
            e["status"], e["t1"] = "running", now
            self._pause(True)
        elif e["status"] == "running" and now >= e["t1"] + self.duration:
            e["status"] = "completed"
            self._pause(False)
        elif e["status"] == "stopping":
            e["status"] = "stopped"
            self._pause(False)
        return {"experiment": {"id": id, "state": {"status": e["status"]}}}

    def stop_experiment(self, id: str) -> dict[str, Any]:
        self.calls.append("stop")
        assert self.exp is not None
        self.exp["status"] = "stopping"
        return {"experiment": {"id": id, "state": {"status": "stopping"}}}


class _Control:
    """The drill's control plane on the simulation: the fake FIS, a fixed caller
    identity, and the simulation's own DynamoDB for the resource policies."""

    def __init__(self, sim: Simulation, fis: FakeFis) -> None:
        self.sim, self.fis = sim, fis
        self.asked: list[tuple[str, str]] = []

    def get_caller_identity(self) -> dict[str, str]:
        return {"Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/sre/drill"}

    def client(self, service: str, region: str) -> Any:
        self.asked.append((service, region))
        return {"fis": self.fis, "sts": self, "dynamodb": self.sim.clients.raw(region)}[service]


def _aws_drill(
    *, leave: bool = False, lag: float = 0.0, stop_at: str | None = None
) -> tuple[Any, FakeFis, Simulation, BaseException | None]:
    """The whole AWS drill as ``regionkit drill run --target aws`` opens it
    (:func:`open_aws_drill`), on the simulation's virtual time."""

    def hook(name: str, detail: dict[str, Any]) -> None:
        if name == "phase" and detail["name"] == stop_at:
            raise KeyboardInterrupt

    with simulation(MINIMAL, seed=11) as sim:
        fis = FakeFis(sim, "PT2S", leave_statement=leave)
        data = SimBackend(sim)
        if lag:
            sim.faults.set_lag(None, None, lag)
        sc = get_scenario("replication-pause")
        settings = Settings(mode="aws", policy=ROOT / "policies" / "minimal.yaml")
        options = DrillOptions(duration=9.0, rate=10, recovery=0.5, baseline=1.5, seed=11)
        err: BaseException | None = None
        with open_aws_drill(
            sc,
            sc.parse(MINIMAL, {"region": REGION}),
            MINIMAL,
            settings,
            options,
            confirm_account=ACCOUNT,
            clients=_Control(sim, fis),
            data_plane=data,
            on_event=hook,
            now=data.now,
            sleep=data.sleep,
            poll=0.5,
        ) as runner:
            assert runner.opt.duration == 2.0  # the template's own duration, not 9 s
            try:
                runner.run()
            except KeyboardInterrupt as exc:
                err = exc
        left = [
            arn
            for _, arn in fis.tables
            if _policy_of(sim, arn) and pause_statements(_policy_of(sim, arn))
        ]
        runner.journal.parameters["left"] = len(left)
        return runner.journal, fis, sim, err


def _policy_of(sim: Simulation, arn: str) -> dict[str, Any]:
    try:
        got = sim.clients.raw(REGION).get_resource_policy(ResourceArn=arn)
    except Exception:
        return {}
    return dict(json.loads(got["Policy"]))


@pytest.mark.slow  # a whole AWS drill on moto and a fake FIS
@pytest.mark.wallclock  # its verdict includes convergence within the policy's target
def test_aws_drill_measures_what_a_local_drill_measures() -> None:
    j, fis, _, err = _aws_drill(lag=0.6)
    assert err is None
    assert j.target == "aws"
    assert fis.calls == ["start"]  # ended by itself at its duration: never stopped
    f = j.figures
    assert f.writes_acknowledged > 0  # the canary workload ran through the router
    assert f.rpo_exposure_count > 0 and f.rpo_exposure_max_age_seconds > 0  # probed
    assert f.rpo_lost == 0 and f.rpo_recovered == f.rpo_exposure_count
    assert f.converged and f.convergence_seconds is not None
    assert f.rto_seconds is None and "does not stop writes" in f.rto_not_applicable
    assert j.verdict == "pass", j.reasons
    assert j.parameters["left"] == 0
    assert "checked after heal: no fault left in place" in j.cleanup


def test_interrupt_stops_the_experiment_and_removes_a_left_statement() -> None:
    j, fis, _, err = _aws_drill(leave=True, stop_at="workload")
    assert isinstance(err, KeyboardInterrupt)
    assert fis.calls == ["start", "stop"]  # stop_experiment on interrupt
    assert j.parameters["left"] == 0  # the drill removed what FIS left
    assert any("REMOVED" in c and "replication-pause statement" in c for c in j.cleanup), j.cleanup
    assert j.verdict == "error"


class _PolicyStore:
    """DynamoDB's resource-policy calls over a dict of policies by ARN (moto keeps no
    policy on a stream ARN), and DescribeTable naming each table's stream."""

    class PolicyNotFoundException(Exception):
        pass

    def __init__(self, policies: dict[str, dict[str, Any]]) -> None:
        self.policies = policies

    def describe_table(self, TableName: str) -> dict[str, Any]:
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TableName}"
        return {"Table": {"TableArn": arn, "LatestStreamArn": f"{arn}/stream/2026-12-01T00:00:00"}}

    def get_resource_policy(self, ResourceArn: str) -> dict[str, Any]:
        if ResourceArn not in self.policies:
            raise self.PolicyNotFoundException(ResourceArn)
        return {"Policy": json.dumps(self.policies[ResourceArn]), "RevisionId": "1"}

    def put_resource_policy(self, ResourceArn: str, Policy: str, **_: Any) -> None:
        self.policies[ResourceArn] = json.loads(Policy)

    def delete_resource_policy(self, ResourceArn: str, **_: Any) -> None:
        del self.policies[ResourceArn]


def test_a_statement_left_on_a_stream_policy_is_found_and_removed() -> None:
    # FIS adds its deny to the table's policy and to its stream's: a leftover on either
    # would keep the replica REPLICATION_NOT_AUTHORIZED.
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/content"
    stream = f"{table}/stream/2026-12-01T00:00:00"
    keep = {"Sid": "Theirs", "Effect": "Allow", "Principal": "*", "Action": "dynamodb:GetItem"}
    store = _PolicyStore(
        {stream: {"Version": "2012-10-17", "Statement": [keep, _deny()]}, table: {"Statement": []}}
    )
    fault = FisFault(
        object(),
        "EXT1",
        duration=1.0,
        ddb=lambda region: store,
        tables=[(REGION, table)],
        now=lambda: 0.0,
        sleep=lambda s: None,
    )
    assert fault.leftovers() == []
    assert store.policies[stream]["Statement"] == [keep]  # only FIS's statement went
    assert [n for n in fault.notes if stream in n and "REMOVED 1" in n]


def test_deadline_comes_from_the_experiment_duration() -> None:
    assert duration_seconds("PT10M") == 600 and duration_seconds("PT1H30S") == 3630
    fault = FisFault(
        None, "t", duration=600, ddb=lambda r: None, tables=[], now=lambda: 0.0, sleep=print
    )
    assert 600 < fault.deadline_seconds <= 800  # not duration + 600, not less than PT10M
    with pytest.raises(ConfigError):
        duration_seconds("10 minutes")


def test_other_scenarios_refuse_aws() -> None:
    with simulation(MINIMAL, seed=1) as sim:
        b = FisBackend(
            SimBackend(sim),
            FisFault(
                None, "t", duration=1, ddb=lambda r: None, tables=[], now=lambda: 0.0, sleep=print
            ),
        )
        with pytest.raises(ConfigError, match="only replication-pause"):
            b.outage(REGION)


def test_stop_condition_is_customer_harm_not_replication_latency() -> None:
    """A pause does not fail routed requests by design, so it cannot trip this alarm."""
    from moto import mock_aws

    from residency.deployment import plan_deployment
    from residency.fis_template import customer_harm_alarm, experiment_template

    harm = customer_harm_alarm(plan_deployment(MINIMAL), REGION)
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in harm["Metrics"] if "MetricStat" in m}
    assert names == {"RoutedRequests", "RoutedRequestErrors"}
    assert "ReplicationLatency" not in json.dumps(harm)
    t = experiment_template(MINIMAL, REGION, account=ACCOUNT, stop_on="customer-harm")
    (stop,) = t["stopConditions"]
    assert stop["value"].endswith(f":alarm:{harm['AlarmName']}")
    with mock_aws():
        import boto3

        cw = boto3.client("cloudwatch", region_name=REGION)
        cw.put_metric_alarm(**harm)
        [alarm] = cw.describe_alarms(AlarmNames=[harm["AlarmName"]])["MetricAlarms"]
        assert alarm["TreatMissingData"] == "notBreaching"
        fis = boto3.client("fis", region_name=REGION)
        assert fis.create_experiment_template(**t, clientToken="x")["experimentTemplate"]["id"]
    with pytest.raises(ConfigError, match="stop_on"):
        experiment_template(MINIMAL, REGION, stop_on="never")
