"""Why an attempt ended: the classifier every kind that runs pods calls, never copies.

LDM-230 3.1.3 asks the batch service to be "capable of differentiating kills from other
failures", and the peers get it wrong in known ways (batch-and-retention-facts.md A1, A3):
ctrl_bps_htcondor treats any signal as out-of-memory, PanDA operators check by hand which
failures were preemptions. Here each ended pod gets one class, from what Kubernetes itself
recorded:

``Evicted``
    The platform ended it: the pod carries the ``DisruptionTarget`` condition (preemption,
    eviction, node drain, the taint manager, pod GC, the kubelet), or a kubelet eviction
    reason, or its container ended on SIGTERM (exit 143) or SIGKILL while the pod was being
    deleted (a pause or a termination deletes the pods). Never charged to the retries.
``OOMKilled``
    The container's termination reason is ``OOMKilled``: the kernel killed it for exceeding
    its memory limit. Only that reason counts; exit 137 alone means *some* SIGKILL and is an
    ``ExitCode 137``. (CRI-O on cgroup v2 reports ``Error`` for an OOM kill, k/k PR #112360;
    such a kill is then an exit code, the safe side.) Not charged: Steward reruns it with
    more memory (`steward.services.campaign`).
``ExitCode N``
    The application exited with N. Charged, unless N is a never-retry code, which fails the
    invocation at once.
``Infrastructure``
    The container never ran to an exit: image pull errors, admission errors, a lost node
    without a disruption condition. Charged, as Kubernetes charges it.

`pod_failure_policy` renders the same rules as the Job's ``podFailurePolicy`` so that the Job
controller and the ledger agree on what spends the retry budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError

from steward.models.campaign import OutputFile, TerminationReport

__all__ = [
    "CONTAINER",
    "SIGKILL_EXIT",
    "SIGTERM_EXIT",
    "AttemptClass",
    "Verdict",
    "classify",
    "pod_failure_policy",
    "reported_outputs",
]

CONTAINER: Final = "pipeline"
"""Name of the container that runs an invocation."""

SIGTERM_EXIT: Final = 143
"""Exit status of a process ended by SIGTERM (128 + 15): what a pod's deletion sends."""

SIGKILL_EXIT: Final = 137
"""Exit status of a process ended by SIGKILL (128 + 9): an OOM kill, or any other SIGKILL."""

_EVICTION_REASONS: Final = frozenset(
    {"Evicted", "Preempting", "Shutdown", "NodeShutdown", "Terminated", "DeletionByPodGC"}
)
"""Pod ``status.reason`` values the kubelet and the node lifecycle use for a platform kill."""


class AttemptClass(StrEnum):
    """Why an attempt ended."""

    SUCCEEDED = "Succeeded"
    EVICTED = "Evicted"
    OOM_KILLED = "OOMKilled"
    EXIT_CODE = "ExitCode"
    INFRASTRUCTURE = "Infrastructure"
    MISSING_OUTPUTS = "MissingOutputs"
    """The pod succeeded but reported no file for one of its step's ``expectedOutputs``
    (LDM-592 LDF1 d). Never `classify`'s answer: the campaign's recorder decides it from the
    termination message."""


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one ended pod."""

    klass: AttemptClass
    reason: str
    """The detail Kubernetes gave: the disruption reason, the container or pod reason."""
    exit_code: int | None = None
    counted: bool = False
    """Whether the attempt spends the invocation's retry budget."""
    node: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    memory: str | None = None
    """The memory limit the pod ran with (a Kubernetes quantity)."""

    @property
    def label(self) -> str:
        """The class as status and reports show it: ``OOMKilled``, ``ExitCode 3``..."""
        if self.klass is AttemptClass.EXIT_CODE:
            return f"ExitCode {self.exit_code}"
        return self.klass.value


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def _container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    statuses: list[Mapping[str, Any]] = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == container:
            return status
    return statuses[0] if statuses else None


