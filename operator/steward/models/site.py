"""Site: one facility (NCSA, Base, IN2P3, the Summit) and its storage endpoints as Rucio RSEs.

LDM-230 5.1 describes the Data Backbone spanning NCSA, the Base and IN2P3 with disk caches and
tape archives; use cases 22-24 ask for disaster-recovery copies and for copies at the Chilean
DAC and IN2P3. A Site declares the RSEs that make those placements possible, and Steward
registers them in Rucio. Sites are data: a new facility is a new file.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from .common import (
    Bool,
    ByteSize,
    CamelModel,
    Condition,
    Int,
    LocatedValueError,
    Name,
    Resource,
    SpecModel,
    Timestamp,
    describe_value,
    strict_integer,
    strict_number,
)
from .rse_expression import AttributeValue

__all__ = [
    "RSE",
    "DeletionFreeze",
    "Downtime",
    "Protocol",
    "RSEStatus",
    "RSEType",
    "Site",
    "SiteRole",
    "SiteSpec",
    "SiteStatus",
]

RSE_NAME_PATTERN = r"^[A-Z0-9][A-Z0-9_\-]*$"
"""Rucio RSE names: upper case, digits, ``_`` and ``-``."""


def _attribute(value: object) -> object:
    """Accept a string, a boolean, an int64 or a finite number, as Rucio stores attributes."""
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return strict_integer(value)
    if isinstance(value, float):
        return strict_number(value)
    msg = f"expected a string, number or boolean, got {describe_value(value)}"
    raise ValueError(msg)


Attribute = Annotated[AttributeValue, BeforeValidator(_attribute)]
"""An RSE attribute value: a string, a boolean, an int64 or a finite number."""


class RSEType(StrEnum):
    """Storage class of an RSE. CACHE is a volatile DISK RSE in Rucio (no replica guarantees)."""

    DISK = "DISK"
    TAPE = "TAPE"
    CACHE = "CACHE"


class SiteRole(StrEnum):
    """What a facility is for (LDM-230 5.1, 5.3; use cases 22-25)."""

    ARCHIVE = "archive"
    BATCH = "batch"
    DAC = "dac"
    CACHE = "cache"
    DISASTER_RECOVERY = "disaster-recovery"
    PROMPT = "prompt"


class Protocol(SpecModel):
    """One access protocol of an RSE (Rucio ``add_protocol``)."""

    scheme: str = Field(pattern=r"^[a-z][a-z0-9+]*$")
    """URL scheme: root, davs, https, file, mock."""

    hostname: str
    """Storage endpoint host."""

    port: Int = Field(ge=0, le=65535)
    """Port (0 for local schemes)."""

    prefix: str = Field(pattern=r"^/")
    """Path prefix under which Rucio places files."""

    impl: str = "rucio.rse.protocols.gfal.Default"
    """Rucio protocol implementation class."""

    read: Int = Field(default=1, ge=0)
    """Priority for reads over WAN (0 disables, 1 is preferred)."""

    write: Int = Field(default=1, ge=0)
    """Priority for writes over WAN (0 disables)."""

    delete: Int = Field(default=1, ge=0)
    """Priority for deletions over WAN (0 disables)."""

    third_party_copy: Int = Field(default=1, ge=0)
    """Priority for third-party copy (0 disables)."""


class RSE(SpecModel):
    """A Rucio Storage Element of the site."""

    name: str = Field(pattern=RSE_NAME_PATTERN, max_length=255)
    """RSE name as registered in Rucio, e.g. ``NCSA_TAPE``."""

    type: RSEType
    """DISK, TAPE, or CACHE (a volatile disk RSE, e.g. the Base OODS cache)."""

    attributes: dict[str, Attribute] = Field(default_factory=dict)
    """RSE attributes used in expressions (``tier``, ``custodial``, ...). ``site`` and ``type``
    are added from the site's ``facility`` and this RSE's ``type`` unless given here."""

    protocols: list[Protocol] = Field(min_length=1)
    """Access protocols."""

    deterministic: Bool = True
    """Whether file paths follow Rucio's deterministic layout."""

    staging_area: Bool = False
    """A staging area (rules on it need a lifetime)."""

    quota: ByteSize | None = None
    """Rucio account limit for Steward's account on this RSE; unlimited when absent."""

    limits: dict[str, Int] = Field(default_factory=dict)
    """Rucio RSE limits, e.g. ``MinFreeSpace`` in bytes."""

    availability_read: Bool = True
    """Declared read availability outside downtimes."""

    availability_write: Bool = True
    """Declared write availability outside downtimes."""

    availability_delete: Bool = True
    """Declared delete availability outside downtimes."""

    def effective_attributes(self, facility: str) -> dict[str, AttributeValue]:
        """Attributes as registered in Rucio: declared ones plus ``site`` and ``type``."""
        derived: dict[str, AttributeValue] = {"site": facility, "type": self.type.value}
        return derived | self.attributes

    @property
    def rucio_type(self) -> Literal["DISK", "TAPE"]:
        """``rse_type`` in Rucio, which knows only DISK and TAPE."""
        return "TAPE" if self.type is RSEType.TAPE else "DISK"

    @property
    def volatile(self) -> bool:
        """Whether Rucio may lose replicas here without notice (caches)."""
        return self.type is RSEType.CACHE


