"""RetentionPolicy handlers: plan and act on change and on a timer; keep locks on delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from steward.constants import GROUP, VERSION
from steward.handlers.common import (
    INTERVAL,
    factory,
    forget,
    jitter,
    parse,
    post,
    reconciling,
    resource_ref,
)
from steward.handlers.protections import cluster_facts
from steward.models.retention import RetentionPolicy
from steward.services.retention import locks_in_force

PLURAL = "retentionpolicies"


def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: Any, kwargs: Any) -> None:  # noqa: ANN401
    with reconciling("RetentionPolicy", body, patch, memo) as copy:
        policy = parse(RetentionPolicy, copy, patch, memo)
        if policy is None:
            return
        service = factory(memo).create_retention_service()
        outcome = service.reconcile(
            policy, resource_ref(copy), cluster_facts(kwargs, memo), copy.get("status")
        )
        post(copy, outcome, patch, memo)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def policy_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Plan a new or changed policy at once (and act, unless it may not)."""
    _reconcile(body, patch, memo, kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=jitter)
def policy_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Every cycle: data becomes due as time passes, protections come and go."""
    _reconcile(body, patch, memo, kwargs)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def policy_deleted(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Keep the policy (finalizer) while any of its Compliance locks is in force."""
    with reconciling("RetentionPolicy", body, patch, memo, deleting=True) as copy:
        policy = parse(RetentionPolicy, copy, patch, memo)
        if policy is not None:
            held = locks_in_force(policy, copy.get("status"), datetime.now(UTC))
            if held:
                message = "deletion waits for Compliance locks: " + ", ".join(held)
                patch.status["deletion"] = message
                raise kopf.TemporaryError(message, delay=INTERVAL)
    forget(body)
