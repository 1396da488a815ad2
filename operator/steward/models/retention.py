"""RetentionPolicy: how long data lives, with protections that are never overridden silently.

LDM-230 5.1 (managed lifetime of data in the Data Backbone), LDM-592 SCIVAL1 (scratch outputs
expire unless still in use; deleted only by their owner or with an approval), COMM3 (value-added
commissioning repositories), DRP29/DRP30 (removing one repository never deletes files another
still references) and LDM-230 3.1.3.4.2 (failed-campaign outputs are kept until reviewed).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

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
    strict_number,
)

__all__ = [
    "PLAN_HASH_PATTERN",
    "Approval",
    "Bypass",
    "DataClass",
    "LockMode",
    "RetentionAction",
    "RetentionLock",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionPolicySpec",
    "RetentionPolicyStatus",
]

PLAN_HASH_PATTERN = r"^[0-9a-f]{16}$"
"""A deletion plan's hash as status shows it and an approval names it."""


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


class Bypass(StrEnum):
    """A protection an approval lets one policy's plans pass (S3's governance bypass)."""

    GOVERNANCE_LOCK = "GovernanceLock"
    """Remove data under a governance lock before the lock ends."""

    OWNER = "Owner"
    """Remove another developer's scratch data (SCIVAL1: "with the developer's
    permission")."""


class Approval(SpecModel):
    """A recorded approval for deleting data the policy could not delete on its own.

    Who approved and why are required, so every bypass and every unblocked plan names a
    person in the audit trail (DRP30: forced deletion by an authorised actor). An approval
    that names a plan hash unblocks that plan only: a plan that grew since has another hash
    and stays Blocked (the empty-application lesson of Argo CD and Flux).
    """

    approved_by: str = Field(min_length=1)
    """Who approved (a person, not a robot account)."""

    reason: str = Field(min_length=1)
    """Why."""

    approved_at: Timestamp
    """When."""

    plan_hash: str | None = Field(default=None, pattern=PLAN_HASH_PATTERN)
    """The hash of the Blocked plan this approves (``status.plan.hash``); it unblocks that
    plan and no other."""

    bypass: list[Bypass] = Field(default_factory=list, max_length=2)
    """Protections this policy's plans may pass on this approval: ``GovernanceLock``,
    ``Owner``. Legal holds, compliance locks, the last custodial replica, campaign inputs and
    unreviewed failed-campaign outputs are never bypassed."""


class LockMode(StrEnum):
    """How strong a retention lock is (S3 Object Lock's two modes)."""

    COMPLIANCE = "Compliance"
    """Nobody can shorten or remove it before ``until``: not an approval, not an edit (the API
    server refuses the edit, and the operator keeps the longest ``until`` it has seen)."""

    GOVERNANCE = "Governance"
    """Protects until ``until``; a policy with an approval bypassing ``GovernanceLock`` may
    remove the data earlier."""


