"""Campaign: a set of pipelines run over a coverage set at one site (LDM-230 3.1).

LDM-230 3.1.3 describes campaigns as ordered pipelines over a coverage set with a priority, the
production operator's verbs (pause, resume, terminate, close out), input pre-staging and output
handling, and the need to tell kills apart from real failures. Use cases 1, 2, 8-11, 14 and 16
come from the operations use case list.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from .common import (
    Bool,
    CamelModel,
    Condition,
    DataSelector,
    Duration,
    Int,
    LocatedValueError,
    Name,
    Number,
    Resource,
    RSEExpression,
    SpecModel,
    Timestamp,
)

__all__ = [
    "AcceptRequest",
    "Campaign",
    "CampaignPhase",
    "CampaignSpec",
    "CampaignStatus",
    "ControlStatus",
    "Controls",
    "Coverage",
    "DesiredState",
    "OutputFile",
    "Priority",
    "QueueingStatus",
    "RetryRequest",
    "StagingStatus",
    "Step",
    "StepPhase",
    "StepStatus",
    "TerminationReport",
    "Toleration",
    "fill_output_pattern",
    "format_indexes",
    "format_memory",
    "index_at",
    "output_placeholders",
    "parse_indexes",
    "parse_memory",
    "step_cycle",
]


class DesiredState(StrEnum):
    """What the production operator asks for (LDM-230 3.1.3)."""

    RUNNING = "Running"
    PAUSED = "Paused"
    TERMINATED = "Terminated"
    CLOSED_OUT = "ClosedOut"


class CampaignPhase(StrEnum):
    """Where the campaign is."""

    PENDING = "Pending"
    STAGING = "Staging"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATED = "Terminated"
    CLOSED_OUT = "ClosedOut"


class StepPhase(StrEnum):
    """Where one step is."""

    WAITING = "Waiting"
    """Its dependencies have not all succeeded yet."""
    STAGING = "Staging"
    """Its inputs are being brought to the site's disk."""
    AWAITING_APPROVAL = "AwaitingApproval"
    """A breakpoint: it starts once ``controls.approve`` names it."""
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    """Every invocation succeeded, or failed and was force-accepted."""
    FAILED = "Failed"
    """Every invocation finished and some failed for good."""
    CANCELLED = "Cancelled"
    """The campaign was terminated before the step finished."""


class Priority(IntEnum):
    """Campaign priority levels and the PriorityClass values they map to."""

    LOW = 1000
    NORMAL = 10000
    HIGH = 100000
    URGENT = 1000000


PriorityName = Literal["low", "normal", "high", "urgent"]

_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?([kMGTPE]i?)?$"
"""A Kubernetes memory quantity: ``4Gi``, ``500M``, ``1.5Gi`` or a byte count."""
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kMGTPE]i?)?$")


