"""ReplicationRule: which data goes where, delegated to Rucio rules.

Use cases 17, 22-24 (raw data from the Base to NCSA tape and IN2P3, the Chilean DAC copy,
disaster recovery), 19 (copy at a cadence that does not disturb prompt processing) and the sweep
rule of 004_6c2842cea6419e15.txt (publish a dataset only after it is backed up).
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from functools import cache
from typing import Annotated, ClassVar, Literal, get_args
from zoneinfo import available_timezones

from pydantic import ConfigDict, Field, field_validator, model_validator

from .common import (
    DID,
    Bool,
    CamelModel,
    Condition,
    DataSelector,
    Duration,
    Int,
    LocatedValueError,
    Number,
    Resource,
    RSEExpression,
    SpecModel,
    Timestamp,
)
from .text import shorten

__all__ = [
    "MAX_CATCH_UP_FACTOR",
    "CatchUp",
    "CatchUpStatus",
    "ChangeKept",
    "DeletionPolicy",
    "ManagementPolicy",
    "ReplicationRule",
    "ReplicationRuleSpec",
    "ReplicationRuleStatus",
    "RuleState",
    "TransferWindow",
    "time_zones",
]

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_ONE_WORD = r"^[\s(]*[A-Za-z0-9_.-]+[\s)]*$"
"""A destination that is a single term (an RSE's name, or one bare attribute)."""


class DeletionPolicy(StrEnum):
    """What deleting the resource does to its Rucio rules."""

    ORPHAN = "Orphan"
    DELETE = "Delete"


class ManagementPolicy(StrEnum):
    """Whether Steward acts on Rucio or only reports (Crossplane's Observe)."""

    MANAGE = "Manage"
    OBSERVE = "Observe"


class RuleState(StrEnum):
    """Rucio rule states, named as Rucio names them."""

    OK = "OK"
    REPLICATING = "REPLICATING"
    STUCK = "STUCK"
    SUSPENDED = "SUSPENDED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    INJECT = "INJECT"


class Grouping(StrEnum):
    """Rucio rule grouping: how files of a dataset are kept together."""

    ALL = "ALL"
    DATASET = "DATASET"
    NONE = "NONE"


Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
"""A day of the week."""

WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)


@cache
def time_zones() -> frozenset[str]:
    """Names of the IANA zone database (from the ``tzdata`` package or the system's).

    Membership is the whole check: asking ``ZoneInfo`` for an arbitrary name opens files, and
    a name that is a directory of the database (``America``) fails with ``IsADirectoryError``
    rather than the error pydantic reports.
    """
    return frozenset(available_timezones())


