"""Campaign: a set of pipelines run over a coverage set at one site (LDM-230 3.1).

LDM-230 3.1.3 describes campaigns as ordered pipelines over a coverage set with a priority, the
production operator's verbs (pause, resume, terminate, close out), input pre-staging and output
handling, and the need to tell kills apart from real failures. Use cases 1, 2, 8-11, 14 and 16
come from the operations use case list.
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from enum import IntEnum, StrEnum
from typing import ClassVar, Literal

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
    Resource,
    RSEExpression,
    SpecModel,
    Timestamp,
)

__all__ = [
    "Campaign",
    "CampaignPhase",
    "CampaignSpec",
    "CampaignStatus",
    "Coverage",
    "DesiredState",
    "Priority",
    "Step",
    "StepStatus",
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


class Priority(IntEnum):
    """Campaign priority levels and the PriorityClass values they map to."""

    LOW = 1000
    NORMAL = 10000
    HIGH = 100000
    URGENT = 1000000


PriorityName = Literal["low", "normal", "high", "urgent"]


_NAMED_LIST: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}
"""The API server itself refuses two list items with the same name."""


class Resources(SpecModel):
    """Requests of one invocation's pod."""

    cpu: str = "1"
    """CPU request, Kubernetes quantity."""

    memory: str = "4Gi"
    """Memory request and limit, Kubernetes quantity."""


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


class Coverage(SpecModel):
    """The invocations: an explicit list of data ids, or a Rucio metadata query."""

    data_ids: list[dict[str, str | Int]] | None = None
    """Explicit data ids, e.g. ``{visit: 2026110100012, detector: 94}``: one invocation each."""

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


class Outputs(SpecModel):
    """Output handling."""

    scope: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    """Rucio scope of the outputs."""

    archive: RSEExpression | None = None
    """Replicate outputs there (e.g. ``site=NCSA&type=TAPE``); nowhere when absent."""

    keep_junk: Bool = False
    """Keep unexpected outputs as a junk tarball."""


class CampaignSpec(SpecModel):
    """Desired state of a Campaign."""

    description: str = ""
    """What the campaign is for."""

    site: Name
    """The Site that runs it (``metadata.name``)."""

    priority: PriorityName = "normal"
    """low, normal, high or urgent; maps to a PriorityClass."""

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

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d,"
            " self.steps.exists(t, t.name == d)))",
            "message": "a step depends on a step that does not exist",
        },
    ]


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


class StepStatus(CamelModel):
    """Counts of one step's invocations."""

    name: str
    """Step name."""

    pending: Int = 0
    """Not started."""

    running: Int = 0
    """Running."""

    succeeded: Int = 0
    """Succeeded."""

    failed: Int = 0
    """Failed after their retries."""


class CampaignStatus(CamelModel):
    """Observed state of a Campaign."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    phase: CampaignPhase = CampaignPhase.PENDING
    """Where the campaign is."""

    invocations: Int = 0
    """Invocations per step (the coverage set's size)."""

    progress: str = ""
    """Succeeded over total invocations, for ``kubectl get``."""

    steps: list[StepStatus] = Field(default_factory=list)
    """Per-step counts."""

    failures: dict[str, Int] = Field(default_factory=dict)
    """Failures by class (e.g. Error, OOMKilled, DisruptionTarget)."""

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
