"""The attempt classifier and the Job's podFailurePolicy: pure, from pod documents."""

import json

import pytest

from steward.services.attempts import (
    AttemptClass,
    classify,
    pod_failure_policy,
    reported_outputs,
)


def pod(
    phase,
    *,
    exit_code=None,
    reason=None,
    conditions=(),
    pod_reason=None,
    deleting=False,
    waiting=None,
    message=None,
    memory="4Gi",
):
    state = {}
    if exit_code is not None:
        terminated = {
            "exitCode": exit_code,
            "reason": reason or "Error",
            "startedAt": "2026-11-24T10:00:00Z",
            "finishedAt": "2026-11-24T10:05:00Z",
        }
        if message is not None:
            terminated["message"] = message
        state["terminated"] = terminated
    elif waiting is not None:
        state["waiting"] = {"reason": waiting}
    body = {
        "metadata": {"name": "p", "uid": "u"},
        "spec": {
            "nodeName": "node-7",
            "containers": [{"name": "pipeline", "resources": {"limits": {"memory": memory}}}],
        },
        "status": {
            "phase": phase,
            "conditions": list(conditions),
            "containerStatuses": [{"name": "pipeline", "state": state}] if state else [],
        },
    }
    if pod_reason:
        body["status"]["reason"] = pod_reason
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-11-24T10:04:00Z"
    return body


DISRUPTION = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}


@pytest.mark.parametrize(
    ("document", "klass", "reason", "counted"),
    [
        (
            pod("Succeeded", exit_code=0, reason="Completed"),
            AttemptClass.SUCCEEDED,
            "Completed",
            False,
        ),
        # k/k#131530: OOMKilled reported with exit 0 and phase Succeeded: it succeeded.
        (
            pod("Succeeded", exit_code=0, reason="OOMKilled"),
            AttemptClass.SUCCEEDED,
            "OOMKilled",
            False,
        ),
        (
            pod("Failed", exit_code=143, conditions=[DISRUPTION]),
            AttemptClass.EVICTED,
            "PreemptionByScheduler",
            False,
        ),
        # A preempted pod that was also OOM-killed: the disruption wins, as in podFailurePolicy.
        (
            pod("Failed", exit_code=137, reason="OOMKilled", conditions=[DISRUPTION]),
            AttemptClass.EVICTED,
            "PreemptionByScheduler",
            False,
        ),
        (pod("Failed", pod_reason="Evicted"), AttemptClass.EVICTED, "Evicted", False),
        (
            pod("Failed", exit_code=137, reason="OOMKilled"),
            AttemptClass.OOM_KILLED,
            "OOMKilled",
            False,
        ),
        # Exit 137 alone is some SIGKILL, not an OOM kill (never "any signal").
        (pod("Failed", exit_code=137, reason="Error"), AttemptClass.EXIT_CODE, "Error", True),
        (
            pod("Failed", exit_code=137, deleting=True),
            AttemptClass.EVICTED,
            "SIGKILL (pod deleted)",
            False,
        ),
        (
            pod("Failed", exit_code=143, deleting=True),
            AttemptClass.EVICTED,
            "SIGTERM (pod deleted)",
            False,
        ),
        (pod("Failed", exit_code=3), AttemptClass.EXIT_CODE, "Error", True),
        (pod("Failed", waiting="ErrImagePull"), AttemptClass.INFRASTRUCTURE, "ErrImagePull", True),
        (
            pod("Failed", pod_reason="UnexpectedAdmissionError"),
            AttemptClass.INFRASTRUCTURE,
            "UnexpectedAdmissionError",
            True,
        ),
        (pod("Failed"), AttemptClass.INFRASTRUCTURE, "NeverStarted", True),
    ],
)
def test_classify(document, klass, reason, counted):
    verdict = classify(document)
    assert (verdict.klass, verdict.reason, verdict.counted) == (klass, reason, counted)
    assert verdict.node == "node-7"
    assert verdict.memory == "4Gi"


def test_verdict_facts_and_label():
    verdict = classify(pod("Failed", exit_code=3))
    assert verdict.label == "ExitCode 3"
    assert verdict.exit_code == 3
    assert (verdict.ended_at - verdict.started_at).total_seconds() == 300
    assert classify(pod("Failed", exit_code=137, reason="OOMKilled")).label == "OOMKilled"


def test_pod_failure_policy_mirrors_the_classifier():
    policy = pod_failure_policy([3, 42, 143])
    rules = policy["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onExitCodes"]["values"] == [143]
    assert rules[2]["action"] == "FailIndex"
    # 137 always fails the index so Steward can tell an OOM kill from another SIGKILL; a
    # never-retry 143 cannot override the SIGTERM rule before it.
    assert rules[2]["onExitCodes"] == {
        "containerName": "pipeline",
        "operator": "In",
        "values": [3, 42, 137],
    }


def test_reported_outputs():
    message = json.dumps({"files": [{"name": "calexp-1.fits", "bytes": 10, "adler32": "0a1b2c3d"}]})
    files = reported_outputs(pod("Succeeded", exit_code=0, message=message))
    assert [(f.name, f.bytes, f.adler32) for f in files] == [("calexp-1.fits", 10, "0a1b2c3d")]


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        "not json",
        json.dumps({"files": [{"name": "../x", "bytes": 1, "adler32": "1"}]}),
        json.dumps({"files": [{"name": "a", "bytes": -1, "adler32": "0a1b2c3d"}]}),
    ],
)
def test_bad_termination_messages_report_nothing(message):
    assert reported_outputs(pod("Succeeded", exit_code=0, message=message)) == []