def parse_memory(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity (``4Gi`` -> 4294967296).

    Raises
    ------
    ValueError
        If ``quantity`` is not a memory quantity Steward accepts (`MEMORY_PATTERN`).
    """
    match = _MEMORY.match(quantity.strip())
    if match is None:
        msg = f"invalid memory quantity {quantity!r}: use a number and a unit such as 4Gi or 500M"
        raise ValueError(msg)
    number, unit = match.groups()
    return int(Decimal(number) * _MEMORY_UNITS[unit or ""])


def format_memory(value: int) -> str:
    """Render bytes as the shortest exact binary quantity (``8Gi``), or plain bytes."""
    for unit in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        size = _MEMORY_UNITS[unit]
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


Memory = Annotated[str, Field(pattern=MEMORY_PATTERN)]
"""A Kubernetes memory quantity."""


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]*$")
_BRACKETS = re.compile(r"\[!?[^\[\]!]+\]")
QUERY_PLACEHOLDERS: frozenset[str] = frozenset({"scope", "name"})
"""Placeholders of an expected output of a campaign whose coverage is a Rucio query: the
scope and name of the invocation's input DID."""


def output_placeholders(pattern: str) -> list[str]:
    """The data-id keys an expected-output pattern names (``calexp-{visit}-*.fits``).

    A pattern is a file name with shell wildcards (``*``, ``?``, ``[...]``, ``[!...]``, as
    Python's `fnmatch` reads them) and ``{key}`` placeholders that take the invocation's data
    id values.

    Raises
    ------
    ValueError
        If the pattern has a character a reported file name cannot have, an unbalanced
        brace or bracket, or is empty.
    """
    if not pattern:
        msg = "an expected output pattern is empty; give a file name or a wildcard pattern"
        raise ValueError(msg)
    keys = _PLACEHOLDER.findall(pattern)
    rest = _PLACEHOLDER.sub("x", pattern)
    if "{" in rest or "}" in rest:
        msg = (
            f"expected output pattern {pattern!r} has a stray brace: placeholders are "
            "{key} with key a data-id key (letters, digits, underscores)"
        )
        raise ValueError(msg)
    if not _PATTERN_CHARS.match(rest):
        bad = sorted({c for c in rest if not _PATTERN_CHARS.match(c)})
        msg = (
            f"expected output pattern {pattern!r} has characters no output name can have "
            f"({''.join(bad)!r}); names are letters, digits, '_', '.', '-', with wildcards "
            "* ? [...]"
        )
        raise ValueError(msg)
    outside = _BRACKETS.sub("x", rest)
    if "[" in outside or "]" in outside:
        msg = f"expected output pattern {pattern!r} has an unclosed or empty [...] wildcard"
        raise ValueError(msg)
    if "!" in outside:
        msg = f"expected output pattern {pattern!r} has '!' outside a [!...] wildcard"
        raise ValueError(msg)
    return keys


def fill_output_pattern(pattern: str, values: dict[str, str]) -> str:
    """The pattern with each ``{key}`` replaced by ``values[key]``, wildcards in values escaped.

    A data-id value is literal text: a ``*`` in it matches only ``*``.

    Raises
    ------
    KeyError
        If a placeholder has no value.
    """
    escaped = {key: re.sub(r"([*?\[])", r"[\1]", value) for key, value in values.items()}
    return _PLACEHOLDER.sub(lambda match: escaped[match.group(1)], pattern)


_NAMED_LIST: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}
"""The API server itself refuses two list items with the same name."""


class Resources(SpecModel):
    """Requests of one invocation's pod."""

    cpu: str = "1"
    """CPU request, Kubernetes quantity."""

    memory: Memory = "4Gi"
    """Memory request and limit, Kubernetes quantity; an out-of-memory rerun raises it (see
    ``memoryMultiplier``)."""