class TransferWindow(SpecModel):
    """Daily window in which transfers may start (use case 19: do not disturb L1 processing)."""

    start: str
    """Local start time, ``HH:MM``."""

    end: str
    """Local end time, ``HH:MM``; earlier than ``start`` means the window spans midnight."""

    timezone: str = "UTC"
    """IANA time zone of ``start`` and ``end``, e.g. ``America/Santiago``."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    """Days (of the window's start) on which it opens."""

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            msg = (
                f"{value} is a number: YAML reads an unquoted 22:00 as base-60; "
                'quote the time, e.g. start: "22:00"'
            )
            raise ValueError(msg)  # noqa: TRY004 - pydantic reports ValueError, not TypeError
        if not isinstance(value, str) or not _HHMM.match(value):
            msg = f"{value!r} is not a time of day; use HH:MM (24-hour), e.g. 22:00"
            raise ValueError(msg)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in time_zones():
            region = any(zone.startswith(f"{value}/") for zone in time_zones())
            what = "a region of the zone database, not a zone" if region else "unknown"
            msg = f"time zone {shorten(value)} is {what}; use an IANA name such as America/Santiago"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TransferWindow:
        if self.start == self.end:
            msg = "the window opens and closes at the same time; it would never be open"
            raise ValueError(msg)
        return self

    def length_hours(self) -> float:
        """Hours the window stays open each day it opens."""
        start, end = (time.fromisoformat(t) for t in (self.start, self.end))
        minutes = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
        return (minutes % (24 * 60)) / 60


MAX_CATCH_UP_FACTOR = 2.0
"""Catch-up archiving runs at up to twice the nominal rate (LDM-230 2.2.2.2)."""


class CatchUp(SpecModel):
    """Catch-up archiving (LDM-230 2.2.2.2 and 2.2.3.1, use case 17): drain a backlog faster.

    When at least ``backlog`` of the resource's rules have not been OK for longer than
    ``after`` (an outage held transfers back), Steward raises the rules' Rucio priority to
    ``priority`` and the activity's transfer limit into the destination from ``transfers``
    to ``transfers * factor``, until no rule is in the backlog any more; then both go back to
    nominal.
    """

    after: Duration
    """A rule not OK for longer than this (since Rucio created it) is in the backlog."""

    backlog: Int = Field(default=1, ge=1)
    """How many backlogged rules start catch-up; it lasts until the backlog is empty."""

    priority: Annotated[Int, Field(ge=1, le=5)] | None = None
    """Rucio priority of the rules while catching up; default: one above ``priority``
    (at most 5). Rucio passes it on to the rules' queued transfers."""

    transfers: Annotated[Int, Field(ge=1)] | None = None
    """The nominal share: Rucio's transfer limit of ``activity`` into ``destination``
    (concurrent transfers), which Steward sets and owns. Without it only the priority rises."""

    factor: Number = Field(default=MAX_CATCH_UP_FACTOR, gt=1, le=MAX_CATCH_UP_FACTOR)
    """The transfer limit while catching up is ``transfers * factor`` (at most twice the
    nominal rate)."""


class ReplicationRuleSpec(SpecModel):
    """Desired placement of a selection of data."""

    selector: DataSelector
    """Which data: explicit DIDs, or a continuous metadata filter."""

    destination: RSEExpression
    """RSE expression of where copies go, e.g. ``site=IN2P3&type=TAPE``."""

    copies: Int = Field(default=1, ge=1, le=10)
    """Number of replicas Rucio keeps on distinct RSEs matching ``destination``."""

    lifetime: Duration | None = None
    """How long the rule lives (``30d``); forever when absent. Sent to Rucio in seconds."""

    priority: Int = Field(default=3, ge=1, le=5)
    """Transfer priority (Rucio/FTS 1-5, 5 highest)."""

    activity: str = "Data Consolidation"
    """Rucio activity, used for transfer shares and limits."""

    source_preference: RSEExpression | None = None
    """RSE expression of preferred transfer sources (Rucio ``source_replica_expression``)."""

    grouping: Grouping = Grouping.DATASET
    """Rucio grouping."""

    locked: Bool = False
    """Lock the rule against deletion in Rucio."""

    transfer_window: TransferWindow | None = None
    """When transfers may start; anytime when absent."""

    not_before: Timestamp | None = None
    """Embargo: no transfer starts before this time (RFC 3339 with a time zone)."""

    publish: Bool = False
    """Publish each dataset (close, mark published, attach to ``publishTo``) only after its
    custodial copy is OK (004_6c2842cea6419e15.txt)."""

    publish_to: DID | None = None
    """The published container, ``scope:name``; required with ``publish``."""

    deletion_policy: DeletionPolicy | None = None
    """What deleting this resource does to its rules: Orphan keeps them, Delete removes them.
    Default: Orphan when the destination is custodial, Delete otherwise."""

    management_policy: ManagementPolicy = ManagementPolicy.MANAGE
    """Manage acts on Rucio; Observe only reports."""

    catch_up: CatchUp | None = None
    """Catch-up archiving: raise priority and transfer share while a backlog drains."""

    @model_validator(mode="after")
    def _consistent(self) -> ReplicationRuleSpec:
        if self.publish and self.publish_to is None:
            msg = "'publish: true' needs 'publishTo', the published container (scope:name)"
            raise LocatedValueError(msg, "publish")
        boost = self.catch_up.priority if self.catch_up is not None else None
        if boost is not None and boost < self.priority:
            msg = (
                f"catch-up priority {boost} is below the nominal priority {self.priority}; "
                "catching up raises the priority"
            )
            raise LocatedValueError(msg, "catchUp")
        if (
            self.catch_up is not None
            and self.catch_up.transfers is not None
            and re.match(_ONE_WORD, self.destination)
        ):
            msg = (
                f"catchUp.transfers needs a destination with an attribute (such as "
                f"site=NCSA&type=TAPE), not the single term {shorten(self.destination)}: "
                "transfer limits on an RSE's own name belong to its Site (spec.transferLimits), "
                "which removes those it does not declare"
            )
            raise LocatedValueError(msg, "catchUp")
        return self

    def catch_up_priority(self) -> int:
        """The priority of the rules while catching up."""
        declared = self.catch_up.priority if self.catch_up is not None else None
        return declared if declared is not None else min(self.priority + 1, 5)

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!has(self.publish) || !self.publish || has(self.publishTo)",
            "message": "'publish: true' needs 'publishTo'",
        },
        {
            "rule": (
                "!has(self.catchUp) || !has(self.catchUp.priority) || "
                "self.catchUp.priority >= (has(self.priority) ? self.priority : 3)"
            ),
            "message": "catchUp.priority must not be below priority",
        },
        {
            "rule": (
                "!has(self.catchUp) || !has(self.catchUp.transfers) || "
                f"!self.destination.matches(r'{_ONE_WORD}')"
            ),
            "message": "catchUp.transfers needs a destination with an attribute",
        },
    ]


