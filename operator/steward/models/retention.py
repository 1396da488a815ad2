"""RetentionPolicy: how long data lives, with protections that are never overridden silently.

LDM-230 5.1 (managed lifetime of data in the Data Backbone), LDM-592 SCIVAL1 (scratch outputs
expire unless still in use; deleted only by their owner or with an approval), COMM3 (value-added
commissioning repositories), DRP29/DRP30 (removing one repository never deletes files another
still references) and LDM-230 3.1.3.4.2 (failed-campaign outputs are kept until reviewed).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .common import (
    DID,
    Bool,
    ByteSize,
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
    "Approval",
    "DataClass",
    "RetentionAction",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionPolicySpec",
    "RetentionPolicyStatus",
]


class RetentionAction(StrEnum):
    """What a policy does to data past its lifetime."""

    EXPIRE = "Expire"
    """Set rule lifetimes so Rucio's judge-cleaner and reaper remove the replicas."""

    DELETE = "Delete"
    """Remove the rules now."""


class DataClass(StrEnum):
    """Kind of data, which decides the extra protection that applies."""

    STANDARD = "Standard"
    """Production data; the general protections apply."""

    SCRATCH = "Scratch"
    """Scratch outputs (SCIVAL1): deleted only by their owner or with an approval."""

    VALUE_ADDED = "ValueAdded"
    """Value-added commissioning repositories (COMM3)."""

    FAILED_CAMPAIGN_OUTPUTS = "FailedCampaignOutputs"
    """Outputs of a failed campaign: deleted only after the review is done (LDM-230
    3.1.3.4.2)."""


class Approval(SpecModel):
    """A recorded approval for deleting data the policy could not delete on its own."""

    approved_by: str = Field(min_length=1)
    """Who approved (a person, not a robot account)."""

    reason: str = Field(min_length=1)
    """Why."""

    approved_at: Timestamp
    """When."""


class RetentionPolicySpec(SpecModel):
    """Desired lifetime of a selection of data."""

    selector: DataSelector
    """Which data."""

    rses: RSEExpression | None = None
    """Only replicas on RSEs matching this expression; everywhere when absent."""

    lifetime: Duration | None = None
    """Data lives this long after it is selected (rule lifetime). Exclusive with ``maxAge``."""

    max_age: Duration | None = None
    """Data older than this (by creation time) is past retention. Exclusive with
    ``lifetime``."""

    action: RetentionAction = RetentionAction.EXPIRE
    """Expire (set lifetimes, Rucio cleans up) or Delete (remove rules now)."""

    data_class: DataClass = DataClass.STANDARD
    """Kind of data, deciding extra protections."""

    owner: str | None = None
    """Owner of scratch data (``Scratch``): the only one who may delete without approval."""

    approval: Approval | None = None
    """Approval to delete protected data (scratch not owned by the requester)."""

    campaign: Name | None = None
    """The failed Campaign whose outputs these are (``FailedCampaignOutputs``)."""

    review_done: Bool = False
    """Whether the failure review is done (``FailedCampaignOutputs``): nothing is deleted
    before."""

    holds: list[DID] = Field(default_factory=list)
    """DIDs under a hold: never expired nor deleted while listed here."""

    dry_run: Bool = False
    """Only compute and show the plan; never act."""

    max_delete_bytes: ByteSize | None = None
    """Refuse to act when one run would make more than this deletable (a safety brake)."""

    @model_validator(mode="after")
    def _consistent(self) -> RetentionPolicySpec:
        if (self.lifetime is None) == (self.max_age is None):
            msg = "give exactly one of 'lifetime' or 'maxAge'"
            raise ValueError(msg)
        if self.data_class is DataClass.SCRATCH and self.owner is None:
            msg = "'dataClass: Scratch' needs 'owner' (SCIVAL1: only the owner deletes scratch)"
            raise LocatedValueError(msg, "dataClass")
        if self.data_class is DataClass.FAILED_CAMPAIGN_OUTPUTS and self.campaign is None:
            msg = "'dataClass: FailedCampaignOutputs' needs 'campaign'"
            raise LocatedValueError(msg, "dataClass")
        if self.campaign is not None and self.data_class is not DataClass.FAILED_CAMPAIGN_OUTPUTS:
            msg = "'campaign' applies to 'dataClass: FailedCampaignOutputs' only"
            raise LocatedValueError(msg, "campaign")
        return self

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.lifetime) != has(self.maxAge)",
            "message": "give exactly one of 'lifetime' or 'maxAge'",
        },
        {
            "rule": "!has(self.dataClass) || self.dataClass != 'Scratch' || has(self.owner)",
            "message": "'dataClass: Scratch' needs 'owner'",
        },
        {
            "rule": "!has(self.dataClass) || self.dataClass != 'FailedCampaignOutputs'"
            " || has(self.campaign)",
            "message": "'dataClass: FailedCampaignOutputs' needs 'campaign'",
        },
    ]


class RetentionPlan(CamelModel):
    """What the last run would do (or did): shown before anything is deleted."""

    computed_at: Timestamp | None = None
    """When the plan was computed."""

    candidates: Int = 0
    """DIDs past retention."""

    would_expire: Int = 0
    """DIDs whose rules would expire or be deleted."""

    bytes: Int = 0
    """Bytes that would become deletable."""

    protected: dict[str, Int] = Field(default_factory=dict)
    """DIDs spared, by protection (LastCustodialReplica, CampaignInput, Hold, ...)."""


class RetentionPolicyStatus(CamelModel):
    """Observed state of a RetentionPolicy."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    plan: RetentionPlan = Field(default_factory=RetentionPlan)
    """The last computed plan."""

    last_run_time: Timestamp | None = None
    """When the policy last acted (never in ``dryRun``)."""

    mode: Literal["DryRun", "Acting", "Blocked"] | None = None
    """Whether the last run acted."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded."""


class RetentionPolicy(Resource):
    """How long data lives."""

    kind: Literal["RetentionPolicy"] = "RetentionPolicy"
    """Always ``RetentionPolicy``."""

    spec: RetentionPolicySpec
    """Desired state."""

    status: RetentionPolicyStatus | None = None
    """Observed state."""