class RetentionLock(SpecModel):
    """Data that must be kept until a date, facility-wide, whatever any policy says."""

    name: Name
    """Name of the lock, unique within the policy."""

    mode: LockMode
    """Compliance or Governance."""

    until: Timestamp
    """When the lock ends (RFC 3339, with a time zone)."""

    dids: list[DID] = Field(min_length=1, max_length=1000)
    """The locked DIDs (the DIDs rules are on, typically datasets)."""

    reason: str = ""
    """Why (shown in status and in the audit trail)."""


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
    """Approval naming who and why: unblocks the plan whose hash it names, and lets this
    policy's plans pass the protections it lists in ``bypass``."""

    campaign: Name | None = None
    """The failed Campaign whose outputs these are (``FailedCampaignOutputs``)."""

    review_done: Bool = False
    """Whether the failure review is done (``FailedCampaignOutputs``): nothing is deleted
    before."""

    holds: list[DID] = Field(default_factory=list)
    """DIDs under a legal hold: never expired nor deleted, by any path of Steward (retention,
    OODS eviction, a ReplicationRule's Delete policy, campaign termination), while listed
    here. A hold has no period: only removing it releases the data."""

    locks: list[RetentionLock] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Compliance and governance locks: data kept until a date by every path of Steward."""

    dry_run: Bool = False
    """Only compute and show the plan; never act."""

    max_delete_bytes: ByteSize | None = None
    """Block (mode Blocked) a run that would make more than this deletable, until an approval
    names the plan's hash (a safety brake)."""

    max_delete_fraction: (
        Annotated[float, Field(gt=0, le=1), BeforeValidator(strict_number)] | None
    ) = None
    """Block a run that would make more than this fraction of the bytes the policy selects
    deletable, until an approval names the plan's hash: a selector that suddenly matches
    everything, or a metadata outage, must not empty the archive."""

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
        names = [lock.name for lock in self.locks]
        for index, name in enumerate(names):
            if name in names[:index]:
                msg = f"lock name {name!r} is used twice; lock names must be unique"
                raise LocatedValueError(msg, "locks", index, "name")
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
        {
            "rule": "!has(oldSelf.locks) || oldSelf.locks.all(o, o.mode != 'Compliance'"
            " || (has(self.locks) && self.locks.exists(n, n.name == o.name"
            " && n.mode == 'Compliance' && n.until >= o.until)))",
            "message": "a Compliance lock cannot be removed, shortened or weakened",
        },
    ]


class RetentionPlan(CamelModel):
    """What the last run would do (or did): shown before anything is deleted."""

    computed_at: Timestamp | None = None
    """When the plan was computed."""

    hash: str = ""
    """Stable hash of the plan's content (which rules go, how, and their bytes): an approval
    names it to unblock exactly this plan."""

    candidates: Int = 0
    """Rules past retention, before the protections."""

    would_expire: Int = 0
    """DIDs whose rules would expire or be deleted."""

    rules: Int = 0
    """Rules that would expire or be deleted."""

    bytes: Int = 0
    """Bytes that would become deletable."""

    scope_bytes: Int = 0
    """Bytes of every rule the policy selects (what ``maxDeleteFraction`` compares with)."""

    bytes_by_rse: dict[str, Int] = Field(default_factory=dict)
    """Bytes that would become deletable, per RSE."""

    bytes_by_site: dict[str, Int] = Field(default_factory=dict)
    """Bytes that would become deletable, per site (the RSE's ``site`` attribute)."""

    sample: list[str] = Field(default_factory=list)
    """Some of the DIDs that would go (the first in sorted order)."""

    protected: dict[str, Int] = Field(default_factory=dict)
    """Rules spared, by protection (LegalHold, ComplianceLock, LastCustodialReplica, ...)."""

    protected_bytes: dict[str, Int] = Field(default_factory=dict)
    """Bytes spared, by protection."""

    protected_total: Int = 0
    """Rules spared by any protection."""


class RetentionPolicyStatus(CamelModel):
    """Observed state of a RetentionPolicy."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    plan: RetentionPlan = Field(default_factory=RetentionPlan)
    """The last computed plan."""

    last_run_time: Timestamp | None = None
    """When the policy last acted (never in ``dryRun``)."""

    removed: Int = 0
    """Rules the last acting run expired or deleted."""

    mode: Literal["DryRun", "Acting", "Blocked", "Frozen"] | None = None
    """Whether the last run acted: DryRun (never acts), Acting, Blocked (a limit refused the
    plan until an approval names its hash) or Frozen (a deletion freeze is in force)."""

    compliance_locks: list[RetentionLock] = Field(default_factory=list)
    """Every Compliance lock the operator has seen on this policy, at the longest ``until``
    and with every DID it ever named: a lock someone shortened or removed behind the API
    server's back stays in force as it was."""

    last_sync_time: Timestamp | None = None
    """When the operator last read Rucio for this policy."""

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
