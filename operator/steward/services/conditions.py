"""Kubernetes-convention status conditions: type, status, reason, message, times, generation.

``lastTransitionTime`` changes only when the status flips, as the API conventions require, so
``kubectl describe`` shows how long a resource has been Degraded rather than when it was last
looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from steward.models.common import ConditionStatus

__all__ = [
    "DEGRADED",
    "PROGRESSING",
    "READY",
    "SYNC_TIME",
    "condition",
    "find",
    "set_condition",
    "status_changes",
]

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SYNC_TIME = "lastSyncTime"
"""The status field saying when the operator last read the outside state."""


def condition(
    type_: str,
    *,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Build one condition as the API stores it."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    return {
        "type": type_,
        "status": status.value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now.isoformat().replace("+00:00", "Z"),
        "observedGeneration": generation,
    }


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """Return the condition of ``type_``, if present."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def set_condition(
    conditions: list[dict[str, Any]] | None, new: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return ``conditions`` with ``new`` in place, keeping the transition time if unchanged."""
    result = [c for c in conditions or [] if c.get("type") != new["type"]]
    old = find(conditions, new["type"])
    if old is not None and old.get("status") == new["status"]:
        new = {**new, "lastTransitionTime": old.get("lastTransitionTime")}
    result.append(new)
    order = {READY: 0, PROGRESSING: 1, DEGRADED: 2}
    return sorted(result, key=lambda c: (order.get(c["type"], 9), c["type"]))


def status_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], *, heartbeat: timedelta
) -> dict[str, Any]:
    """The fields of ``new`` that differ from ``old``: what a status patch needs to carry.

    A timer reads Rucio every interval and usually finds nothing new; patching the status
    anyway costs one API write and one watch event per resource per interval (a thousand
    resources, a write every few milliseconds). So when only `SYNC_TIME` moved, it is written
    only once the stored one is ``heartbeat`` old; ``lastSyncTime`` then tells how stale the
    status may be, to within the heartbeat.
    """
    changed = {key: value for key, value in new.items() if old.get(key) != value}
    if set(changed) == {SYNC_TIME} and SYNC_TIME in old:
        try:
            stored = datetime.fromisoformat(str(old[SYNC_TIME]))
            fresh = datetime.fromisoformat(str(new[SYNC_TIME]))
        except ValueError:
            return changed
        if fresh - stored < heartbeat:
            return {}
    return changed
