"""ReplicationRule handlers: reconcile on change and in the kind's refresh loop; deletionPolicy.

The level-based refresh is one loop for the kind (`steward.handlers.refresh`), not a kopf
timer per object: its passes and kopf's handlers share each object's memo (`Tracked`), and
the change handlers decide which objects it refreshes. The same loop acts on edges (a window
opening or closing, an embargo ending, a backlog's next share) within seconds. No kopf timer
is registered for the kind, so kopf keeps no live body per object either.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import kopf

from steward.constants import GROUP, VERSION
from steward.handlers.common import (
    EDGE_INTERVAL,
    HEARTBEAT,
    INTERVAL,
    factory,
    forget,
    heartbeat,
    parse,
    passing,
    post,
    reconciling,
    resource_ref,
)
from steward.handlers.protections import cluster_facts
from steward.handlers.refresh import Pass, RefreshLoop, Tracked, peering_leadership
from steward.models.replication import ReplicationRule
from steward.observability import forget_rule_states, observe_backlog, observe_rule_states
from steward.storage.kubernetes import ResourceKey
from steward.storage.refreshing import RefreshObjects

KIND = "ReplicationRule"
PLURAL = "replicationrules"


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid"))


def _tracked(memo: Any, body: Mapping[str, Any]) -> kopf.Memo:  # noqa: ANN401 - kopf's memo
    """The object's memo shared with the refresh loop, which refreshes it from now on."""
    tracked: Tracked = memo.tracked
    return tracked.track(_uid(body), ResourceKey.of(dict(body)))


def refresh_loop(
    memo: Any,  # noqa: ANN401 - kopf's operator memo, with the process context
    indices: Mapping[str, Any],
    settings: kopf.OperatorSettings,
) -> RefreshLoop:
    """The kind's refresh loop (not started), its tracked objects kept as ``memo.tracked``.

    ``indices`` are kopf's live indexes, as a startup handler receives them: what a refresh
    pass judges deletions against, as a handler's keyword arguments are.
    """
    context = memo.context
    memo.tracked = Tracked({"context": context})
    objects = RefreshObjects.open(KIND, connections=context.settings.workers + 2)
    return RefreshLoop(
        objects=objects,
        tracked=memo.tracked,
        refresh=refresh_pass(indices, memo.tracked),
        interval=INTERVAL,
        edge_interval=EDGE_INTERVAL,
        yield_limit=HEARTBEAT.total_seconds(),
        workers=context.settings.workers,
        leading=peering_leadership(objects, settings),
    )


def refresh_pass(indices: Mapping[str, Any], tracked: Tracked) -> Pass:
    """A refresh pass of one object, judged against ``indices``, one of ``tracked``."""

    def one(body: dict[str, Any], patch: kopf.Patch, memo: kopf.Memo) -> None:
        _reconcile(body, patch, memo, indices, fresh=False, every=heartbeat(len(tracked)))

    return one


def _reconcile(
    body: Mapping[str, Any],
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's memo
    kwargs: Mapping[str, Any],
    *,
    fresh: bool,
    every: timedelta,
) -> None:
    with reconciling(KIND, body, patch, memo) as copy:
        status = copy.get("status") or {}
        if not fresh and not status.get("conditions"):
            # No pass has reported on it yet: its first pass is the change handler's, which
            # kopf calls for every new object (create) and for every object at start
            # (resume). A refresh or an edge pass coming first (the change handler's thread
            # may wait behind a thousand others) would make that pass without what only a
            # first pass may skip (its listing, `ReplicationService.reconcile`), then the
            # change handler would list again.
            return
        rule = parse(ReplicationRule, copy, patch, memo)
        if rule is None:
            return
        passing(KIND, memo, refresh=not fresh)
        outcome = (
            factory(memo)
            .create_replication_service(cluster_facts(kwargs, memo))
            .reconcile(
                rule,
                resource_ref(copy),
                status,
                fresh=fresh,
                first_pass=fresh and "observedGeneration" not in status,
            )
        )
        post(copy, outcome, patch, memo, every=every)
        counts = outcome.status.get("counts") or {}
        observe_rule_states(rule.metadata.namespace or "", rule.metadata.name, counts)
        observe_backlog(
            rule.metadata.namespace or "", rule.metadata.name, outcome.status.get("catchUp")
        )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def rule_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Converge Rucio on a new or changed ReplicationRule, reading its rules fresh.

    From then on the kind's refresh loop refreshes it too (`Tracked.track`).
    """
    tracked: Tracked = memo.tracked
    _reconcile(body, patch, _tracked(memo, body), kwargs, fresh=True, every=heartbeat(len(tracked)))


@kopf.on.delete(GROUP, VERSION, PLURAL)
def rule_deleted(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **kwargs: Any) -> None:  # noqa: ANN401
    """Carry out deletionPolicy (Orphan keeps the Rucio rules, Delete removes them).

    A spec that no longer validates does not stop it: the deletion policy last acted on,
    kept in status, applies (the service's ``finalize`` says how). Rules the deletion gate
    keeps (a protection, a freeze) keep the finalizer, and the release is tried again.
    """
    shared = _tracked(memo, body)
    with reconciling(KIND, body, patch, shared, deleting=True) as copy:
        rule = parse(ReplicationRule, copy, patch, shared)
        events = (
            factory(memo)
            .create_replication_service(cluster_facts(kwargs, memo))
            .finalize(
                resource_ref(copy),
                rule.spec if rule is not None else None,
                copy.get("status"),
                raw_spec=copy.get("spec"),
            )
        )
        for type_, reason, message in events:
            kopf.event(body, type=type_, reason=reason, message=message)
        metadata = copy.get("metadata") or {}
        forget_rule_states(metadata.get("namespace") or "", metadata.get("name") or "")
    forget(body)
    memo.tracked.forget(_uid(body))
