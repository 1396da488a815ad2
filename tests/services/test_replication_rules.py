"""Pure decisions of the ReplicationRule service: subscriptions, the release brake, policies."""

import re

import pytest

from steward.models.replication import DeletionPolicy, ReplicationRuleSpec
from steward.services.ownership import owner_tag
from steward.services.replication import (
    ReleaseLimit,
    _safer,
    _unowned,
    subscribable,
    subscription_filter,
)
from steward.storage.rucio import Rule, RuleState


def _spec(**spec):
    return ReplicationRuleSpec.model_validate(
        {
            "selector": spec.pop("selector", {"scope": "release", "match": {"version": "DR1"}}),
            "destination": "NCSA_DISK",
            **spec,
        }
    )


def test_filter_values_are_lists_of_anchored_escaped_expressions():
    spec = _spec(selector={"scope": "raw.x", "match": {"datatype": "raw", "version": "DR1+"}})
    wanted = subscription_filter(spec)
    assert wanted == {
        "scope": [r"^raw\.x$"],
        "did_type": ["DATASET"],
        "datatype": ["^raw$"],
        "version": [r"^DR1\+$"],
    }
    # The transmogrifier uses re.match: the anchors stop DR1 from matching DR10.
    (pattern,) = subscription_filter(_spec())["version"]
    assert re.match(pattern, "DR1")
    assert not re.match(pattern, "DR10")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"managementPolicy": "Observe"}, False),
        ({"transferWindow": {"start": "08:00", "end": "18:00"}}, False),
        ({"notBefore": "2030-01-01T00:00:00Z"}, False),
        (
            {"selector": {"scope": "r", "match": {"version": "x"}, "exclude": [{"project": "y"}]}},
            False,
        ),
        ({"selector": {"dids": ["r:a"]}}, False),
        # The transmogrifier reads DID columns only: a JSON-plugin key never matches there.
        ({"selector": {"scope": "r", "match": {"release": "DR1"}}}, False),
        (
            {"selector": {"scope": "r", "match": {"datatype": "raw", "instrument": "LSSTCam"}}},
            False,
        ),
    ],
)
def test_only_specs_a_subscription_can_honour_get_one(changes, expected):
    assert subscribable(_spec(**changes)) is expected


@pytest.mark.parametrize(
    ("count", "owned", "held"),
    [(1, 1, False), (1, 2, False), (2, 3, True), (2, 10, False), (3, 10, True), (101, 1000, True)],
)
def test_the_brake_holds_large_or_sweeping_releases(count, owned, held):
    assert ReleaseLimit(max_rules=100, max_fraction=0.25).holds(count, owned) is held


@pytest.mark.parametrize(
    ("recorded", "declared", "policy"),
    [
        ("Delete", "Delete", DeletionPolicy.DELETE),
        ("Delete", None, DeletionPolicy.DELETE),
        ("Delete", "Orphan", DeletionPolicy.ORPHAN),
        ("Orphan", "Delete", DeletionPolicy.ORPHAN),
        (None, "Delete", DeletionPolicy.ORPHAN),
        (None, None, DeletionPolicy.ORPHAN),
        ("Delete", 42, DeletionPolicy.ORPHAN),
    ],
)
def test_an_invalid_spec_can_only_make_deletion_safer(recorded, declared, policy):
    assert _safer(recorded, declared) is policy


def _rule(comment):
    return Rule("id", "s", "n", "steward", "NCSA_DISK", 1, RuleState.OK, comment=comment)


def test_rules_not_made_by_this_resource_are_told_apart():
    ours = owner_tag("c", "mine")
    other = owner_tag("c", "theirs")
    assert _unowned(_rule(other), ours)["kind"] == "shared"
    assert _unowned(_rule("steward:ns/name"), ours)["kind"] == "shared"  # a legacy tag
    assert _unowned(_rule(ours + " (moved by Bob)"), ours)["kind"] == "foreign"
    assert _unowned(_rule("keep: Alice"), ours)["kind"] == "foreign"
    assert _unowned(_rule(None), ours)["kind"] == "foreign"
