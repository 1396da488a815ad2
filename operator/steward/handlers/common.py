"""What every handler does the same way: identify, lock, report, and map errors for kopf."""

from __future__ import annotations

import contextvars
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import kopf
from pydantic import BaseModel, ValidationError

from steward.config import Settings
from steward.exceptions import PermanentError, TransientError
from steward.factory import Factory, ProcessContext
from steward.observability import (
    RECONCILE_SECONDS,
    RECONCILES,
    REFRESH_GAP_SECONDS,
    get_logger,
)
from steward.services.audit import ResourceRef
from steward.services.conditions import (
    DEGRADED,
    READY,
    condition,
    find,
    set_condition,
    status_changes,
)
from steward.services.gitops import ANNOTATION_AUTHOR, ANNOTATION_COMMIT, ANNOTATION_PATH
from steward.services.site import Outcome

__all__ = [
    "EDGE_INTERVAL",
    "EVENT_SINK",
    "INTERVAL",
    "edge_due",
    "factory",
    "forget",
    "heartbeat",
    "jitter",
    "parse",
    "passing",
    "post",
    "reconciling",
    "resource_ref",
]

INTERVAL = Settings().refresh_interval
"""Seconds between refresh passes (Rucio has no watch to tell us of changes)."""
HEARTBEAT = timedelta(seconds=10 * INTERVAL)
"""How old ``lastSyncTime`` may get before a status that did not change is written anyway,
for a kind of few resources (`heartbeat`)."""
HEARTBEAT_WRITES = Settings().heartbeat_writes
"""Status writes a second one kind's heartbeat may cost, at most (`heartbeat`)."""
EDGE_INTERVAL = min(5.0, INTERVAL)
"""Seconds between checks for a due edge (a transfer window, an embargo, a downtime)."""

M = TypeVar("M", bound=BaseModel)
EventSink = Callable[[Mapping[str, Any], str, str, str], None]
EVENT_SINK: contextvars.ContextVar[EventSink | None] = contextvars.ContextVar(
    "steward_event_sink", default=None
)
"""Where a pass's Events go when it runs outside kopf's handlers (`steward.handlers.refresh`).

kopf's ``kopf.event`` queues an Event for kopf's poster, which only kopf's own handler
context can reach; unset, the Events go there.
"""
_LOG = get_logger(__name__)
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def jitter(**_: object) -> float:
    """Initial timer delay: spread a thousand resources' timers over one interval."""
    return INTERVAL * (0.5 + random.random())  # noqa: S311 - spreading load, not secrets


