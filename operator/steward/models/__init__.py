"""Pydantic models of the five kinds, and the facts about each kind the CRDs are built from.

This package imports nothing else from Steward: it is the bottom layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .campaign import Campaign
from .common import Resource
from .oods import OODSCache
from .replication import ReplicationRule
from .retention import RetentionPolicy
from .site import Site

__all__ = ["KINDS", "KindInfo", "PrinterColumn", "kind_info"]


@dataclass(frozen=True)
class PrinterColumn:
    """One ``kubectl get`` column."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


def _ready(priority: int = 0) -> PrinterColumn:
    return PrinterColumn(
        "Ready",
        '.status.conditions[?(@.type=="Ready")].status',
        description="Whether the resource has converged",
        priority=priority,
    )


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class KindInfo:
    """What a CRD needs beyond the schema."""

    model: type[Resource]
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        """The kind's name."""
        return self.model.__name__

    @property
    def singular(self) -> str:
        """Lower-case singular name."""
        return self.kind.lower()


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        Site,
        "sites",
        ("site",),
        "Cluster",
        (
            PrinterColumn("Facility", ".spec.facility"),
            PrinterColumn("RSEs", ".status.registered", "integer", "RSEs registered in Rucio"),
            PrinterColumn("Available", ".status.available", "integer", "RSEs fully available"),
            _ready(),
            _AGE,
        ),
    ),
    KindInfo(
        ReplicationRule,
        "replicationrules",
        ("rr",),
        "Namespaced",
        (
            PrinterColumn("Destination", ".spec.destination"),
            PrinterColumn("Copies", ".spec.copies", "integer"),
            PrinterColumn("OK", ".status.counts.OK", "integer", "Rucio rules in state OK"),
            PrinterColumn("Replicating", ".status.counts.REPLICATING", "integer"),
            PrinterColumn("Stuck", ".status.counts.STUCK", "integer"),
            _ready(),
            _AGE,
        ),
    ),
    KindInfo(
        RetentionPolicy,
        "retentionpolicies",
        ("rp",),
        "Namespaced",
        (
            PrinterColumn("Action", ".spec.action"),
            PrinterColumn("Mode", ".status.mode", description="DryRun, Acting, Blocked, Frozen"),
            PrinterColumn("Expiring", ".status.plan.wouldExpire", "integer"),
            PrinterColumn("Bytes", ".status.plan.bytes", "integer"),
            PrinterColumn("Protected", ".status.plan.protectedTotal", "integer", priority=1),
            PrinterColumn(
                "Selected", ".status.plan.scopeBytes", "integer", "Bytes the policy selects", 1
            ),
            PrinterColumn("Plan", ".status.plan.hash", description="Hash an approval names"),
            _ready(),
            _AGE,
        ),
    ),
    KindInfo(
        OODSCache,
        "oodscaches",
        ("oods",),
        "Namespaced",
        (
            PrinterColumn("RSE", ".spec.rse"),
            PrinterColumn("Window", ".spec.window"),
            PrinterColumn("Files", ".status.files", "integer"),
            PrinterColumn("Bytes", ".status.bytes", "integer"),
            PrinterColumn("Fill", ".status.fill", "number", "Bytes over capacity"),
            PrinterColumn("Pinned", ".status.pinned", "integer"),
            PrinterColumn("Evicted", ".status.evictedLastCycle", "integer", priority=1),
            PrinterColumn("Oldest", ".status.oldestItem", "date", priority=1),
            _ready(),
            _AGE,
        ),
    ),
    KindInfo(
        Campaign,
        "campaigns",
        ("camp",),
        "Namespaced",
        (
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Priority", ".spec.priority"),
            PrinterColumn("Progress", ".status.progress"),
            PrinterColumn("Site", ".spec.site"),
            _AGE,
        ),
    ),
)


def kind_info(kind: str) -> KindInfo:
    """Return the facts about ``kind``.

    Raises
    ------
    KeyError
        If ``kind`` is not a Steward kind.
    """
    for info in KINDS:
        if info.kind == kind:
            return info
    raise KeyError(kind)
