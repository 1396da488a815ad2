"""ReplicationRule handlers: reconcile on change and on a timer; deletionPolicy on delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from steward.constants import GROUP, VERSION
from steward.handlers.common import (
    EDGE_INTERVAL,
    INTERVAL,
    edge_due,
    factory,
    forget,
    jitter,
    parse,
    passing,
    post,
    reconciling,
    resource_ref,
)
from steward.handlers.protections import cluster_facts
from steward.models.replication import ReplicationRule
from steward.observability import forget_rule_states, observe_backlog, observe_rule_states

PLURAL = "replicationrules"


def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's memo
    kwargs: Mapping[str, Any],
    *,
    fresh: bool,
) -> None:
    with reconciling("ReplicationRule", body, patch, memo) as copy:
        status = copy.get("status") or {}
        if not fresh and not status.get("conditions"):
            # No pass has reported on it yet: its first pass is the change handler's, which
            # kopf calls for every new object (create) and for every object at start
            # (resume). kopf starts the timers at the object's first event, so in a burst
            # a timer would otherwise often come first (the change handler's thread waits
            # behind a thousand others) and make that pass without what only a first pass
            # may skip (its listing, `ReplicationService.reconcile`), then the change
            # handler would list again.
            return
        rule = parse(ReplicationRule, copy, patch, memo)
        if rule is None:
            return
        passing("ReplicationRule", memo, timer=not fresh)
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
        post(copy, outcome, patch, memo)
        counts = outcome.status.get("counts") or {}
        observe_rule_states(rule.metadata.namespace or "", rule.metadata.name, counts)
        observe_backlog(
            rule.metadata.namespace or "", rule.metadata.name, outcome.status.get("catchUp")
        )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def rule_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Converge Rucio on a new or changed ReplicationRule, reading its rules fresh."""
    _reconcile(body, patch, memo, kwargs, fresh=True)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=jitter)
def rule_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Level-based: refresh states from the shared snapshot, restore drift, place new data."""
    _reconcile(body, patch, memo, kwargs, fresh=False)


def _gated(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:  # noqa: ANN401
    return bool(spec.get("transferWindow") or spec.get("notBefore") or status.get("deferred"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=EDGE_INTERVAL, when=_gated)
def rule_edge(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Open or close transfers within seconds of a window or embargo edge; catch up a backlog.

    A resource whose last pass left rules for later (``status.deferred``) takes its next
    share here, seconds later, rather than at the next refresh.
    """
    if edge_due(memo):
        _reconcile(body, patch, memo, kwargs, fresh=False)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def rule_deleted(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **kwargs: Any) -> None:  # noqa: ANN401
    """Carry out deletionPolicy (Orphan keeps the Rucio rules, Delete removes them).

    A spec that no longer validates does not stop it: the deletion policy last acted on,
    kept in status, applies (the service's ``finalize`` says how). Rules the deletion gate
    keeps (a protection, a freeze) keep the finalizer, and the release is tried again.
    """
    with reconciling("ReplicationRule", body, patch, memo, deleting=True) as copy:
        rule = parse(ReplicationRule, copy, patch, memo)
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