class RuleCounts(CamelModel):
    """Rules owned by the resource, by Rucio state (keys spelled as Rucio spells states)."""

    model_config = ConfigDict(alias_generator=None)

    OK: Int = 0
    """Rules in state OK."""

    REPLICATING: Int = 0
    """Rules still replicating."""

    STUCK: Int = 0
    """Rules with stuck locks."""

    SUSPENDED: Int = 0
    """Suspended rules."""

    WAITING_APPROVAL: Int = 0
    """Rules waiting for approval."""

    INJECT: Int = 0
    """Rules queued for asynchronous injection."""


class SubscriptionStatus(CamelModel):
    """The Rucio subscription of a resource whose metadata selection Rucio can follow."""

    name: str
    """Subscription name (a hash of the cluster and resource, like the owner tag)."""

    id: str | None = None
    """Rucio's subscription id."""

    state: str
    """Rucio's state: ACTIVE or UPDATED places new data, INACTIVE does not."""


class UnownedRule(CamelModel):
    """A rule that already places a selected DID but was not made by this resource."""

    rule: str
    """Rucio rule id."""

    owner: str
    """The rule's comment (another resource's owner tag, or anything else)."""

    kind: Literal["shared", "foreign"]
    """shared: another Steward resource's; foreign: made by someone else (or a tag edited)."""


class Deselection(CamelModel):
    """DIDs of owned rules missing from the last metadata selection, not yet released."""

    dids: Int
    """How many."""

    digest: str
    """Hash of their names: the same set missing on the next pass is released."""


class ChangeKept(CamelModel):
    """Changes of copies or destination the deletion gate keeps back (the rules stay unchanged)."""

    rules: Int
    """How many rules keep their old copies or destination."""

    digest: str
    """Hash of the kept changes (rule, target, what keeps it): an Event and an audit record
    are written when it changes, not every pass."""


class CatchUpStatus(CamelModel):
    """Catch-up archiving as it stands (``spec.catchUp``)."""

    active: Bool = False
    """Whether the resource is catching up (priority and share raised)."""

    backlog: Int = 0
    """Owned rules not OK for longer than ``spec.catchUp.after``."""

    since: Timestamp | None = None
    """When the current catch-up started."""

    priority: Int | None = None
    """The Rucio priority asked of the backlog's rules now."""

    transfers: Int | None = None
    """The transfer limit of the activity into the destination now (None: not managed)."""

    boosted: Int = 0
    """Rules whose priority was raised (the rest could not be, or are OK)."""


class SelectionStatus(CamelModel):
    """How a metadata selection is kept up to date: incrementally, with full resyncs."""

    mode: Literal["Full", "Incremental"]
    """How the last pass selected: the whole scope listed, or only DIDs new since the mark."""

    high_water_mark: Timestamp | None = None
    """Every matching DID created (or whose custom metadata changed) before this time, less
    an overlap, has been seen and placed; the next pass lists only what came after. Kept
    back while any selected DID waits (transfer window closed, Observe)."""

    full_sync_time: Timestamp | None = None
    """When the whole scope was last listed: deselections and changes of DID-column
    metadata are found then (``STEWARD_FULL_RESYNC_INTERVAL``)."""

    generation: Int | None = None
    """The spec generation the mark belongs to; a changed spec lists everything again."""

    new_data: Literal["Subscription", "Steward"] = "Steward"
    """What places new matching data: a Rucio subscription (DID-column selections without
    window, embargo or exclusion), or Steward's own incremental selection."""


