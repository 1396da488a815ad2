"""ReplicationRule handlers: reconcile on change and on a timer; deletionPolicy on delete."""

from __future__ import annotations

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
    post,
    reconciling,
    resource_ref,
)
from steward.models.replication import ReplicationRule
from steward.observability import forget_rule_states, observe_rule_states

PLURAL = "replicationrules"


def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: Any, *, fresh: bool) -> None:  # noqa: ANN401
    rule = parse(ReplicationRule, body, patch)
    if rule is None:
        return
    with reconciling("ReplicationRule", body, patch):
        service = factory(memo).create_replication_service()
        status = dict(body.get("status") or {})
        outcome = service.reconcile(
            rule,
            resource_ref(body),
            status,
            fresh=fresh,
            first_pass=fresh and "observedGeneration" not in status,
        )
        post(body, outcome, patch, memo)
        counts = outcome.status.get("counts") or {}
        observe_rule_states(rule.metadata.namespace or "", rule.metadata.name, counts)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def rule_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Converge Rucio on a new or changed ReplicationRule, reading its rules fresh."""
    _reconcile(body, patch, memo, fresh=True)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=jitter)
def rule_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Level-based: refresh states from the shared snapshot, restore drift, place new data."""
    _reconcile(body, patch, memo, fresh=False)


def _gated(spec: kopf.Spec, **_: Any) -> bool:  # noqa: ANN401
    return bool(spec.get("transferWindow") or spec.get("notBefore"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=EDGE_INTERVAL, when=_gated)
def rule_edge(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Open or close transfers within seconds of a window or embargo edge."""
    if edge_due(memo):
        _reconcile(body, patch, memo, fresh=False)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def rule_deleted(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:  # noqa: ANN401
    """Carry out deletionPolicy (Orphan keeps the Rucio rules, Delete removes them)."""
    rule = parse(ReplicationRule, body, patch)
    if rule is not None:
        with reconciling("ReplicationRule", body, patch, deleting=True):
            events = factory(memo).create_replication_service().finalize(rule, resource_ref(body))
            for type_, reason, message in events:
                kopf.event(body, type=type_, reason=reason, message=message)
        forget_rule_states(rule.metadata.namespace or "", rule.metadata.name)
    forget(body)
