"""RetentionPolicy handlers: plan and act on change and on a timer; keep locks on delete."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import kopf

from steward.constants import GROUP, VERSION
from steward.factory import Factory
from steward.handlers.common import (
    INTERVAL,
    forget,
    jitter,
    parse,
    reconciling,
)
from steward.handlers.gated import gated_pass
from steward.models.retention import RetentionPolicy
from steward.services.retention import locks_in_force

PLURAL = "retentionpolicies"
_pass = partial(gated_pass, "RetentionPolicy", RetentionPolicy, Factory.create_retention_service)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def policy_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Plan a new or changed policy at once; it acts from a later pass (`gated_pass`)."""
    _pass(body, patch, memo, kwargs, timer=False)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=jitter)
def policy_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Every cycle: data becomes due as time passes, protections come and go."""
    _pass(body, patch, memo, kwargs, timer=True)


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
