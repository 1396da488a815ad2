"""The deletion gate's decisions, as pure logic: examples, then properties (hypothesis).

No server: the gate is a function of its inputs. What it does to Rucio and the audit trail is
in test_deletion_gate.py; the e2e tests drive it through the operators.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from steward.models.retention import Approval, Bypass, RetentionPolicy
from steward.services.deletion import (
    PRECEDENCE,
    Candidate,
    DeletionRequest,
    Limits,
    Mode,
    Operation,
    PinFact,
    Placement,
    Protection,
    Protections,
    plan_deletion,
    shown_first,
)
from steward.services.protections import protections_from
from steward.services.retention import locks_in_force

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
EARLIER = NOW - timedelta(days=1)
TAPE = frozenset({"NCSA_TAPE"})
DISK = frozenset({"NCSA_DISK"})


@dataclass
class Facts:
    """Explicit campaign facts (the gate's CampaignFacts protocol)."""

    inputs: Mapping[str, str] = field(default_factory=dict)
    reviews: Mapping[str, str] = field(default_factory=dict)

    def inputs_in_use(self, dids: Collection[str]) -> Mapping[str, str]:
        return {d: self.inputs[d] for d in dids if d in self.inputs}

    def outputs_awaiting_review(self, dids: Collection[str]) -> Mapping[str, str]:
        return {d: self.reviews[d] for d in dids if d in self.reviews}


def _candidate(key, did=None, *, rses=DISK, size=100, **extra):
    return Candidate(key, did or f"s:{key}", size, rses, "Age", **extra)


def _request(candidates, **extra):
    return DeletionRequest("RetentionPolicy/ns/p", Operation.EXPIRE, candidates, **extra)


def _approval(**extra):
    return Approval(approved_by="ops", reason="why", approved_at=NOW, **extra)


def test_precedence_reports_the_strongest_protection():
    c = _candidate("r1", "s:d")
    protections = Protections(
        legal_holds={"s:d": "RetentionPolicy/ns/h"},
        compliance_locks={"s:d": LATER},
        governance_locks={"s:d": LATER},
        pins={"s:d": (PinFact(None, None, "OODSCache/ns/c"),)},
        campaigns=Facts(inputs={"s:d": "drp"}),
    )
    plan = plan_deletion(_request([c]), protections, now=NOW)
    assert [s.protection for s in plan.saved] == [Protection.LEGAL_HOLD]
    assert plan.removals == ()
    without_hold = replace(protections, legal_holds={})
    assert plan_deletion(_request([c]), without_hold, now=NOW).saved[0].protection is (
        Protection.COMPLIANCE_LOCK
    )
    assert list(PRECEDENCE[:4]) == [
        Protection.LEGAL_HOLD,
        Protection.COMPLIANCE_LOCK,
        Protection.GOVERNANCE_LOCK,
        Protection.PIN,
    ]


def test_governance_lock_is_bypassed_only_by_an_approval_naming_it():
    c = _candidate("r1", "s:d")
    protections = Protections(governance_locks={"s:d": LATER})
    assert plan_deletion(_request([c]), protections, now=NOW).removals == ()
    approval = _approval(bypass=[Bypass.GOVERNANCE_LOCK])
    plan = plan_deletion(_request([c], approval=approval), protections, now=NOW)
    assert plan.removals == (c,)
    assert plan.bypassed == (("r1", Bypass.GOVERNANCE_LOCK),)
    # A compliance lock is never bypassed, and an ended lock protects nothing.
    strict = Protections(compliance_locks={"s:d": LATER})
    assert plan_deletion(_request([c], approval=approval), strict, now=NOW).removals == ()
    ended = Protections(compliance_locks={"s:d": EARLIER}, governance_locks={"s:d": EARLIER})
    assert plan_deletion(_request([c]), ended, now=NOW).removals == (c,)


def test_scratch_of_another_owner_needs_the_owner_or_an_approval():
    mine = _candidate("r1", "user.kcarter:a", owner="kcarter")
    theirs = _candidate("r2", "user.jdoe:b", owner="jdoe")
    plan = plan_deletion(_request([mine, theirs], owner="kcarter"), Protections(), now=NOW)
    assert plan.removals == (mine,)
    assert plan.saved[0].protection is Protection.OWNER
    approval = _approval(bypass=[Bypass.OWNER])
    plan = plan_deletion(
        _request([mine, theirs], owner="kcarter", approval=approval), Protections(), now=NOW
    )
    assert plan.removals == (mine, theirs)
    assert plan.bypassed == (("r2", Bypass.OWNER),)


def test_failed_campaign_outputs_wait_for_the_review():
    c = _candidate("r1", "drp:out")
    assert plan_deletion(_request([c], awaiting_review="drp"), Protections(), now=NOW).saved[
        0
    ].protection is (Protection.FAILED_CAMPAIGN_REVIEW)
    reviewing = Protections(campaigns=Facts(reviews={"drp:out": "drp"}))
    assert plan_deletion(_request([c]), reviewing, now=NOW).removals == ()
    assert plan_deletion(_request([c]), Protections(), now=NOW).removals == (c,)


def test_rules_of_other_resources_are_theirs_to_release():
    ours = _candidate("r1", tag="steward:aaaa")
    theirs = _candidate("r2", tag="steward:bbbb")
    untagged = _candidate("r3", tag="a user's rule")
    plan = plan_deletion(
        _request([ours, theirs, untagged], own_tags=frozenset({"steward:aaaa"})),
        Protections(),
        now=NOW,
    )
    assert plan.removals == (ours, untagged)
    assert plan.saved[0].protection is Protection.OTHER_RESOURCE


def test_the_last_custodial_rule_stays():
    first = _candidate("r1", "s:d", rses=TAPE)
    second = _candidate("r2", "s:d", rses=TAPE)
    placement = Placement(custodial_rses=TAPE)
    plan = plan_deletion(_request([first, second], placement=placement), Protections(), now=NOW)
    assert plan.removals == (second,)
    assert [(s.candidate, s.protection) for s in plan.saved] == [
        (first, Protection.LAST_CUSTODIAL_REPLICA)
    ]
    # Another rule keeps a custodial copy: both may go.
    kept = Placement(custodial_rses=TAPE, keepers={"s:d": frozenset({"r9"})})
    assert (
        plan_deletion(_request([first, second], placement=kept), Protections(), now=NOW).count == 2
    )
    # A rule over disk and tape, with no known custodial keeper: the gate cannot tell where
    # the custodial copy is, so it stays.
    mixed = _candidate("r3", "s:e", rses=TAPE | DISK)
    assert plan_deletion(_request([mixed], placement=placement), Protections(), now=NOW).count == 0
    # Disk rules never touch custodial copies.
    disk = _candidate("r4", "s:f")
    assert plan_deletion(_request([disk], placement=placement), Protections(), now=NOW).count == 1


def test_pins_end_and_are_scoped_to_their_rse():
    c = _candidate("r1", "s:d", rses=frozenset({"BASE_OODS"}))
    at_cache = Protections(pins={"s:d": (PinFact(frozenset({"BASE_OODS"}), LATER, "c"),)})
    elsewhere = Protections(pins={"s:d": (PinFact(frozenset({"NCSA_DISK"}), None, "c"),)})
    ended = Protections(pins={"s:d": (PinFact(None, EARLIER, "c"),)})
    assert plan_deletion(_request([c]), at_cache, now=NOW).count == 0
    assert plan_deletion(_request([c]), elsewhere, now=NOW).count == 1
    assert plan_deletion(_request([c]), ended, now=NOW).count == 1


def test_limits_block_until_an_approval_names_this_plan():
    candidates = [_candidate(f"r{i}", size=1000) for i in range(3)]
    limits = Limits(max_bytes=2500)
    blocked = plan_deletion(_request(candidates, limits=limits), Protections(), now=NOW)
    assert blocked.mode is Mode.BLOCKED
    assert blocked.blocked_reason == "MaxDeleteBytesExceeded"
    assert blocked.hash in blocked.reason
    other = _approval(plan_hash="0123456789abcdef")
    still = plan_deletion(
        _request(candidates, limits=limits, approval=other), Protections(), now=NOW
    )
    assert still.mode is Mode.BLOCKED
    assert "0123456789abcdef, not this one" in still.reason
    right = _approval(plan_hash=blocked.hash)
    assert (
        plan_deletion(
            _request(candidates, limits=limits, approval=right), Protections(), now=NOW
        ).mode
        is Mode.ACT
    )
    # The approval does not carry over to a larger plan.
    larger = [*candidates, _candidate("r9", size=1000)]
    grown = plan_deletion(_request(larger, limits=limits, approval=right), Protections(), now=NOW)
    assert grown.mode is Mode.BLOCKED
    fraction = Limits(max_fraction=0.5, scope_bytes=4000)
    assert (
        plan_deletion(_request(candidates, limits=fraction), Protections(), now=NOW).blocked_reason
        == "MaxDeleteFractionExceeded"
    )


def test_freeze_and_dry_run_never_act():
    c = _candidate("r1", rses=frozenset({"NCSA_DISK"}))
    site = Protections(frozen_rses={"NCSA_DISK": "Site/ncsa: restore"})
    plan = plan_deletion(_request([c]), site, now=NOW)
    assert plan.mode is Mode.FROZEN
    assert "restore" in plan.reason
    assert plan.count == 1  # shown, not carried out
    elsewhere = Protections(frozen_rses={"IN2P3_DISK": "Site/in2p3: restore"})
    assert plan_deletion(_request([c]), elsewhere, now=NOW).mode is Mode.ACT
    everything = Protections(freeze_all="incident 42")
    assert plan_deletion(_request([c]), everything, now=NOW).mode is Mode.FROZEN
    assert plan_deletion(_request([c], dry_run=True), everything, now=NOW).mode is Mode.DRY_RUN


def test_plan_reports_bytes_per_rse_and_site_and_a_sample():
    a = _candidate("r1", "s:a", rses=frozenset({"NCSA_DISK"}), size=10)
    b = _candidate("r2", "s:b", rses=frozenset({"IN2P3_DISK"}), size=20)
    protections = Protections(site_of={"NCSA_DISK": "NCSA", "IN2P3_DISK": "IN2P3"})
    plan = plan_deletion(_request([b, a]), protections, now=NOW)
    assert plan.bytes_by_rse() == {"IN2P3_DISK": 20, "NCSA_DISK": 10}
    assert plan.bytes_by_site() == {"IN2P3": 20, "NCSA": 10}
    assert plan.sample() == ["s:a", "s:b"]
    assert plan.summary() == "would expire 2 rules of 2 DIDs (30 B)"
    assert plan.lines()[0].startswith(f"deletion plan {plan.hash} (Acting)")


# --- properties ---------------------------------------------------------------------------------

DIDS = [f"s:d{i}" for i in range(6)] + ["user.jdoe:x", "user.kcarter:y"]
RSES = ["NCSA_DISK", "NCSA_TAPE", "IN2P3_TAPE", "BASE_OODS"]
CUSTODIAL = frozenset({"NCSA_TAPE", "IN2P3_TAPE"})
OWNERS = {"user.jdoe:x": "jdoe", "user.kcarter:y": "kcarter"}


@st.composite
def scenarios(draw):
    count = draw(st.integers(0, 14))
    candidates = []
    for index in range(count):
        did = draw(st.sampled_from(DIDS))
        rses = frozenset(draw(st.sets(st.sampled_from(RSES), min_size=1, max_size=2)))
        candidates.append(
            Candidate(
                key=f"r{index:02d}",
                did=did,
                bytes=draw(st.integers(0, 10**6)),
                rses=rses,
                reason="Age",
                owner=OWNERS.get(did),
                tag=draw(st.sampled_from([None, "steward:mine", "steward:theirs"])),
            )
        )
    subset = st.sets(st.sampled_from(DIDS), max_size=4)
    until = st.sampled_from([EARLIER, LATER])
    keepers = {
        did: frozenset(draw(st.sets(st.sampled_from(["k1", "k2"]), max_size=1)))
        for did in draw(subset)
    }
    protections = Protections(
        legal_holds=dict.fromkeys(draw(subset), "RetentionPolicy/ns/h"),
        compliance_locks={did: draw(until) for did in draw(subset)},
        governance_locks={did: draw(until) for did in draw(subset)},
        pins={did: (PinFact(None, draw(until), "c"),) for did in draw(subset)},
        campaigns=Facts(
            inputs=dict.fromkeys(draw(subset), "drp"),
            reviews=dict.fromkeys(draw(subset), "pilot"),
        ),
    )
    bypass = draw(st.sets(st.sampled_from(list(Bypass))))
    approval = draw(st.sampled_from([None, _approval(bypass=sorted(bypass))]))
    request = _request(
        candidates,
        placement=Placement(CUSTODIAL, keepers),
        own_tags=frozenset({"steward:mine"}),
        owner=draw(st.sampled_from([None, "kcarter"])),
        approval=approval,
    )
    return request, protections


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_no_plan_removes_protected_data(scenario):
    request, protections = scenario
    plan = plan_deletion(request, protections, now=NOW)
    bypass = set(request.approval.bypass) if request.approval else set()
    removed = {c.key for c in plan.removals}
    assert removed | {s.candidate.key for s in plan.saved} == {c.key for c in request.candidates}
    assert not removed & {s.candidate.key for s in plan.saved}
    for candidate in plan.removals:
        did = candidate.did
        assert did not in protections.legal_holds
        assert protections.compliance_locks.get(did, EARLIER) <= NOW
        if Bypass.GOVERNANCE_LOCK not in bypass:
            assert protections.governance_locks.get(did, EARLIER) <= NOW
        assert all(pin.until <= NOW for pin in protections.pins.get(did, ()))
        assert did not in protections.campaigns.inputs
        assert did not in protections.campaigns.reviews
        if candidate.owner is not None and candidate.owner != request.owner:
            assert Bypass.OWNER in bypass
        assert candidate.tag in {None, "steward:mine"}
    for did in {c.did for c in request.candidates}:
        touching = [c for c in request.candidates if c.did == did and c.rses & CUSTODIAL]
        if not touching:
            continue
        keepers = set(request.placement.keepers.get(did, ())) | {
            c.key for c in touching if c.rses <= CUSTODIAL
        }
        if keepers:
            assert keepers - removed, f"the last custodial rule of {did} was removed"
        else:
            assert not {c.key for c in touching} & removed


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms())
def test_the_plan_hash_does_not_depend_on_order(scenario, rng):
    request, protections = scenario
    shuffled = list(request.candidates)
    rng.shuffle(shuffled)
    first = plan_deletion(request, protections, now=NOW)
    second = plan_deletion(replace(request, candidates=shuffled), protections, now=NOW)
    assert first.hash == second.hash
    assert first.removals == second.removals


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.integers(0, 3 * 10**6))
def test_a_plan_over_its_limit_never_acts_without_its_own_hash(scenario, limit):
    request, protections = scenario
    limited = replace(request, limits=Limits(max_bytes=limit), approval=None)
    plan = plan_deletion(limited, protections, now=NOW)
    if plan.bytes > limit:
        assert plan.mode is Mode.BLOCKED
        wrong = replace(limited, approval=_approval(plan_hash="f" * 16))
        if plan.hash != "f" * 16:
            assert plan_deletion(wrong, protections, now=NOW).mode is Mode.BLOCKED
        right = replace(limited, approval=_approval(plan_hash=plan.hash))
        assert plan_deletion(right, protections, now=NOW).mode is Mode.ACT
    else:
        assert plan.mode is Mode.ACT