class Step(SpecModel):
    """One pipeline of the campaign, run as an Indexed Job over the coverage set."""

    name: Name
    """Step name, unique within the campaign."""

    pipeline: str = Field(min_length=1)
    """Pipeline definition, e.g. ``$DRP_PIPE_DIR/pipelines/LSSTCam/DRP.yaml#step1``."""

    depends_on: list[Name] = Field(default_factory=list, max_length=16)
    """Steps that must succeed before this one starts."""

    parallelism: Int = Field(default=10, ge=1, le=10000)
    """Invocations running at once."""

    retries: Int = Field(default=2, ge=0, le=20)
    """Retries per invocation for real failures (kills and preemptions are not counted)."""

    resources: Resources = Field(default_factory=Resources)
    """Pod requests."""

    args: list[str] = Field(default_factory=list)
    """Extra arguments to the pipeline command."""

    never_retry_exit_codes: list[Annotated[Int, Field(ge=1, le=255)]] = Field(
        default_factory=list, max_length=200
    )
    """Exit codes that mean retrying cannot help (like ctrl_bps ``retryUnlessExit``): the
    invocation fails at its first such exit, without spending ``retries``."""

    memory_multiplier: Number = Field(default=2.0, ge=1.0, le=16.0)
    """Factor applied to an invocation's memory each time it is killed for using too much
    (container reason OOMKilled); the rerun runs in a rescue Job."""

    memory_limit: Memory | None = None
    """Most memory an out-of-memory rerun may ask for; an invocation killed for memory at this
    size fails for good. Four times ``resources.memory`` when absent."""

    breakpoint: Bool = False
    """Wait before starting this step until ``controls.approve`` names it (an operator looks
    at the previous steps' results first)."""

    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to every pod of the step (monitoring, sidecar settings). Steward's
    own annotations win over these."""

    expected_outputs: list[Annotated[str, Field(max_length=250)]] = Field(
        default_factory=list, max_length=64
    )
    """File names each invocation must report writing (LDM-592 LDF1 a, c, d), as patterns
    with wildcards ``*``, ``?``, ``[...]`` and ``{key}`` placeholders filled from the
    invocation's data id (``calexp-{visit}-{detector}.fits``; with a coverage ``query``,
    ``{scope}`` and ``{name}`` of the input DID). Each pattern must match at least one
    reported file, or the invocation fails (``MissingOutputs``; ``controls.retry`` or
    ``accept`` then decide). A reported file matching no pattern is unexpected: junk, kept
    only with ``outputs.keepJunk``. Empty: every reported file is expected and none is
    required."""

    @model_validator(mode="after")
    def _limits(self) -> Step:
        if self.memory_limit is not None and parse_memory(self.memory_limit) < parse_memory(
            self.resources.memory
        ):
            msg = (
                f"memoryLimit {self.memory_limit} is below resources.memory "
                f"{self.resources.memory}; raise it or remove it"
            )
            raise LocatedValueError(msg, "memoryLimit")
        return self

    @model_validator(mode="after")
    def _patterns(self) -> Step:
        for index, pattern in enumerate(self.expected_outputs):
            try:
                output_placeholders(pattern)
            except ValueError as error:
                raise LocatedValueError(str(error), "expectedOutputs", index) from None
            if pattern in self.expected_outputs[:index]:
                msg = f"expected output pattern {pattern!r} is listed twice"
                raise LocatedValueError(msg, "expectedOutputs", index)
        return self

    def memory_bytes(self) -> int:
        """The step's memory request in bytes."""
        return parse_memory(self.resources.memory)

    def memory_limit_bytes(self) -> int:
        """Most memory an out-of-memory rerun may ask for, in bytes."""
        if self.memory_limit is not None:
            return parse_memory(self.memory_limit)
        return 4 * self.memory_bytes()


class Coverage(SpecModel):
    """The invocations: an explicit list of data ids, or a Rucio metadata query."""

    data_ids: list[dict[str, str | Int]] | None = Field(default=None, max_length=10000)
    """Explicit data ids, e.g. ``{visit: 2026110100012, detector: 94}``: one invocation each.
    At most 10,000: a resource must stay far under the API server's request limit (3 MiB)
    and etcd's object limit (1.5 MiB); larger coverage sets come from a ``query``."""

    query: DataSelector | None = None
    """A Rucio metadata selection: one invocation per matching DID."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Coverage:
        if (self.data_ids is None) == (self.query is None):
            msg = "give exactly one of 'dataIds' (explicit list) or 'query' (metadata selection)"
            raise ValueError(msg)
        if self.data_ids is not None and not self.data_ids:
            msg = "'dataIds' is empty: a campaign needs at least one invocation"
            raise LocatedValueError(msg, "dataIds")
        return self


class Inputs(SpecModel):
    """Input handling: pre-stage to the compute site before a step starts."""

    prestage: Bool = True
    """Create Rucio rules to bring inputs to the site first (recalling from tape if needed)."""

    destination: RSEExpression | None = None
    """Where inputs are staged; the compute site's disk when absent."""

    lifetime: Duration = Field(default=timedelta(days=30), json_schema_extra={"default": "30d"})
    """Lifetime of the staging rules."""

    release_after: Duration = Field(default=timedelta(days=7), json_schema_extra={"default": "7d"})
    """How long after the campaign Succeeded its staging rules stay when nobody closes it
    out: then they are released (a day's lifetime, through the deletion gate) as at
    closeout, so a finished campaign does not pin the site's disk until ``lifetime`` runs
    out. The time is for looking at the results and adding steps that read the same
    inputs."""


