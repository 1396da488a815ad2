"""What a plan does to the protections: what it takes away, and the facts it leaves.

A legal hold, a lock or a pin lives in a resource's spec, so removing it from git (or pruning
the resource) silently lets every deletion path remove the data it protected. ``steward
plan`` must show that before ``apply`` (design.md guarantee 2: destructive changes show in a
plan before they happen), and judge every other deletion in the same plan as the plan leaves
the cluster, not as it is now. Both answers are pure: they read resource documents only.

- `protection_losses` says which DIDs one change stops protecting (a legal hold released, a
  governance lock removed or shortened, a pin removed or shortened); each loss makes the
  change destructive, so ``apply`` refuses it without ``--allow-destructive``.
- `planned_facts` is the `ClusterFacts` the whole plan would leave: the desired documents of
  the resources it creates or changes (with their live status: remembered Compliance locks,
  a campaign's phase), without those it deletes, and the live cluster for everything else.

Compliance locks are never lost, consistently with what the operator enforces: the API
server refuses an edit that shortens, weakens or removes one (so that change is refused at
plan time), the operator keeps every Compliance lock it has seen at its longest ``until``
(``status.complianceLocks``), and a policy holding one in force cannot be deleted (its
finalizer waits). A deleted policy therefore keeps its Compliance locks in the planned facts;
its holds and governance locks go, as they do once its deletion completes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from steward.models.campaign import Campaign
from steward.models.oods import OODSCache, Pin
from steward.models.retention import LockMode, RetentionPolicy
from steward.models.site import Site
from steward.services.protections import ClusterFacts, effective_locks

__all__ = [
    "SAMPLE",
    "PlannedChange",
    "ProtectionLoss",
    "planned_facts",
    "protection_losses",
]

M = TypeVar("M", bound=BaseModel)

SAMPLE: Final = 10
"""DIDs a loss names in its line; JSON lists every one."""

_LABELS: Final = {"LegalHold": "legal hold", "GovernanceLock": "governance lock", "Pin": "pin"}


class PlannedChange(NamedTuple):
    """One resource as a plan changes it."""

    kind: str
    desired: Mapping[str, Any] | None
    """The document apply sends; None when the plan deletes the resource."""
    live: Mapping[str, Any] | None
    """The object in the cluster now; None when the plan creates it."""


@dataclass(frozen=True)
class ProtectionLoss:
    """DIDs one change stops protecting in one way."""

    protection: str
    """The deletion gate's name for it: ``LegalHold``, ``GovernanceLock`` or ``Pin``."""
    change: str
    """``released`` (a hold), ``removed`` or ``shortened`` (a lock or a pin)."""
    by: str
    """The resource that held the protection (``Kind/namespace/name``)."""
    dids: tuple[str, ...] = ()
    """The DIDs, sorted (empty for a pin by metadata, which names none)."""
    note: str = ""
    """When the loss takes effect, or what a pin by metadata selected."""

    def line(self) -> str:
        """One line for people, naming at most `SAMPLE` DIDs."""
        label = _LABELS[self.protection]
        where = "on" if self.change in {"released", "shortened"} else "from"
        if self.dids:
            shown = ", ".join(self.dids[:SAMPLE])
            more = len(self.dids) - SAMPLE
            shown += f" ... ({more} more)" if more > 0 else ""
            text = f"{label} {self.change} {where} {len(self.dids)} DIDs: {shown}"
        else:
            text = f"{label} {self.change}"
        return text + (f" ({self.note})" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        """For ``--format json``: every DID."""
        return {
            "protection": self.protection,
            "change": self.change,
            "by": self.by,
            "count": len(self.dids),
            "dids": list(self.dids),
            "note": self.note,
        }


def _spec_only(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "status"}


def _name(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return metadata.get("name"), metadata.get("namespace")


def _planned_body(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None, *, keep_status: bool
) -> dict[str, Any]:
    """The desired document with the live object's metadata and (if kept) its status."""
    metadata = {**(desired.get("metadata") or {}), **((live or {}).get("metadata") or {})}
    body = {k: v for k, v in desired.items() if k != "status"}
    body["metadata"] = metadata
    if keep_status and (live or {}).get("status") is not None:
        body["status"] = (live or {})["status"]
    return body


def _model(model: type[M], body: Mapping[str, Any]) -> M | None:
    """The model of a document; None when the models refuse it (it protects nothing).

    A status the models refuse (written by another version of the operator) is dropped
    rather than the whole object: its spec still holds and locks.
    """
    for attempt in (body, _spec_only(body)):
        try:
            return model.model_validate(dict(attempt))
        except ValidationError:
            continue
    return None


def _lingering(policy: RetentionPolicy) -> RetentionPolicy | None:
    """What of a deleted policy still protects: its Compliance locks (the finalizer waits).

    None when it has none (remembered or declared): the policy goes, and all it protected.
    Locks that have ended are dropped by `protections_from`, which knows the time.
    """
    compliance = [lock for lock in effective_locks(policy) if lock.mode is LockMode.COMPLIANCE]
    if not compliance:
        return None
    spec = policy.spec.model_copy(update={"holds": [], "locks": compliance, "review_done": False})
    return policy.model_copy(update={"spec": spec})


_STATUS_KEPT: Final = {"RetentionPolicy": True, "OODSCache": False, "Site": False, "Campaign": True}
"""Whether a planned object keeps its live status: remembered Compliance locks and a
campaign's phase protect; a Site protects by its spec only (as `facts_from_bodies` reads it)."""

_MODELS: Final[dict[str, type[BaseModel]]] = {
    "RetentionPolicy": RetentionPolicy,
    "OODSCache": OODSCache,
    "Site": Site,
    "Campaign": Campaign,
}

_FIELDS: Final = {
    "RetentionPolicy": "policies",
    "OODSCache": "caches",
    "Site": "sites",
    "Campaign": "campaigns",
}


def planned_facts(facts: ClusterFacts, changes: Iterable[PlannedChange]) -> ClusterFacts:
    """The facts as the whole plan leaves the cluster: ``changes`` applied over ``facts``.

    Each changed RetentionPolicy, OODSCache, Site or Campaign is its desired document (with
    its live metadata and, for policies and campaigns, its live status); a deleted one is
    gone, except a RetentionPolicy's Compliance locks, which keep protecting (`_lingering`).
    Every other resource is as ``facts`` (the live cluster) has it, and so is the operator's
    freeze. Pass only the changes apply would make (not those the API server refuses).
    """
    lists: dict[str, list[Any]] = {
        kind: list(getattr(facts, field)) for kind, field in _FIELDS.items()
    }
    for change in changes:
        if change.kind not in _MODELS:
            continue
        metadata = (change.desired or change.live or {}).get("metadata") or {}
        key = _name(metadata)
        objects = lists[change.kind]
        objects[:] = [o for o in objects if (o.metadata.name, o.metadata.namespace) != key]
        if change.desired is not None:
            body = _planned_body(change.desired, change.live, keep_status=_STATUS_KEPT[change.kind])
            planned = _model(_MODELS[change.kind], body)
        elif change.kind == "RetentionPolicy" and change.live is not None:
            live = _model(RetentionPolicy, change.live)
            planned = _lingering(live) if live is not None else None
        else:
            planned = None
        if planned is not None:
            objects.append(planned)
    return replace(
        facts,
        policies=tuple(lists["RetentionPolicy"]),
        caches=tuple(lists["OODSCache"]),
        sites=tuple(lists["Site"]),
        campaigns=tuple(lists["Campaign"]),
    )


def _governance(policy: RetentionPolicy | None, now: datetime) -> dict[str, datetime]:
    """DID -> the latest ``until`` of the policy's governance locks in force at ``now``."""
    found: dict[str, datetime] = {}
    for lock in policy.spec.locks if policy is not None else ():
        if lock.mode is LockMode.GOVERNANCE and lock.until > now:
            for did in lock.dids:
                found[did] = max(found.get(did, lock.until), lock.until)
    return found


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _policy_losses(
    live: RetentionPolicy, desired: RetentionPolicy | None, now: datetime
) -> list[ProtectionLoss]:
    who = f"RetentionPolicy/{live.metadata.namespace}/{live.metadata.name}"
    note = ""
    if desired is None:
        waiting = sorted(
            f"{lock.name} until {_time(lock.until)}"
            for lock in effective_locks(live)
            if lock.mode is LockMode.COMPLIANCE and lock.until > now
        )
        if waiting:
            note = "once the deletion completes: it waits for Compliance locks " + ", ".join(
                waiting
            )
    losses = []
    held = set(desired.spec.holds) if desired is not None else set()
    released = tuple(sorted(set(live.spec.holds) - held))
    if released:
        losses.append(ProtectionLoss("LegalHold", "released", who, released, note))
    before, after = _governance(live, now), _governance(desired, now)
    removed = tuple(sorted(set(before) - set(after)))
    if removed:
        losses.append(ProtectionLoss("GovernanceLock", "removed", who, removed, note))
    shortened = tuple(sorted(did for did in before if did in after and after[did] < before[did]))
    if shortened:
        losses.append(ProtectionLoss("GovernanceLock", "shortened", who, shortened))
    return losses


def _in_force(pin: Pin, now: datetime) -> bool:
    return pin.until is None or pin.until > now


def _pinned(cache: OODSCache | None, now: datetime) -> dict[str, datetime | None]:
    """DID -> until when a pin by DIDs keeps it (None: until removed)."""
    found: dict[str, datetime | None] = {}
    for pin in cache.spec.pins if cache is not None else ():
        if not _in_force(pin, now):
            continue
        for did in pin.selector.dids or ():
            old = found.get(did, pin.until)
            found[did] = None if old is None or pin.until is None else max(old, pin.until)
    return found


def _later(first: datetime | None, second: datetime | None) -> bool:
    """Whether ``first`` ends later than ``second`` (None: never ends)."""
    if first is None:
        return second is not None
    return second is not None and first > second


def _cache_losses(
    live: OODSCache, desired: OODSCache | None, now: datetime
) -> list[ProtectionLoss]:
    who = f"OODSCache/{live.metadata.namespace}/{live.metadata.name}"
    at = f"at {live.spec.rse}"
    before, after = _pinned(live, now), _pinned(desired, now)
    losses = []
    removed = tuple(sorted(set(before) - set(after)))
    if removed:
        losses.append(ProtectionLoss("Pin", "removed", who, removed, at))
    shortened = tuple(sorted(d for d in before if d in after and _later(before[d], after[d])))
    if shortened:
        losses.append(ProtectionLoss("Pin", "shortened", who, shortened, at))
    kept = [
        pin.selector
        for pin in (desired.spec.pins if desired is not None else ())
        if _in_force(pin, now)
    ]
    for pin in live.spec.pins:
        selector = pin.selector
        if selector.dids is None and _in_force(pin, now) and selector not in kept:
            named = f" named {selector.name}" if selector.name is not None else ""
            matching = f" matching {selector.match}" if selector.match is not None else ""
            what = f"{at}: the pin of scope {selector.scope}{named}{matching}"
            losses.append(ProtectionLoss("Pin", "removed", who, (), what))
    return losses


def protection_losses(
    kind: str,
    live: Mapping[str, Any] | None,
    desired: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> Sequence[ProtectionLoss]:
    """What one change (``desired`` None: deletion) stops protecting, as of ``now``.

    A RetentionPolicy's legal holds released, its governance locks removed or shortened (as
    in force at ``now``); an OODSCache's pins removed or shortened. Compliance locks are never
    lost (see the module's docstring). A new resource loses nothing; a document the models
    refuse is reported by validation, not here.
    """
    if live is None or kind not in {"RetentionPolicy", "OODSCache"}:
        return []
    if kind == "RetentionPolicy":
        before = _model(RetentionPolicy, live)
        after = _model(RetentionPolicy, _spec_only(desired)) if desired is not None else None
        if before is None or (desired is not None and after is None):
            return []
        return _policy_losses(before, after, now)
    cache = _model(OODSCache, _spec_only(live))
    target = _model(OODSCache, _spec_only(desired)) if desired is not None else None
    if cache is None or (desired is not None and target is None):
        return []
    return _cache_losses(cache, target, now)