def _terminated(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if status is None:
        return None
    terminated: Mapping[str, Any] | None = (status.get("state") or {}).get("terminated")
    return terminated


def _disruption(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return str(condition.get("reason") or "DisruptionTarget")
    return None


def _memory(pod: Mapping[str, Any], container: str) -> str | None:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            limits = (spec.get("resources") or {}).get("limits") or {}
            value = limits.get("memory")
            return str(value) if value is not None else None
    return None


def classify(pod: Mapping[str, Any], *, container: str = CONTAINER) -> Verdict:  # noqa: PLR0911 - a decision list: one return per rule, in order
    """Say why an ended pod (phase Succeeded or Failed) ended.

    Parameters
    ----------
    pod
        The pod as the API returns it (JSON).
    container
        The container that runs the invocation.
    """
    status = pod.get("status") or {}
    container_status = _container_status(pod, container)
    terminated = _terminated(container_status)
    exit_code = int(terminated["exitCode"]) if terminated is not None else None
    facts = Verdict(
        AttemptClass.SUCCEEDED,
        "",
        exit_code=exit_code,
        node=(pod.get("spec") or {}).get("nodeName"),
        started_at=_time((terminated or {}).get("startedAt") or status.get("startTime")),
        ended_at=_time((terminated or {}).get("finishedAt")),
        memory=_memory(pod, container),
    )

    def verdict(klass: AttemptClass, reason: str, *, counted: bool = False) -> Verdict:
        return replace(facts, klass=klass, reason=reason, counted=counted)

    container_reason = str((terminated or {}).get("reason") or "")
    if status.get("phase") == "Succeeded":
        return verdict(AttemptClass.SUCCEEDED, container_reason or "Completed")
    disruption = _disruption(pod)
    if disruption is not None:
        return verdict(AttemptClass.EVICTED, disruption)
    pod_reason = str(status.get("reason") or "")
    if pod_reason in _EVICTION_REASONS:
        return verdict(AttemptClass.EVICTED, pod_reason)
    if terminated is None:
        waiting = ((container_status or {}).get("state") or {}).get("waiting") or {}
        reason = pod_reason or str(waiting.get("reason") or "") or "NeverStarted"
        return verdict(AttemptClass.INFRASTRUCTURE, reason, counted=True)
    if container_reason == "OOMKilled":
        return verdict(AttemptClass.OOM_KILLED, "OOMKilled")
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp") is not None
    if exit_code == SIGTERM_EXIT or (deleting and exit_code == SIGKILL_EXIT):
        signal = "SIGTERM" if exit_code == SIGTERM_EXIT else "SIGKILL"
        return verdict(AttemptClass.EVICTED, f"{signal} (pod deleted)")
    return verdict(AttemptClass.EXIT_CODE, container_reason or "Error", counted=True)


def pod_failure_policy(never_retry: Iterable[int], *, container: str = CONTAINER) -> dict[str, Any]:
    """The Job's ``podFailurePolicy``: the classifier's rules in the Job controller's terms.

    Rules apply in order, first match wins:

    1. ``DisruptionTarget`` -> Ignore: preemption, eviction, drain never spend the budget.
    2. Exit 143 (SIGTERM, a pod deletion: pause, termination) -> Ignore.
    3. Exit 137 and the never-retry codes -> FailIndex: the Job stops that index at once.
       For 137 Steward then reads the container reason (`classify`): an OOM kill is rerun
       with more memory in a rescue Job, any other SIGKILL is retried by Steward within the
       budget. Kubernetes cannot match a reason, only exit codes (A1: "DisruptionTarget
       does not cover out-of-memory kills").
    4. Anything else counts against ``backoffLimitPerIndex``.
    """
    fail_index = sorted({SIGKILL_EXIT, *never_retry} - {SIGTERM_EXIT})
    return {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [SIGTERM_EXIT],
                },
            },
            {
                "action": "FailIndex",
                "onExitCodes": {"containerName": container, "operator": "In", "values": fail_index},
            },
        ]
    }


def reported_outputs(pod: Mapping[str, Any], *, container: str = CONTAINER) -> list[OutputFile]:
    """The files a succeeded invocation says it wrote, from its termination message.

    The container writes a `TerminationReport` (JSON) to its ``terminationMessagePath``;
    Kubernetes keeps it in the container's terminated state (at most 4 KiB). A message that
    is not such a report yields no files: the ledger records the attempt, and closeout finds
    nothing to verify for it rather than failing the whole pass on one bad message.
    """
    terminated = _terminated(_container_status(pod, container))
    message = (terminated or {}).get("message")
    if not message:
        return []
    try:
        return TerminationReport.model_validate(json.loads(message)).files
    except (ValueError, ValidationError):
        return []