class Outputs(SpecModel):
    """Output handling."""

    scope: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    """Rucio scope of the outputs."""

    archive: RSEExpression | None = None
    """Replicate outputs there (e.g. ``site=NCSA&type=TAPE``); nowhere when absent."""

    keep_junk: Bool = False
    """Keep unexpected outputs (LDM-592 LDF1 c: a reported file that matches none of its
    step's ``expectedOutputs``): registered in Rucio under ``scope`` in the step's junk
    dataset (``<campaign>.<step>.<uid>.junk``), never archived. Without it they are only
    recorded in the ledger and counted in status (``steps[].junk``)."""

    rse: str | None = Field(default=None, pattern=r"^[A-Z0-9][A-Z0-9_\-]*$")
    """RSE where invocations write their outputs (registered there in Rucio); the site's first
    DISK RSE when absent."""


class Toleration(SpecModel):
    """A Kubernetes toleration, for nodes of a dedicated batch pool."""

    key: str | None = None
    """Taint key; all taints when absent with ``operator: Exists``."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""

    value: str | None = None
    """Taint value (``Equal``)."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect; all effects when absent."""


class RetryRequest(SpecModel):
    """A request to run some invocations of a step again, acted on once per ``id``."""

    step: Name
    """The step."""

    id: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    """Any token unique among the requests (a date, a ticket); a new id is a new request."""

    reason: str = ""
    """Why, for the audit trail."""


class AcceptRequest(SpecModel):
    """Accept a step although some of its invocations failed (recorded with their ids)."""

    step: Name
    """The step."""

    max_failures: Int = Field(ge=0)
    """Accept only while at most this many invocations failed; more failures block the step."""

    reason: str = Field(min_length=1)
    """Why the failures are acceptable, for the audit trail."""


class Controls(SpecModel):
    """The production operator's interventions; each is audited and shown in status."""

    retry: list[RetryRequest] = Field(default_factory=list, max_length=256)
    """Run the failed invocations of a step again, with a fresh retry budget."""

    rescue: list[RetryRequest] = Field(default_factory=list, max_length=256)
    """Run everything of a step that has not succeeded, force-accepted failures included, with
    a fresh retry budget (the invocations of a lost Job are rerun without asking)."""

    accept: list[AcceptRequest] = Field(default_factory=list, max_length=64)
    """Force-accept a step with failures, so the steps after it start."""

    approve: list[Name] = Field(default_factory=list, max_length=32)
    """Breakpoint steps allowed to start."""


