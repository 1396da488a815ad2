"""The RetentionPolicy and OODSCache passes: a plan shown first, and no timer a moment after.

The handlers are called in process with kopf's Memo, Body and Patch, against the real Rucio,
so the timer can fire exactly when a change pass has just ended, which a test of the whole
operator cannot arrange.
"""

import copy
import uuid
from datetime import UTC, datetime, timedelta

import kopf
import pytest

from steward.handlers.common import INTERVAL
from steward.handlers.gated import note_change, settling
from steward.handlers.retention import policy_changed, policy_timer
from steward.storage.rucio import RuleSpec
from support.handlers import applied
from support.waiting import until


def test_a_timer_waits_half_an_interval_after_a_change_pass_ended():
    memo = {}
    now = 1000.0
    assert not settling(memo, clock=lambda: now)  # no change pass in this process yet
    note_change(memo, clock=lambda: now)
    assert settling(memo, clock=lambda: now + INTERVAL / 2 - 0.001)
    assert not settling(memo, clock=lambda: now + INTERVAL / 2)


def _policy(name, dids, generation):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "RetentionPolicy",
        "metadata": {
            "name": name,
            "namespace": "handlers",
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "generation": generation,
        },
        "spec": {"selector": {"dids": dids}, "lifetime": "1s"},
    }


@pytest.mark.rucio
def test_a_new_policy_shows_its_plan_and_a_timer_right_after_leaves_its_turn(
    memo, rucio_storage, rucio_data
):
    """The change pass shows; a timer at once does nothing; the timer's next turn acts."""
    dataset = rucio_data.dataset()
    rule = rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK"))
    until(
        "the rule past the policy's one-second lifetime",
        lambda: rucio_storage.get_rule(rule).created_at + timedelta(seconds=1) <= datetime.now(UTC),
    )
    raw = _policy(f"gated-{rucio_data.scope}", [dataset], 1)

    created = kopf.Patch()
    policy_changed(body=kopf.Body(copy.deepcopy(raw)), patch=created, memo=memo)
    raw = applied(raw, created)
    assert (raw["status"]["removed"], raw["status"]["plan"]["rules"]) == (0, 1)
    ready = next(c for c in raw["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PlanShown"

    early = kopf.Patch()
    policy_timer(body=kopf.Body(copy.deepcopy(raw)), patch=early, memo=memo)
    assert not early  # nothing written, nothing done
    assert rucio_storage.get_rule(rule).expires_at is None

    memo["changed_at"] -= INTERVAL / 2  # the timer's next turn
    due = kopf.Patch()
    policy_timer(body=kopf.Body(copy.deepcopy(raw)), patch=due, memo=memo)
    assert applied(raw, due)["status"]["removed"] == 1
    assert rucio_storage.get_rule(rule).expires_at is not None