def _event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post an Event about ``body``: to `EVENT_SINK` when one is set, else through kopf."""
    sink = EVENT_SINK.get()
    if sink is not None:
        sink(body, type_, reason, message)
    else:
        kopf.event(
            kopf.Body(cast("kopf.RawBody", body)), type=type_, reason=reason, message=message
        )


def factory(memo: Any) -> Factory:  # noqa: ANN401 - kopf's memo
    """The Factory for one unit of work."""
    context: ProcessContext = memo.context
    return Factory(context)


def resource_ref(body: Mapping[str, Any]) -> ResourceRef:
    """Identity, generation and git provenance of a resource, for the audit trail."""
    meta = body.get("metadata", {})
    annotations = meta.get("annotations", {}) or {}
    return ResourceRef(
        kind=body["kind"],
        namespace=meta.get("namespace"),
        name=meta["name"],
        uid=meta.get("uid"),
        generation=meta.get("generation"),
        git_commit=annotations.get(ANNOTATION_COMMIT),
        git_author=annotations.get(ANNOTATION_AUTHOR),
        git_path=annotations.get(ANNOTATION_PATH),
    )


def parse(
    model: type[M],
    body: Mapping[str, Any],
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's per-object memo
) -> M | None:
    """Validate the body copy into the model; an invalid one gets a Degraded status, not a crash.

    Admission (the CRD schema and CEL rules) refuses most bad specs; this catches what only
    the models check.
    """
    try:
        return model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as exc:
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )[:1000]
        _degrade(body, patch, memo, "InvalidSpec", message)
        _event(body, "Warning", "InvalidSpec", message)
        return None


def _degrade(
    body: Mapping[str, Any],
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's per-object memo
    reason: str,
    message: str,
) -> None:
    """Write Degraded (and, for a bad spec, Ready=False) onto the status the copy carries."""
    now = datetime.now(UTC)
    generation = body.get("metadata", {}).get("generation")
    status = dict(body.get("status") or {})
    conditions = set_condition(
        status.get("conditions"),
        condition(
            DEGRADED, status=True, reason=reason, message=message, generation=generation, now=now
        ),
    )
    if reason == "InvalidSpec":
        conditions = set_condition(
            conditions,
            condition(
                READY, status=False, reason=reason, message=message, generation=generation, now=now
            ),
        )
    if conditions != status.get("conditions"):
        patch.status["conditions"] = conditions
    _remember(memo, {**status, "conditions": conditions})


_OUTAGES = frozenset({"RucioUnavailable", "Unavailable"})
"""Degraded reasons of an outage: retried with backoff, announced once, and their end too."""


def _degraded_by(status: Mapping[str, Any] | None) -> str | None:
    """The reason the status is Degraded for, or None when it is not Degraded."""
    found = find((status or {}).get("conditions"), DEGRADED)
    return str(found.get("reason")) if found and found.get("status") == "True" else None


def heartbeat(
    resources: int,
    *,
    floor: timedelta = HEARTBEAT,
    writes: float = HEARTBEAT_WRITES,
) -> timedelta:
    """How old ``lastSyncTime`` may get for a kind of ``resources``, its writes within budget.

    A fixed ten intervals cost a tenth of a status write per resource per interval,
    forever: at 10,000 resources that is 17 writes a second at the default minute, and in a
    burst every resource already Ready was written again each heartbeat while the rest
    waited (3.2 writes a resource at 10,000; docs/replication.md, "At scale"). So past
    ``floor`` the period grows with the resources, to keep the heartbeat's writes at
    ``writes`` a second (the setting ``heartbeat_writes``).
    """
    return max(floor, timedelta(seconds=resources / writes))


def edge_due(memo: Any) -> bool:  # noqa: ANN401 - kopf's per-object memo
    """Whether the edge the object's last reconcile announced has come.

    A window opening or closing, an embargo ending or a downtime starting must be acted on
    within seconds, not at the next refresh (a minute by default): a transfer must not start
    outside its window. The reconcile returns when its state next changes; `post` keeps that
    in the object's memo, and a short timer on the objects that have such edges calls this.
    """
    due: float | None = memo.get("edge_at")
    return due is not None and time.monotonic() >= due


def passing(
    kind: str,
    memo: Any,  # noqa: ANN401 - kopf's per-object memo
    *,
    refresh: bool,
    clock: Callable[[], float] = time.monotonic,
) -> float | None:
    """Note that a pass of the object begins; at a refresh pass, observe the time since the last.

    One process's kopf timers kept a 10 s refresh at 5,000 resources and not at 10,000, where
    a tenth of the resources waited up to two minutes (docs/replication.md, "At scale"):
    a resource is then refreshed less often than configured, and nothing else shows it.
    The gap, as ``steward_refresh_gap_seconds``, does. Returns the gap observed, if any.
    The refresh loop (`steward.handlers.refresh`) also reads ``passed_at``: an object a
    change handler has just passed is not due.
    """
    now = clock()
    last: float | None = memo.get("passed_at")
    memo["passed_at"] = now
    if not refresh or last is None:
        return None
    gap = now - last
    REFRESH_GAP_SECONDS.labels(kind).observe(gap)
    return gap


def post(
    body: Mapping[str, Any],
    outcome: Outcome,
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's per-object memo
    *,
    every: timedelta = HEARTBEAT,
) -> None:
    """Write the outcome's whole status if any of it changed; post Events; note the next edge.

    The status is compared with the one the body copy carries (`reconciling`: what this
    process last wrote, or the stored one), and written whole when anything differs, so no
    field of an earlier write can outlive a later one. Once ``every`` (the kind's `heartbeat`)
    it is written even when only ``lastSyncTime`` moved, which also repairs a status whose
    write was lost.
    """
    after = outcome.requeue_after
    memo["edge_at"] = time.monotonic() + after if after is not None else None
    old = body.get("status") or {}
    was = _degraded_by(old)
    if was in _OUTAGES and _degraded_by(outcome.status) != was:
        _event(
            body,
            "Normal",
            "Recovered",
            f"{was} ended: the reconcile reached every service it needs again",
        )
    if status_changes(old, outcome.status, heartbeat=every):
        for key, value in outcome.status.items():
            patch.status[key] = value
        _remember(memo, outcome.status)
    for key, value in outcome.annotations.items():
        patch.metadata.annotations[key] = value
    for type_, reason, message in outcome.events:
        _event(body, type_, reason, message[:1024])


@contextmanager
def reconciling(
    kind: str,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's per-object memo
    *,
    deleting: bool = False,
) -> Iterator[dict[str, Any]]:
    """One reconcile at a time per object, on one copy of its body; errors mapped for kopf.

    kopf's body is live: the watch stream replaces its content while a handler runs, and a
    refresh and a change handler of one object may run together. So the handler first takes
    the object's lock (the second one waits rather than act on the same state twice), then
    one deep copy of the body, and reads spec, generation and status from that copy only:
    ``observedGeneration`` names the spec that was reconciled. The copy's status is the one
    this process last wrote (kept in the memo) when there is one: a handler's patch reaches
    the API server only after it returned, so the next handler's body may not show it yet,
    and comparing against that would let a Degraded=True outlive a later success.

    A transient error writes Degraded and asks kopf to retry later (kopf backs off, never a
    hot loop); its Warning Event is posted when the resource turns Degraded for that reason,
    not at every retry (a thousand resources retrying through an outage would post a hundred
    Events a second), and `post` announces the end. A permanent one writes Degraded and waits
    for the next change or refresh,
    except while ``deleting``: then the finalizer stays and kopf retries, so a refused
    release never loses track of rules.
    """
    uid = str(body.get("metadata", {}).get("uid"))
    with _locks_guard:
        lock = _locks.setdefault(uid, threading.Lock())
    started = time.monotonic()
    outcome = "success"
    with lock:
        copy = _copy(body, memo)
        try:
            yield copy
        except TransientError as exc:
            outcome = "transient-error"
            reason = "RucioUnavailable" if "Rucio" in type(exc).__name__ else "Unavailable"
            was = _degraded_by(copy.get("status"))
            _degrade(copy, patch, memo, reason, str(exc))
            if was != reason:
                _event(body, "Warning", reason, str(exc)[:1024])
            raise kopf.TemporaryError(str(exc), delay=exc.retry_after) from exc
        except PermanentError as exc:
            outcome = "permanent-error"
            _degrade(copy, patch, memo, "Refused", str(exc))
            _event(body, "Warning", "Refused", str(exc)[:1024])
            _LOG.warning("reconcile refused", kind=kind, error=str(exc))
            if deleting:
                raise kopf.TemporaryError(str(exc), delay=INTERVAL) from exc
        finally:
            RECONCILES.labels(kind, outcome).inc()
            RECONCILE_SECONDS.labels(kind, outcome).observe(time.monotonic() - started)


def _remember(memo: Any, status: Mapping[str, Any]) -> None:  # noqa: ANN401 - kopf's memo
    """Keep the status this process wrote in the object's memo, as its compact JSON.

    The memo lives as long as the object: as dictionaries a ReplicationRule's status took
    about 6 KiB a resource, its JSON text about 1.4 KiB (60 and 14 MiB at 10,000
    resources; docs/replication.md, "At scale"). It is written as the status patch will
    be (kopf sends the patch as JSON), and read back as a body's status would be, so the
    next pass compares like with like.
    """
    memo["status"] = json.dumps(status, separators=(",", ":"))


def _copy(body: Mapping[str, Any], memo: Any) -> dict[str, Any]:  # noqa: ANN401 - kopf's memo
    """One deep copy of the live body, with the status this process last wrote, if any."""
    copy: dict[str, Any] = deepcopy(dict(body))
    written: str | None = memo.get("status")
    if written is not None:
        copy["status"] = json.loads(written)
    return copy


def forget(body: Mapping[str, Any]) -> None:
    """Drop the object's lock once it is gone."""
    with _locks_guard:
        _locks.pop(str(body.get("metadata", {}).get("uid")), None)
