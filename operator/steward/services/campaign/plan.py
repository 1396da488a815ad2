"""Pure decisions of the campaign operator: coverage, shards, names, memory, step phases.

Kept apart from `steward.services.campaign` (which talks to Kubernetes, Rucio and the ledger)
so that each rule can be tested on its own and read in one place.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

from steward.models.campaign import CampaignSpec, Step, StepPhase, fill_output_pattern

__all__ = [
    "ACCEPTED",
    "CANCELLED",
    "CONFIG_MAP_BUDGET",
    "DONE",
    "FAILED",
    "FINAL",
    "QUEUED",
    "SUCCEEDED",
    "WAITING",
    "Invocation",
    "OutputSort",
    "Retry",
    "canonical_json",
    "config_map_entry",
    "coverage_inputs",
    "data_id_hash",
    "dataset_name",
    "effective_shard_size",
    "job_name",
    "junk_dataset_name",
    "next_memory",
    "retry_decision",
    "shard_ranges",
    "sort_outputs",
    "step_phase",
    "topological",
]

WAITING: Final = "waiting"
"""Its step has not started."""
QUEUED: Final = "queued"
"""A Job is in charge of running it."""
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
"""Failed for good: no more reruns unless an operator asks (``controls.retry``)."""
ACCEPTED: Final = "accepted"
"""Failed, and force-accepted by ``controls.accept``."""
CANCELLED: Final = "cancelled"
"""Not run to the end because the campaign was terminated."""
FINAL: Final = frozenset({SUCCEEDED, FAILED, ACCEPTED, CANCELLED})
DONE: Final = frozenset({SUCCEEDED, ACCEPTED})
"""States that let the steps depending on this one start."""

CONFIG_MAP_BUDGET: Final = 900_000
"""Bytes of data ids per shard ConfigMap, under the API's 1 MiB object limit with room for
metadata."""

_NAME_LIMIT: Final = 52
"""Longest Job name: the Job controller puts it in pod labels (63 characters at most) and pod
names add the completion index and five random characters."""


def coverage_inputs(data_id: Mapping[str, Any]) -> tuple[str, ...]:
    """The Rucio DIDs an invocation of a first step reads: ``(did,)`` for ``{"did": did}``.

    A coverage query gives data ids of exactly that form (one matched DID each); the ledger
    derives the first steps' inputs from them rather than storing them again per step, which
    for 100,000 invocations would be as many rows per step to write before anything runs.
    """
    did = data_id.get("did")
    return (did,) if isinstance(did, str) and len(data_id) == 1 else ()


@dataclass(frozen=True)
class Invocation:
    """One member of the coverage set."""

    index: int
    data_id: Mapping[str, Any]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Rucio DIDs it reads (for a coverage query: the matched DID itself)."""
        return coverage_inputs(self.data_id)


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no spaces: equal data ids give equal text (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def data_id_hash(data_id: Mapping[str, Any]) -> str:
    """Sixteen hex digits identifying a data id (for labels, reports and lookups)."""
    return hashlib.sha256(canonical_json(data_id).encode()).hexdigest()[:16]


def config_map_entry(invocation: Invocation) -> str:
    """What an invocation's pod reads from ``$STEWARD_INVOCATIONS/$JOB_COMPLETION_INDEX``."""
    return canonical_json(
        {"index": invocation.index, "dataId": invocation.data_id, "inputs": invocation.inputs}
    )


def effective_shard_size(requested: int, invocations: Sequence[Invocation]) -> int:
    """Invocations per shard: at most ``requested``, and few enough for one ConfigMap."""
    if not invocations:
        return requested
    # Each entry is stored as a JSON string (its quotes escaped) under a quoted key of at
    # most as many digits as the shard size, with a colon and a comma.
    key = len(str(requested)) + 4
    largest = max(len(json.dumps(config_map_entry(i))) + key for i in invocations)
    return max(1, min(requested, CONFIG_MAP_BUDGET // largest))


def shard_ranges(count: int, shard_size: int) -> list[range]:
    """Invocation indexes of each shard: contiguous, ``shard_size`` each, the last shorter."""
    return [range(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{text[: limit - 7].rstrip('-')}-{digest}"


def job_name(campaign: str, step: str, suffix: str) -> str:
    """A Job's name, ``<campaign>-<step>-<suffix>``, shortened with a hash when too long."""
    return f"{_short(f'{campaign}-{step}', _NAME_LIMIT - len(suffix) - 1)}-{suffix}"


def dataset_name(campaign: str, step: str, uid: str) -> str:
    """Name (in ``outputs.scope``) of the dataset collecting one step's outputs."""
    return f"{campaign}.{step}.{uid[:8]}"


def junk_dataset_name(campaign: str, step: str, uid: str) -> str:
    """The Rucio dataset (name only) of a step's unexpected outputs (``outputs.keepJunk``)."""
    return f"{dataset_name(campaign, step, uid)}.junk"


@dataclass(frozen=True)
class OutputSort:
    """An invocation's reported files against its step's ``expectedOutputs``."""

    expected: list[str]
    """Reported files matching a pattern: the outputs."""
    junk: list[str]
    """Reported files matching no pattern (LDM-592 LDF1 c: "unexpected output files")."""
    missing: list[str]
    """Patterns (filled in) no reported file matches (LDF1 d: the job reports an error)."""


def sort_outputs(
    patterns: Sequence[str], data_id: Mapping[str, Any], names: Sequence[str]
) -> OutputSort:
    """Sort the file ``names`` an invocation reported by its step's expected ``patterns``.

    Without patterns every file is expected and none is required, as before steps could
    declare them. Placeholders take the data id's values; a coverage query's data id
    ``{"did": "scope:name"}`` also gives ``{scope}`` and ``{name}``.
    """
    if not patterns:
        return OutputSort(list(names), [], [])
    values = {key: str(value) for key, value in data_id.items()}
    did = data_id.get("did")
    if isinstance(did, str) and ":" in did:
        values["scope"], values["name"] = did.split(":", 1)
    filled = [fill_output_pattern(p, values) for p in patterns]
    expected = [n for n in names if any(fnmatchcase(n, p) for p in filled)]
    kept = set(expected)
    junk = [n for n in names if n not in kept]
    missing = [p for p in filled if not any(fnmatchcase(n, p) for n in expected)]
    return OutputSort(expected, junk, missing)


def topological(steps: Sequence[Step]) -> list[Step]:
    """Steps with each after the steps it depends on (spec order otherwise)."""
    placed: list[Step] = []
    names: set[str] = set()
    remaining = list(steps)
    while remaining:
        ready = [s for s in remaining if set(s.depends_on) <= names]
        if not ready:  # a cycle: the model refuses those, so this is never reached
            msg = f"steps {[s.name for s in remaining]} form a cycle"
            raise ValueError(msg)
        for step in ready:
            placed.append(step)
            names.add(step.name)
            remaining.remove(step)
    return placed


def next_memory(current: int, multiplier: float, limit: int) -> int | None:
    """Memory for the rerun of an invocation killed for memory, or None at the limit.

    Rounded up to a whole MiB, so the quantity reads well (``8Gi`` rather than a byte count).
    """
    if current >= limit:
        return None
    mib = 2**20
    raised = math.ceil(current * multiplier / mib) * mib
    return min(max(raised, current + mib), limit)


@dataclass(frozen=True)
class Retry:
    """What to do about an invocation whose Job gave up on it."""

    rerun: bool
    memory: int
    reason: str


def retry_decision(
    step: Step,
    *,
    last_class: str | None,
    exit_code: int | None,
    failures: int,
    memory: int,
) -> Retry:
    """Decide from the last attempt's class (`steward.services.attempts`) and the budget.

    The Job stops an index at once on exit 137 and the never-retry codes (its
    ``podFailurePolicy``), and after ``retries`` counted failures otherwise. Steward then:

    - OOMKilled: rerun with memory times ``memoryMultiplier``, up to ``memoryLimit``; at
      the limit the invocation fails.
    - Evicted: rerun at the same memory (never charged).
    - a never-retry exit code: fail.
    - anything else: rerun while the charged failures are within ``retries``, else fail.
    """
    if last_class == "OOMKilled":
        raised = next_memory(memory, step.memory_multiplier, step.memory_limit_bytes())
        if raised is None:
            return Retry(rerun=False, memory=memory, reason="OOMKilled at the memory limit")
        return Retry(rerun=True, memory=raised, reason="OOMKilled")
    if last_class == "Evicted":
        return Retry(rerun=True, memory=memory, reason="Evicted")
    if exit_code is not None and exit_code in step.never_retry_exit_codes:
        return Retry(rerun=False, memory=memory, reason=f"never-retry exit code {exit_code}")
    if failures <= step.retries:
        return Retry(rerun=True, memory=memory, reason=f"{last_class} {exit_code or ''}".strip())
    return Retry(rerun=False, memory=memory, reason=f"retries spent ({failures} failures)")


def step_phase(
    total: int,
    counts: Mapping[str, int],
    *,
    started: bool,
    gate: StepPhase | None,
    paused: bool,
) -> StepPhase:
    """A step's phase from its invocations' states.

    ``gate`` says why a step that has not started is held (waiting for its dependencies,
    staging, a breakpoint).
    """
    if not started:
        if counts.get(CANCELLED):
            return StepPhase.CANCELLED
        return gate or StepPhase.WAITING
    final = sum(counts.get(state, 0) for state in FINAL)
    if final >= total:
        if counts.get(FAILED):
            return StepPhase.FAILED
        if counts.get(CANCELLED):
            return StepPhase.CANCELLED
        return StepPhase.SUCCEEDED
    return StepPhase.PAUSED if paused else StepPhase.RUNNING


def blocked(spec: CampaignSpec, phases: Mapping[str, StepPhase]) -> set[str]:
    """Steps that cannot run because a step they depend on (transitively) failed."""
    result: set[str] = set()
    for step in topological(spec.steps):
        if any(phases.get(d) is StepPhase.FAILED or d in result for d in step.depends_on):
            result.add(step.name)
    return result


def group_rescues(
    reruns: Iterable[tuple[int, int, int]],
) -> dict[tuple[int, int], list[int]]:
    """Group (index, memory, remaining retries) into one rescue Job per memory and budget.

    A Job's pods share one template (one memory) and one ``backoffLimitPerIndex``.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for index, memory, remaining in reruns:
        groups.setdefault((memory, remaining), []).append(index)
    return groups


__all__ += ["blocked", "group_rescues"]