class CampaignSpec(SpecModel):
    """Desired state of a Campaign."""

    description: str = ""
    """What the campaign is for."""

    site: Name
    """The Site that runs it (``metadata.name``)."""

    priority: PriorityName = "normal"
    """low, normal, high or urgent; maps to a PriorityClass (and, on Kueue, to the
    WorkloadPriorityClass of the same name)."""

    queue: Name | None = None
    """Queue of the Site the Jobs are admitted through, when the Site declares batch capacity
    (``spec.batch.queues[].name``); the Site's default queue when absent."""

    sites: list[Name] = Field(
        default_factory=list, max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Sites to run at, in order of preference, dispatched by MultiKueue: each Job goes to the
    first with room and spills to the next. ``site`` is then where the campaign is applied
    and dispatched from. Empty: the Jobs run at ``site``."""

    image: str = Field(min_length=1)
    """Container image of the pipelines."""

    config: dict[str, str] = Field(default_factory=dict)
    """Configuration passed to every invocation as environment (e.g. the Butler repository)."""

    steps: list[Step] = Field(min_length=1, max_length=32, json_schema_extra=_NAMED_LIST)
    """Pipelines, with their ordering constraints."""

    coverage: Coverage
    """The invocations."""

    inputs: Inputs = Field(default_factory=Inputs)
    """Input handling."""

    outputs: Outputs
    """Output handling."""

    desired_state: DesiredState = DesiredState.RUNNING
    """Running, Paused, Terminated or ClosedOut."""

    controls: Controls = Field(default_factory=Controls)
    """Retry, rescue, force-accept and breakpoint approvals."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the invocations' pods require (the site's batch pool)."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Taints of the batch pool's nodes the pods tolerate."""

    shard_size: Int = Field(default=5000, ge=1, le=10000)
    """Most invocations per Kubernetes Job. Kept at or under 10,000 so that no Job is near the
    Job API's limits with per-index retries (parallelism and failed indexes at most 10,000)
    and the shard's ConfigMap of data ids stays under 1 MiB."""

    @model_validator(mode="after")
    def _controls(self) -> CampaignSpec:
        names = {s.name for s in self.steps}
        for field, requests in (("retry", self.controls.retry), ("rescue", self.controls.rescue)):
            seen: set[str] = set()
            for index, request in enumerate(requests):
                if request.step not in names:
                    msg = f"{field} names step {request.step!r}{_unknown(request.step, names)}"
                    raise LocatedValueError(msg, "controls", field, index, "step")
                if request.id in seen:
                    msg = f"{field} id {request.id!r} is used twice; each request needs its own"
                    raise LocatedValueError(msg, "controls", field, index, "id")
                seen.add(request.id)
        for index, accept in enumerate(self.controls.accept):
            if accept.step not in names:
                msg = f"accept names step {accept.step!r}{_unknown(accept.step, names)}"
                raise LocatedValueError(msg, "controls", "accept", index, "step")
        for index, step in enumerate(self.controls.approve):
            if step not in names:
                msg = f"approve names step {step!r}{_unknown(step, names)}"
                raise LocatedValueError(msg, "controls", "approve", index)
        return self

    @model_validator(mode="after")
    def _sites(self) -> CampaignSpec:
        for index, name in enumerate(self.sites):
            if name in self.sites[:index]:
                msg = f"site {name!r} is listed twice; each site is tried once, in order"
                raise LocatedValueError(msg, "sites", index)
        if len(self.sites) == 1:
            msg = "list two or more sites to dispatch across, or none to run at 'site'"
            raise LocatedValueError(msg, "sites")
        return self

    @model_validator(mode="after")
    def _steps(self) -> CampaignSpec:
        names = [s.name for s in self.steps]
        for index, name in enumerate(names):
            if name in names[:index]:
                msg = f"step name {name!r} is used twice; step names must be unique"
                raise LocatedValueError(msg, "steps", index, "name")
        for index, step in enumerate(self.steps):
            for dep_index, dep in enumerate(step.depends_on):
                if dep not in names:
                    close = difflib.get_close_matches(dep, names, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    msg = f"step {step.name!r} depends on step {dep!r}, which does not exist{hint}"
                    raise LocatedValueError(msg, "steps", index, "dependsOn", dep_index)
        cycle = step_cycle(self.steps)
        if cycle:
            msg = f"steps form a cycle: {' -> '.join(cycle)}"
            closing = self.steps[names.index(cycle[-2])]
            raise LocatedValueError(
                msg,
                "steps",
                names.index(closing.name),
                "dependsOn",
                closing.depends_on.index(cycle[-1]),
            )
        return self

    @model_validator(mode="after")
    def _placeholders(self) -> CampaignSpec:
        """Every placeholder of an expected output names a key every data id has."""
        data_ids = self.coverage.data_ids
        for step_index, step in enumerate(self.steps):
            for index, pattern in enumerate(step.expected_outputs):
                for key in output_placeholders(pattern):
                    if data_ids is None and key not in QUERY_PLACEHOLDERS:
                        msg = (
                            f"expected output {pattern!r} names {{{key}}}; with a coverage "
                            "query the placeholders are {scope} and {name} of the input DID"
                        )
                        raise LocatedValueError(msg, "steps", step_index, "expectedOutputs", index)
                    lacking = next((n for n, d in enumerate(data_ids or []) if key not in d), None)
                    if lacking is not None:
                        msg = (
                            f"expected output {pattern!r} names {{{key}}}, but data id "
                            f"{lacking} (coverage.dataIds[{lacking}]) has no key {key!r}"
                        )
                        raise LocatedValueError(msg, "steps", step_index, "expectedOutputs", index)
        return self

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d,"
            " self.steps.exists(t, t.name == d)))",
            "message": "a step depends on a step that does not exist",
        },
    ]


