"""Pure decisions of the ReplicationRule service: subscriptions, the release brake, policies."""

import re
from datetime import UTC, datetime

import pytest

from steward.models.replication import DeletionPolicy, ReplicationRuleSpec
from steward.services.deletion import (
    Candidate,
    DeletionRequest,
    Operation,
    Protections,
    plan_deletion,
)
from steward.services.ownership import owner_tag
from steward.services.replication import (
    ChangeVerdict,
    ReleaseLimit,
    _safer,
    _unowned,
    leaving_rses,
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


def test_a_name_pattern_becomes_an_anchored_escaped_pattern():
    spec = _spec(selector={"scope": "raw", "name": "LSSTCam-2026.11_*", "match": {"version": "v"}})
    wanted = subscription_filter(spec)
    assert wanted == {
        "scope": ["^raw$"],
        "did_type": ["DATASET"],
        "pattern": r"^LSSTCam\-2026\.11_.*$",
        "version": ["^v$"],
    }
    # One expression (Rucio's schema has pattern as a string), applied with re.match.
    assert re.match(wanted["pattern"], "LSSTCam-2026.11_000123")
    assert not re.match(wanted["pattern"], "LSSTCam-2026x11_000123")
    assert not re.match(wanted["pattern"], "xLSSTCam-2026.11_000123")
    assert "pattern" not in subscription_filter(_spec())


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
        # A name pattern becomes the filter's pattern, alone or beside DID-column metadata.
        ({"selector": {"scope": "r", "name": "w46-*"}}, True),
        ({"selector": {"scope": "r", "name": "w46-*", "match": {"version": "x"}}}, True),
        ({"selector": {"scope": "r", "name": "w46-*", "match": {"release": "DR1"}}}, False),
        ({"selector": {"scope": "r", "name": "w46-*", "exclude": [{"version": "y"}]}}, False),
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


A, B, C = "A_DISK", "B_DISK", "C_DISK"


@pytest.mark.parametrize(
    ("before", "copies_before", "after", "copies_after", "leaving"),
    [
        # Fewer copies at the same RSEs: Rucio chooses which copy goes, so any of them.
        ({A, B}, 2, {A, B}, 1, {A, B}),
        # Fewer copies at a wider expression: still any of the old RSEs.
        ({A, B}, 2, {A, B, C}, 1, {A, B}),
        # A move: only what the new expression leaves out.
        ({A}, 1, {B}, 1, {A}),
        ({A, B}, 1, {B, C}, 1, {A}),
        # A move with more copies still leaves the RSE it drops.
        ({A}, 1, {B, C}, 2, {A}),
        # Only adding: more copies, or an expression covering every old RSE.
        ({A, B}, 1, {A, B}, 2, set()),
        ({A}, 1, {A, B}, 1, set()),
        ({A}, 1, {A, B, C}, 3, set()),
        # An old placement nowhere (no RSE, no lock) has nothing to lose.
        (set(), 1, {A}, 1, set()),
    ],
)
def test_a_change_removes_replicas_only_from_rses_it_leaves_or_by_fewer_copies(
    before, copies_before, after, copies_after, leaving
):
    assert leaving_rses(
        frozenset(before), copies_before, frozenset(after), copies_after
    ) == frozenset(leaving)


def _owned_rule(rule_id, name, expression, copies):
    return Rule(rule_id, "s", name, "steward", expression, copies, RuleState.OK, comment="tag")


def _verdict(protections):
    rules = (
        _owned_rule("r1", "held", A, 1),
        _owned_rule("r2", "free", A, 1),
        _owned_rule("r3", "wider", A, 1),
    )
    leaving = {"r1": frozenset({A}), "r2": frozenset({A}), "r3": frozenset()}
    candidates = [
        Candidate(r.id, r.did, 10, leaving[r.id], "Changed", tag="tag")
        for r in rules
        if leaving[r.id]
    ]
    request = DeletionRequest(
        "ReplicationRule/ns/x", Operation.DELETE, candidates, own_tags=frozenset({"tag"})
    )
    plan = plan_deletion(request, protections, now=datetime(2026, 1, 1, tzinfo=UTC))
    return ChangeVerdict(rules, leaving, plan)


def test_the_verdict_changes_what_only_adds_and_what_the_gate_lets_through():
    verdict = _verdict(Protections(legal_holds={"s:held": "RetentionPolicy/ns/hold"}))
    assert [r.id for r in verdict.allowed()] == ["r2", "r3"]
    assert [(r.id, by, why) for r, by, why in verdict.kept()] == [
        ("r1", "LegalHold", "held by RetentionPolicy/ns/hold")
    ]


def test_a_frozen_plan_keeps_every_change_that_removes_but_not_one_that_adds():
    verdict = _verdict(Protections(frozen_rses={A: "Site/a: restore"}))
    assert [r.id for r in verdict.allowed()] == ["r3"]
    kept = verdict.kept()
    assert [(r.id, by) for r, by, _ in kept] == [("r1", "Frozen"), ("r2", "Frozen")]
    assert "deletion is frozen at A_DISK: Site/a: restore" in kept[0][2]


def test_a_verdict_without_a_plan_changes_everything():
    rules = (_owned_rule("r1", "a", A, 1),)
    verdict = ChangeVerdict(rules, {"r1": frozenset()}, None)
    assert verdict.allowed() == list(rules)
    assert verdict.kept() == []