class Distance(SpecModel):
    """Network distance from this site's RSEs to another site's (Rucio ``add_distance``)."""

    site: Name
    """The other Site (``metadata.name``)."""

    distance: Int = Field(ge=0, le=100)
    """Rucio distance; lower is closer and preferred as a transfer source."""


class TransferLimit(SpecModel):
    """A cap on concurrent transfers into the site for one activity."""

    activity: str = "all_activities"
    """Rucio activity, or ``all_activities``."""

    max_transfers: Int = Field(ge=1)
    """Maximum active transfers."""


Operation = Literal["read", "write", "delete"]
"""An RSE availability flag."""

OPERATIONS: tuple[Operation, ...] = get_args(Operation)


class Downtime(SpecModel):
    """A scheduled downtime: during [start, end) the listed operations are off."""

    start: Timestamp
    """Start (RFC 3339, with a time zone)."""

    end: Timestamp
    """End (RFC 3339, with a time zone); availability is restored after it."""

    operations: list[Operation] = Field(default_factory=lambda: list(OPERATIONS), min_length=1)
    """Which availability flags go off."""

    rses: list[str] = Field(default_factory=list)
    """Affected RSE names; all of the site's RSEs when empty."""

    reason: str = ""
    """Why (shown in status and events)."""

    @model_validator(mode="after")
    def _end_after_start(self) -> Downtime:
        if self.end <= self.start:
            msg = f"downtime ends ({self.end.isoformat()}) before it starts"
            raise LocatedValueError(msg, "end")
        return self

    def active(self, now: datetime) -> bool:
        """Whether the downtime is in force at ``now``."""
        return self.start <= now < self.end


class DeletionFreeze(SpecModel):
    """A stop to all deletion at the site, during a restore or an incident.

    Velero's read-only backup location is the model: nothing is removed while it is set.
    """

    reason: str = Field(min_length=1)
    """Why (shown in the status of every plan the freeze stops)."""

    requested_by: str = ""
    """Who asked for it."""


class SiteSpec(SpecModel):
    """Desired state of a Site."""

    facility: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    """Facility code, the value of every RSE's ``site`` attribute (e.g. ``NCSA``, ``IN2P3``)."""

    description: str = ""
    """What the site is."""

    roles: list[SiteRole] = Field(default_factory=list)
    """What the site is for."""

    rses: list[RSE] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Storage endpoints."""

    distances: list[Distance] = Field(default_factory=list)
    """Distances to other sites."""

    transfer_limits: list[TransferLimit] = Field(default_factory=list)
    """Concurrent transfer caps."""

    downtimes: list[Downtime] = Field(default_factory=list)
    """Scheduled downtimes."""

    deletion_freeze: DeletionFreeze | None = None
    """While set, no path of Steward removes data from this site's RSEs: retention, OODS
    eviction, a ReplicationRule's Delete policy and campaign termination all stop (their
    plans are still computed and shown)."""

    @model_validator(mode="after")
    def _unique_and_known(self) -> SiteSpec:
        names = [r.name for r in self.rses]
        for index, name in enumerate(names):
            if name in names[:index]:
                msg = f"RSE {name!r} is declared twice; RSE names must be unique"
                raise LocatedValueError(msg, "rses", index, "name")
        for index, downtime in enumerate(self.downtimes):
            for rse_index, rse in enumerate(downtime.rses):
                if rse not in names:
                    msg = f"downtime names RSE {rse!r}, which this site does not declare"
                    raise LocatedValueError(msg, "downtimes", index, "rses", rse_index)
        return self


class RSEStatus(CamelModel):
    """Observed state of one RSE in Rucio."""

    name: str
    """RSE name."""

    registered: Bool = False
    """Whether Rucio has the RSE."""

    availability_read: Bool | None = None
    """Read availability in Rucio now."""

    availability_write: Bool | None = None
    """Write availability in Rucio now."""

    availability_delete: Bool | None = None
    """Delete availability in Rucio now."""

    in_downtime: Bool = False
    """Whether a scheduled downtime is in force."""


class SiteStatus(CamelModel):
    """Observed state of a Site."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    rses: list[RSEStatus] = Field(default_factory=list)
    """Per-RSE state in Rucio."""

    registered: Int = 0
    """How many RSEs are registered."""

    available: Int = 0
    """How many RSEs are fully available (read, write, delete)."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded."""


class Site(Resource):
    """A facility and its Rucio storage elements."""

    kind: Literal["Site"] = "Site"
    """Always ``Site``."""

    spec: SiteSpec
    """Desired state."""

    status: SiteStatus | None = None
    """Observed state."""