def _unknown(name: str, names: Iterable[str]) -> str:
    """The end of an error about a step that does not exist, with a suggestion."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return ", which does not exist" + (f" (did you mean {close[0]!r}?)" if close else "")


def format_indexes(indexes: Iterable[int]) -> str:
    """Write sorted, distinct indexes as Kubernetes writes ``completedIndexes``: ``0-9,12``.

    Steward uses the same format for the invocations of a Job (in order of completion
    index) and in the ledger, so one parser reads all of them.
    """
    parts: list[str] = []
    ordered = sorted(set(indexes))
    start = previous = None
    for index in [*ordered, None]:
        if index is not None and previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return ",".join(parts)


def parse_indexes(text: str | None) -> list[int]:
    """Read ``0-9,12`` (Kubernetes' ``completedIndexes`` format) into a sorted list.

    Raises
    ------
    ValueError
        If ``text`` is not in that format.
    """
    result: list[int] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            msg = f"invalid index range {part!r}: the end is before the start"
            raise ValueError(msg)
        result.extend(range(low, high + 1))
    return result


def index_at(text: str, position: int) -> int:
    """The ``position``-th index of ``0-9,12`` (`format_indexes`) without expanding it all.

    Raises
    ------
    IndexError
        If there are not that many indexes.
    ValueError
        If ``text`` is not in that format.
    """
    remaining = position
    for part in text.split(","):
        if not part.strip():
            continue
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if remaining <= high - low:
            return low + remaining
        remaining -= high - low + 1
    msg = f"no index at position {position} of {text!r}"
    raise IndexError(msg)


def step_cycle(steps: list[Step]) -> list[str]:
    """Return one dependency cycle among ``steps`` (first name repeated at the end), or []."""
    graph = {s.name: s.depends_on for s in steps}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for dep in graph.get(name, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[name] = 2
        return []

    for name in graph:
        if name not in state and (found := visit(name)):
            return found
    return []


class OutputFile(SpecModel):
    """One file an invocation wrote, as it reports it in its termination message."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=250)
    """File name; registered in Rucio as ``<outputs.scope>:<name>``."""

    bytes: Int = Field(ge=0)
    """Size in bytes."""

    adler32: str = Field(pattern=r"^[0-9a-f]{8}$")
    """Adler-32 checksum, eight lower-case hex digits (Rucio's checksum)."""


class TerminationReport(SpecModel):
    """What an invocation hands back through its termination message (at most 4 KiB).

    The pipeline container writes this JSON to ``/dev/termination-log``; Kubernetes keeps it
    in the pod's status, where Steward reads it once the pod has ended. Example:
    ``{"files": [{"name": "calexp-903342-10.fits", "bytes": 33554432, "adler32": "0a1b2c3d"}]}``
    """

    files: list[OutputFile] = Field(default_factory=list)
    """The outputs written."""


class StepStatus(CamelModel):
    """Counts of one step's invocations."""

    name: str
    """Step name."""

    phase: StepPhase = StepPhase.WAITING
    """Where the step is."""

    pending: Int = 0
    """Not started, or waiting for a (re)run."""

    running: Int = 0
    """Running now (pods active in the step's Jobs)."""

    succeeded: Int = 0
    """Succeeded."""

    failed: Int = 0
    """Failed for good (retries spent, a never-retry exit code, or out of memory at the
    memory limit)."""

    accepted: Int = 0
    """Failed, and force-accepted by ``controls.accept``."""

    evicted: Int = 0
    """Attempts ended by the platform (preemption, eviction, drain, pause); never counted
    against the retries."""

    junk: Int = 0
    """Unexpected outputs its invocations reported (files matching none of the step's
    ``expectedOutputs``); in Rucio only with ``outputs.keepJunk``."""

    jobs: Int = 0
    """Kubernetes Jobs of the step (shards and rescues)."""

    sites: dict[str, Int] = Field(default_factory=dict)
    """A multi-site campaign's succeeded invocations by the site whose cluster ran them
    (from the ledger)."""

    start_time: Timestamp | None = None
    """When the step's first Job was created."""

    end_time: Timestamp | None = None
    """When the step finished."""


class ControlStatus(CamelModel):
    """One operator control Steward has acted on."""

    type: Literal["retry", "rescue", "accept", "approve"]
    """Which control."""

    step: str
    """The step."""

    id: str = ""
    """The request's id (retry, rescue)."""

    invocations: Int = 0
    """Invocations it concerned (rerun, or accepted)."""

    time: Timestamp
    """When Steward acted on it."""


class StagingStatus(CamelModel):
    """Pre-staging of the inputs: Rucio rules bringing them to the site's disk."""

    rules: Int = 0
    """Rules Steward owns for the inputs."""

    ok: Int = 0
    """Rules in state OK (inputs on the site's disk)."""

    replicating: Int = 0
    """Rules still copying (or recalling from tape)."""

    stuck: Int = 0
    """Rules Rucio reports STUCK."""

    released: Bool = False
    """Whether the rules were given their release lifetime (the campaign closed)."""

    release_at: Timestamp | None = None
    """When a Succeeded campaign nobody closes out releases the rules
    (``inputs.releaseAfter`` after it succeeded)."""


class QueueingStatus(CamelModel):
    """The campaign's Jobs as Kueue sees them."""

    queue: str
    """The LocalQueue the Jobs are submitted to."""

    admitted: Int = 0
    """Jobs Kueue admitted (running, or finished)."""

    pending: Int = 0
    """Jobs waiting for quota (or deactivated by a pause)."""

    reason: str = ""
    """Kueue's message for a waiting Job: which quota is short, or why it was evicted."""

    evictions: Int = 0
    """Times Kueue evicted the Jobs (preempted by higher priority, reclaimed by the cohort,
    paused, a worker site lost); their pods' attempts count as Evicted."""

    sites: dict[str, Int] = Field(default_factory=dict)
    """Jobs admitted per site, for a multi-site campaign: where MultiKueue sent each."""


class CampaignStatus(CamelModel):
    """Observed state of a Campaign."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    phase: CampaignPhase = CampaignPhase.PENDING
    """Where the campaign is."""

    invocations: Int = 0
    """Invocations per step (the coverage set's size)."""

    progress: str = ""
    """Succeeded (or accepted) over all invocations of all steps, for ``kubectl get``."""

    steps: list[StepStatus] = Field(default_factory=list)
    """Per-step counts."""

    failures: dict[str, Int] = Field(default_factory=dict)
    """Ended attempts by class: Evicted, OOMKilled, ``ExitCode N``, Infrastructure."""

    staging: StagingStatus | None = None
    """Pre-staging of the inputs (``inputs.prestage``)."""

    queueing: QueueingStatus | None = None
    """The Jobs in Kueue, when the Site declares batch capacity."""

    outputs: Int = 0
    """Output files registered in Rucio."""

    junk: Int = 0
    """Unexpected outputs reported, over all steps (``steps[].junk``)."""

    controls: list[ControlStatus] = Field(default_factory=list)
    """Operator controls acted on, oldest first."""

    review: str = ""
    """``Pending`` once a terminated campaign's outputs wait for the failure review
    (LDM-230 3.1.3.4.2): retention keeps them until the review is done."""

    start_time: Timestamp | None = None
    """When the first step started."""

    end_time: Timestamp | None = None
    """When the campaign ended."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded."""


class Campaign(Resource):
    """Pipelines over a coverage set at one site."""

    kind: Literal["Campaign"] = "Campaign"
    """Always ``Campaign``."""

    spec: CampaignSpec
    """Desired state."""

    status: CampaignStatus | None = None
    """Observed state."""