class ReplicationRuleStatus(CamelModel):
    """Observed state of a ReplicationRule."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    owner_tag: str | None = None
    """The comment on every Rucio rule this resource owns, a hash of the cluster's identity and
    this resource's UID (``rucio rule list --account steward`` shows it as the comment)."""

    rule_ids: list[str] = Field(default_factory=list)
    """A sample of the Rucio rule ids this resource owns: the first ``STATUS_SAMPLE`` (100) in
    sorted order, not all of them (a resource may own tens of thousands of rules, more than
    one status write may carry). ``ruleCount`` is how many there are; ``rucio rule list
    --account steward`` filtered by ``ownerTag`` lists them all."""

    rule_count: Int = 0
    """How many Rucio rules this resource owns and has in charge of its selected DIDs."""

    subscription: SubscriptionStatus | None = None
    """Rucio subscription placing new matching data (DID-column metadata selections only);
    deactivated whenever the spec stops allowing one, and on deletion."""

    selected: Int = 0
    """DIDs currently selected. Between full listings of a metadata selection: the DIDs it
    has rules for (or remembers unowned or expired) plus those new since the mark."""

    expired: Int = 0
    """Selected DIDs whose copy lived its ``lifetime`` (counted from its first placement)
    and is not placed again."""

    deferred: Int = 0
    """Selected DIDs whose rule the last pass left for the next passes: one pass creates at
    most the operator's ``STEWARD_MAX_RULES_PER_PASS`` rules (conditions say ``Behind``)."""

    foreign: Int = 0
    """Selected DIDs whose rule was made by someone else: reported, never changed."""

    shared: Int = 0
    """Selected DIDs whose rule belongs to another Steward resource."""

    unowned_rules: dict[str, UnownedRule] = Field(default_factory=dict)
    """The rules counted in ``foreign`` and ``shared``, by DID: the first ``STATUS_SAMPLE``
    (100) DIDs in sorted order when there are more."""

    deletion_policy: DeletionPolicy | None = None
    """The deletion policy in force: declared, or the default decided once (Orphan while
    Rucio cannot say whether the destination is custodial)."""

    deletion_policy_reason: str = ""
    """Why that policy."""

    deletion_policy_decided_for: str | None = None
    """The destination the default was decided for; decided again only when it changes."""

    management_policy: ManagementPolicy | None = None
    """The management policy last acted on (deleting a resource whose spec became invalid
    follows it)."""

    pending_release: Int = 0
    """Rules of deselected DIDs held back until ``steward.lsst.io/approve-release`` names
    this number."""

    release_protected: Int = 0
    """Rules of deselected DIDs the deletion gate kept this pass (a legal hold, a lock, a pin,
    a campaign input, the last custodial copy, or a freeze); the Degraded condition says why."""

    change_kept: ChangeKept | None = None
    """Rules whose change of copies or destination would remove replicas from an RSE and that
    the deletion gate keeps as they are (a legal hold, a lock, a pin, a campaign input, the
    last custodial copy, or a freeze at an RSE the change leaves); the Degraded condition says
    why. The change is made once the protection ends."""

    deselection: Deselection | None = None
    """DIDs missing from one metadata listing, released if still missing at the next."""

    selection: SelectionStatus | None = None
    """The incremental selection of a metadata filter (absent for explicit DIDs)."""

    counts: RuleCounts = Field(default_factory=RuleCounts)
    """Owned rules by Rucio state."""

    bytes: Int = 0
    """Bytes under the owned rules."""

    published: Int = 0
    """Datasets published (with ``publish: true``)."""

    catch_up: CatchUpStatus | None = None
    """Catch-up archiving (with ``spec.catchUp``)."""

    last_sync_time: Timestamp | None = None
    """When Rucio state was last read and written here: at every change, and when nothing
    changes at least every ten refresh intervals, or every N / heartbeat_writes seconds
    with N resources when that is longer (one status write per resource per interval would
    load the API server for nothing)."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded."""


class ReplicationRule(Resource):
    """Which data goes where."""

    kind: Literal["ReplicationRule"] = "ReplicationRule"
    """Always ``ReplicationRule``."""

    spec: ReplicationRuleSpec
    """Desired state."""

    status: ReplicationRuleStatus | None = None
    """Observed state."""
