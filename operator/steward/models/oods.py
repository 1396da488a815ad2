"""OODSCache: the Observatory Operations Data Service cache at the Base.

LDM-230 2.6 and the tech note on Science Pipelines in observatory operations: a limited-lifetime
cache of recent raw data (a window such as "last week") plus data pinned by Observatory
Operations (current master calibrations), exported read-only in a predictable directory tree.
"""

from __future__ import annotations

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
    Number,
    Resource,
    SpecModel,
    Timestamp,
    strict_boolean,
)

__all__ = ["Export", "ExportPath", "OODSCache", "OODSCacheSpec", "OODSCacheStatus", "Pin"]


class Pin(SpecModel):
    """Data kept in the cache regardless of the window or the watermarks."""

    selector: DataSelector
    """What to pin, e.g. the current master calibrations."""

    reason: str = Field(min_length=1)
    """Why (shown in status)."""

    until: Timestamp | None = None
    """Unpinned after this time; pinned until removed when absent."""


class Export(SpecModel):
    """How the cache is exposed to the Observatory Operations cluster."""

    root: str = Field(pattern=r"^/")
    """Directory under which files appear."""

    layout: str = "{instrument}/{datatype}/{day_obs}/{name}"
    """Path template below ``root``: DID metadata keys of the file's dataset in braces, and
    ``name`` (the file's name). ``day_obs`` comes from the metadata when the dataset has it,
    else from its creation time (the observing day rolls over at 12:00 UTC)."""

    read_only: Annotated[Literal[True], BeforeValidator(strict_boolean)] = True
    """The export is always read-only; the cache is written by Steward only."""


class OODSCacheSpec(SpecModel):
    """Desired content of the OODS cache."""

    site: Name = "base"
    """The Site holding the cache."""

    rse: str = Field(pattern=r"^[A-Z0-9][A-Z0-9_\-]*$")
    """The cache RSE (type CACHE) at that site."""

    scope: str = "raw"
    """Rucio scope of the incoming data."""

    instruments: list[str] = Field(min_length=1)
    """Instruments whose data flows in, e.g. LSSTCam, LATISS (the ``instrument`` metadata
    key); ``"*"`` takes every instrument."""

    data_types: list[str] = Field(default_factory=lambda: ["raw"], min_length=1)
    """Data types that flow in."""

    window: Duration
    """How far back data is kept, e.g. ``7d`` ("last week's raw data")."""

    pins: list[Pin] = Field(default_factory=list)
    """Pinned data."""

    capacity: ByteSize
    """Space the cache may use."""

    high_watermark: Number = Field(default=0.9, gt=0, le=1)
    """Fraction of ``capacity`` at which eviction starts."""

    low_watermark: Number = Field(default=0.8, gt=0, lt=1)
    """Fraction of ``capacity`` eviction brings usage down to (oldest unpinned first)."""

    floor_watermark: Number = Field(default=0.97, gt=0, le=1)
    """Fraction of ``capacity`` at which the cache refuses new placements (the free-space
    floor, cachefilesd's ``bstop``) until eviction or the window brings it back below."""

    export: Export | None = None
    """Read-only export layout."""

    exclude: list[DID] = Field(default_factory=list)
    """DIDs never cached."""

    @model_validator(mode="after")
    def _watermarks(self) -> OODSCacheSpec:
        if self.low_watermark >= self.high_watermark:
            msg = (
                f"lowWatermark ({self.low_watermark}) must be below highWatermark "
                f"({self.high_watermark})"
            )
            raise LocatedValueError(msg, "lowWatermark")
        if self.floor_watermark <= self.high_watermark:
            msg = (
                f"floorWatermark ({self.floor_watermark}) must be above highWatermark "
                f"({self.high_watermark})"
            )
            raise LocatedValueError(msg, "floorWatermark")
        return self

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!has(self.lowWatermark) || !has(self.highWatermark)"
            " || self.lowWatermark < self.highWatermark",
            "message": "lowWatermark must be below highWatermark",
        },
        {
            "rule": "!has(self.floorWatermark) || (has(self.highWatermark)"
            " ? self.highWatermark < self.floorWatermark : 0.9 < self.floorWatermark)",
            "message": "floorWatermark must be above highWatermark",
        },
    ]


class ExportPath(CamelModel):
    """Where one file of the cache appears in the read-only export."""

    did: str
    """The file (``scope:name``)."""

    path: str
    """Its path in the export, or empty when its dataset lacks a key the layout needs."""

    missing: list[str] = Field(default_factory=list)
    """Metadata keys of the layout the file's dataset does not have."""


class OODSCacheStatus(CamelModel):
    """Observed content of the OODS cache."""

    observed_generation: Int | None = None
    """Generation last reconciled."""

    files: Int = 0
    """Files in the cache (held by this cache's rules, not expiring)."""

    bytes: Int = 0
    """Bytes in the cache (held by this cache's rules, not expiring)."""

    capacity: Int = 0
    """``spec.capacity`` in bytes."""

    fill: Number = 0.0
    """``bytes`` over ``capacity``."""

    oldest_item: Timestamp | None = None
    """Creation time of the oldest unpinned item."""

    pinned: Int = 0
    """Pinned DIDs in the cache."""

    evicting: Bool = False
    """Whether eviction is under way: it starts above ``highWatermark`` and goes on until
    ``lowWatermark`` (hysteresis)."""

    placements: Literal["Open", "Refused"] = "Open"
    """Refused while the fill is at or above ``floorWatermark``."""

    evicted_last_cycle: Int = 0
    """DIDs evicted (or expired out of the window) by the last cycle."""

    reclaimed_bytes: Int = 0
    """Bytes the last cycle made deletable."""

    protected: dict[str, Int] = Field(default_factory=dict)
    """Unpinned rules the deletion gate would not let go, by protection (LegalHold,
    CampaignInput, ...): eviction passes over them."""

    last_eviction_time: Timestamp | None = None
    """When the cache last evicted or expired data."""

    export_sample: list[ExportPath] = Field(default_factory=list)
    """Where some of the cached files appear in the export (``spec.export``)."""

    last_sync_time: Timestamp | None = None
    """When the operator last read Rucio for this cache."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded, PlacementsRefused, UsageSourceMissing."""


class OODSCache(Resource):
    """The Base cache of recent raw data and pinned calibrations."""

    kind: Literal["OODSCache"] = "OODSCache"
    """Always ``OODSCache``."""

    spec: OODSCacheSpec
    """Desired state."""

    status: OODSCacheStatus | None = None
    """Observed state."""