def test_a_policy_waits_for_its_compliance_locks_before_it_can_go():
    lock = {"name": "survey", "mode": "Compliance", "until": LATER.isoformat(), "dids": ["s:d"]}
    policy = RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"selector": {"dids": ["s:d"]}, "lifetime": "1d", "locks": [lock]},
        }
    )
    assert locks_in_force(policy, None, NOW) == [f"survey (until {LATER:%Y-%m-%dT%H:%M:%S}Z)"]
    assert locks_in_force(policy, None, LATER) == []
    bare = policy.model_copy(update={"spec": policy.spec.model_copy(update={"locks": []})})
    remembered = {"complianceLocks": [lock]}
    assert locks_in_force(bare, remembered, NOW)  # dropped from the spec, still in force
    protections = protections_from(
        policies=[
            RetentionPolicy.model_validate({**bare.model_dump(by_alias=True), "status": remembered})
        ],
        now=NOW,
    )
    assert protections.compliance_locks == {"s:d": LATER}


def test_a_plan_is_carried_out_only_after_a_pass_showed_its_generation_or_approved():
    assert not shown_first({}, 1)  # a new resource: its first pass only shows
    assert not shown_first({"observedGeneration": 1}, 2)  # changed since
    assert shown_first({"observedGeneration": 2}, 2)
    assert shown_first({"observedGeneration": None}, None)  # a ref without a generation
    assert shown_first({"observedGeneration": 1}, 2, approved=True)  # names this plan's hash
