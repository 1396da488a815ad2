"""RetentionService against the real Rucio server, with an injected clock (no sleeping).

Rules are created in Rucio the way users and other tools create them; the policy's clock is
moved past their lifetime; what the gate lets go is expired in Rucio, judge-cleaner removes
it, and everything else is untouched.
"""

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from steward.services.audit import AuditService, ResourceRef
from steward.services.deletion import ABANDONED, DONE, INTENT, DeletionGate, Mode
from steward.services.plan import RetentionPreview, Volume
from steward.services.protections import ClusterFacts, protections_of
from steward.services.retention import RetentionService, preview_plan
from steward.storage.audit import AuditFilter
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.rucio import File, RuleSpec

pytestmark = pytest.mark.rucio

NAMESPACE = "steward"


@pytest.fixture
def audit(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield AuditService(make_sessionmaker(engine))
    engine.dispose()


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(rucio_storage, audit, clock):
    gate = DeletionGate(rucio_storage, audit, clock=clock)
    return RetentionService(rucio_storage, audit, gate, clock=clock)


def _policy(name, dids, **spec):
    return RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": secrets.token_hex(8)},
            "spec": {"selector": {"dids": dids}, "lifetime": "21d", **spec},
        }
    )


def _ref(policy, generation=1):
    return ResourceRef(
        kind="RetentionPolicy",
        namespace=NAMESPACE,
        name=policy.metadata.name,
        uid=policy.metadata.uid,
        generation=generation,
    )


def _rules(rucio_storage, datasets, rse="NCSA_DISK"):
    return {d: rucio_storage.add_rule(d, RuleSpec(rse_expression=rse)) for d in datasets}


def _expired(rucio_storage, rule_id):
    rule = rucio_storage.get_rule(rule_id)
    return rule.expires_at is not None and rule.expires_at <= datetime.now(UTC) + timedelta(
        minutes=1
    )


def _scratch_scope(rucio_storage, owner):
    scope = f"user.{owner}"
    rucio_storage.add_scope(scope)
    return scope


def _dataset(rucio_storage, did, rse="NCSA_DISK", files=2):
    members = [File(f"{did}.f{i}", bytes=1000 + i) for i in range(files)]
    rucio_storage.add_replicas(rse, members)
    rucio_storage.add_dataset(did)
    rucio_storage.attach(did, [f.did for f in members])
    return did


def test_scratch_expires_on_schedule_and_held_data_does_not(
    service, rucio_storage, rucio_data, rucio_server, clock
):
    # Scratch outputs live in the developer's user scope (Rucio's convention, SCIVAL1).
    owner = f"u{secrets.token_hex(4)}"
    scope = _scratch_scope(rucio_storage, owner)
    datasets = [_dataset(rucio_storage, f"{scope}:run-{i}") for i in range(3)]
    rules = _rules(rucio_storage, datasets)
    held = datasets[2]
    policy = _policy(
        f"scratch-{rucio_data.scope}",
        datasets,
        rses="NCSA_DISK",
        dataClass="Scratch",
        owner=owner,
        holds=[held],
    )
    facts = ClusterFacts(policies=[policy])

    clock.advance(timedelta(days=20))
    early = service.reconcile(policy, _ref(policy), facts)
    assert early.status["mode"] == "Acting"
    assert early.status["plan"]["rules"] == 0
    assert not any(_expired(rucio_storage, r) for r in rules.values())

    clock.advance(timedelta(days=2))
    due = service.reconcile(policy, _ref(policy), facts, early.status)
    assert due.status["plan"]["rules"] == 2
    assert due.status["plan"]["protected"] == {"LegalHold": 1}
    assert due.status["removed"] == 2
    assert ("Normal", "Expired") in [(t, r) for t, r, _ in due.events]
    assert _expired(rucio_storage, rules[datasets[0]])
    assert _expired(rucio_storage, rules[datasets[1]])
    assert not _expired(rucio_storage, rules[held])

    rucio_server.daemons.run("judge-cleaner")
    remaining = {r.id for r in rucio_storage.list_rules(scope=scope)}
    assert remaining == {rules[held]}
    again = service.reconcile(policy, _ref(policy), facts, due.status)
    assert again.status["plan"]["rules"] == 0
    assert again.status["removed"] == 0


def test_a_new_policy_shows_its_plan_first_so_a_hold_applied_beside_it_is_in_force(
    service, rucio_storage, rucio_data, clock
):
    """``steward apply`` creates a deleting policy and another policy's hold at once.

    The operator's index of policies may not hold the hold at the new policy's first pass:
    that pass only shows the plan; the next one acts, with the hold in force.
    """
    held, free = (rucio_data.dataset() for _ in range(2))
    rules = _rules(rucio_storage, [held, free])
    policy = _policy(f"beside-{rucio_data.scope}", [held, free])
    holder = _policy(f"holder-{rucio_data.scope}", [held], lifetime="3650d", holds=[held])
    clock.advance(timedelta(days=22))

    shown = service.reconcile(policy, _ref(policy), ClusterFacts())  # no hold known yet
    assert (shown.status["mode"], shown.status["plan"]["rules"]) == ("Acting", 2)
    assert shown.status["removed"] == 0
    assert not any(_expired(rucio_storage, r) for r in rules.values())
    conditions = {c["type"]: c for c in shown.status["conditions"]}
    assert (conditions["Ready"]["reason"], conditions["Progressing"]["status"]) == (
        "PlanShown",
        "True",
    )
    assert [(t, r) for t, r, _ in shown.events] == [("Normal", "PlanShown")]

    facts = ClusterFacts(policies=[holder])
    acted = service.reconcile(policy, _ref(policy), facts, shown.status)
    assert acted.status["plan"]["protected"] == {"LegalHold": 1}
    assert acted.status["removed"] == 1
    assert _expired(rucio_storage, rules[free])
    assert not _expired(rucio_storage, rules[held])

    # A changed spec is a new generation: shown again before anything more goes.
    more = rucio_data.dataset()
    later = _rules(rucio_storage, [more])[more]
    changed = _policy(policy.metadata.name, [held, free, more])
    again = service.reconcile(changed, _ref(policy, 2), facts, acted.status)
    assert again.status["removed"] == 0
    assert not _expired(rucio_storage, later)


def test_another_developers_scratch_needs_an_approval(service, rucio_storage, rucio_data, clock):
    theirs = _scratch_scope(rucio_storage, f"u{secrets.token_hex(4)}")
    did = _dataset(rucio_storage, f"{theirs}:output")
    rule = rucio_storage.add_rule(did, RuleSpec(rse_expression="NCSA_DISK"))
    policy = _policy(
        f"other-{rucio_data.scope}", [did], dataClass="Scratch", owner="kcarter", action="Delete"
    )
    clock.advance(timedelta(days=22))
    refused = service.reconcile(policy, _ref(policy), ClusterFacts())
    assert refused.status["plan"]["protected"] == {"Owner": 1}
    assert not _expired(rucio_storage, rule)
    approved = _policy(
        policy.metadata.name,
        [did],
        dataClass="Scratch",
        owner="kcarter",
        action="Delete",
        approval={
            "approvedBy": theirs.removeprefix("user."),
            "reason": "my run, delete it",
            "approvedAt": "2026-11-22T00:00:00Z",
            "bypass": ["Owner"],
        },
    )
    shown = service.reconcile(approved, _ref(policy, 2), ClusterFacts(), refused.status)
    assert shown.status["removed"] == 0  # the approval names no plan hash: shown first
    done = service.reconcile(approved, _ref(policy, 2), ClusterFacts(), shown.status)
    assert done.status["removed"] == 1
    assert rucio_storage.get_rule(rule).expires_at is not None  # deleted: expires within the hour


def test_failed_campaign_outputs_survive_until_the_review(
    service, rucio_storage, rucio_data, clock
):
    datasets = [rucio_data.dataset() for _ in range(2)]
    rules = _rules(rucio_storage, datasets)
    spec = {"dataClass": "FailedCampaignOutputs", "campaign": "drp-pilot", "reviewDone": False}
    policy = _policy(f"failed-{rucio_data.scope}", datasets, **spec)
    clock.advance(timedelta(days=30))
    waiting = service.reconcile(policy, _ref(policy), ClusterFacts(policies=[policy]))
    assert waiting.status["plan"]["protected"] == {"FailedCampaignReview": 2}
    assert not any(_expired(rucio_storage, r) for r in rules.values())
    reviewed = _policy(policy.metadata.name, datasets, **{**spec, "reviewDone": True})
    facts = ClusterFacts(policies=[reviewed])
    shown = service.reconcile(reviewed, _ref(policy, 2), facts, waiting.status)
    assert shown.status["removed"] == 0
    done = service.reconcile(reviewed, _ref(policy, 2), facts, shown.status)
    assert done.status["removed"] == 2
    assert all(_expired(rucio_storage, r) for r in rules.values())


def test_a_plan_over_the_limit_blocks_until_its_own_hash_is_approved(
    service, rucio_storage, rucio_data, clock, audit
):
    datasets = [rucio_data.dataset() for _ in range(3)]
    rules = _rules(rucio_storage, datasets)
    name = f"limit-{rucio_data.scope}"
    policy = _policy(name, datasets, maxDeleteBytes="4000B")
    clock.advance(timedelta(days=22))
    blocked = service.reconcile(policy, _ref(policy), ClusterFacts())
    assert blocked.status["mode"] == "Blocked"
    digest = blocked.status["plan"]["hash"]
    ready = next(c for c in blocked.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MaxDeleteBytesExceeded")
    assert digest in ready["message"]
    assert ("Warning", "PlanBlocked") in [(t, r) for t, r, _ in blocked.events]

    approval = {"approvedBy": "ops", "reason": "checked", "approvedAt": "2026-11-22T00:00:00Z"}
    wrong = _policy(
        name, datasets, maxDeleteBytes="4000B", approval={**approval, "planHash": "0" * 16}
    )
    still = service.reconcile(wrong, _ref(policy, 2), ClusterFacts(), blocked.status)
    assert still.status["mode"] == "Blocked"
    assert not any(_expired(rucio_storage, r) for r in rules.values())

    right = _policy(
        name, datasets, maxDeleteBytes="4000B", approval={**approval, "planHash": digest}
    )
    acted = service.reconcile(right, _ref(policy, 3), ClusterFacts(), still.status)
    assert acted.status["mode"] == "Acting"
    assert acted.status["removed"] == 3
    assert all(_expired(rucio_storage, r) for r in rules.values())
    entries = audit.query(AuditFilter(name=name))
    actions = [e.action for e in entries]
    assert actions.index(INTENT) < actions.index(DONE)
    intent = json.loads(next(e for e in entries if e.action == INTENT).after)
    assert intent["plan"] == digest
    assert sorted(r["id"] for r in intent["rules"]) == sorted(rules.values())


def test_a_site_freeze_or_the_operator_flag_stops_deletion(
    service, rucio_storage, rucio_data, clock
):
    datasets = [rucio_data.dataset()]
    rules = _rules(rucio_storage, datasets)
    policy = _policy(f"freeze-{rucio_data.scope}", datasets)
    ncsa = rucio_data.sites.ncsa.model_dump(by_alias=True, exclude_none=True)
    ncsa["spec"]["deletionFreeze"] = {"reason": "restore of NCSA_TAPE in progress"}
    frozen_site = Site.model_validate(ncsa)
    clock.advance(timedelta(days=22))
    frozen = service.reconcile(policy, _ref(policy), ClusterFacts(sites=[frozen_site]))
    assert frozen.status["mode"] == "Frozen"
    assert frozen.status["plan"]["rules"] == 1
    assert "restore of NCSA_TAPE" in next(
        c["message"] for c in frozen.status["conditions"] if c["type"] == "Ready"
    )
    flagged = service.reconcile(
        policy, _ref(policy), ClusterFacts(freeze="incident 42"), frozen.status
    )
    assert flagged.status["mode"] == "Frozen"
    assert not _expired(rucio_storage, rules[datasets[0]])
    thawed_facts = ClusterFacts(sites=[rucio_data.sites.ncsa])
    thawed = service.reconcile(policy, _ref(policy), thawed_facts, flagged.status)
    assert thawed.status["removed"] == 1  # the frozen passes showed the plan


def test_dry_run_never_acts_and_the_preview_shows_the_plan(
    service, rucio_storage, rucio_data, clock
):
    datasets = [rucio_data.dataset() for _ in range(2)]
    rules = _rules(rucio_storage, datasets)
    policy = _policy(f"dry-{rucio_data.scope}", datasets, dryRun=True, action="Delete")
    clock.advance(timedelta(days=22))
    outcome = service.reconcile(policy, _ref(policy), ClusterFacts())
    assert outcome.status["mode"] == "DryRun"
    assert outcome.status["plan"]["rules"] == 2
    assert not any(_expired(rucio_storage, r) for r in rules.values())
    preview = RetentionPreview(rucio_storage, clock=clock)
    body = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    (impact,) = preview.consequences(None, body, None)
    assert (impact.action, impact.rules) == ("delete", 2)
    files = sum(len(rucio_storage.list_files(did)) for did in datasets)
    size = sum(f.bytes for did in datasets for f in rucio_storage.list_files(did))
    assert impact.release == {"NCSA_DISK": Volume(files, size)}
    assert impact.deletable == {"NCSA_DISK": Volume(files, size)}  # no other rule locks them
    assert impact.gate["mode"] == "DryRun"
    assert impact.line().startswith("Rucio: delete 2 rules: release NCSA_DISK: ")


def test_custodial_copies_and_other_resources_rules_stay(service, rucio_storage, rucio_data, clock):
    dataset = rucio_data.dataset()
    tape = rucio_storage.add_rule(dataset, RuleSpec(rse_expression="NCSA_TAPE"))
    owned = rucio_storage.add_rule(
        dataset, RuleSpec(rse_expression="IN2P3_DISK", comment="steward:0123456789abcdef01234567")
    )
    policy = _policy(f"tape-{rucio_data.scope}", [dataset], action="Delete")
    clock.advance(timedelta(days=22))
    outcome = service.reconcile(policy, _ref(policy), ClusterFacts())
    assert outcome.status["plan"]["protected"] == {
        "OtherResource": 1,
        "LastCustodialReplica": 1,
    }
    assert rucio_storage.get_rule(tape).expires_at is None
    assert rucio_storage.get_rule(owned).expires_at is None


def test_an_intent_left_open_by_a_kill_is_closed_on_restart(
    rucio_storage, rucio_data, clock, audit
):
    datasets = [rucio_data.dataset() for _ in range(3)]
    rules = _rules(rucio_storage, datasets)
    policy = _policy(f"kill-{rucio_data.scope}", datasets)
    ref = _ref(policy)

    class Killed(BaseException):
        """The operator process dies (SIGKILL) in the middle of a batch."""

    class DyingGate(DeletionGate):
        def _remove(self, candidate, operation, grace):
            if candidate.key == sorted(rules.values())[1]:
                raise Killed
            return super()._remove(candidate, operation, grace)

    clock.advance(timedelta(days=22))
    protections = protections_of(ClusterFacts(), rucio_storage, now=clock())
    plan = preview_plan(rucio_storage, policy, protections, now=clock(), requester="x")
    assert plan.mode is Mode.ACT
    with pytest.raises(Killed):
        DyingGate(rucio_storage, audit, clock=clock).carry_out(plan, ref)
    where = AuditFilter(name=ref.name)
    assert [e.action for e in audit.query(where)] == [INTENT]

    gate = DeletionGate(rucio_storage, audit, clock=clock)
    recovery = gate.recover(ref)
    first = min(rules.values())
    assert recovery.carried_out == (first,)
    assert sorted(recovery.abandoned) == sorted(rules.values())[1:]
    assert [e.action for e in audit.query(where)] == [INTENT, ABANDONED]
    assert gate.recover(ref) is None

    service = RetentionService(rucio_storage, audit, gate, clock=clock)
    before_the_kill = {"observedGeneration": ref.generation}  # the pass that showed the plan
    outcome = service.reconcile(policy, ref, ClusterFacts(), before_the_kill)
    assert outcome.status["removed"] == 2
    assert all(_expired(rucio_storage, r) for r in rules.values())


def test_a_shortened_compliance_lock_stays_in_force(service, rucio_storage, rucio_data, clock):
    dataset = rucio_data.dataset()
    rule = _rules(rucio_storage, [dataset])[dataset]
    until = (clock() + timedelta(days=365)).isoformat()
    lock = {"name": "survey", "mode": "Compliance", "until": until, "dids": [dataset]}
    policy = _policy(f"lock-{rucio_data.scope}", [dataset], locks=[lock])
    clock.advance(timedelta(days=22))
    first = service.reconcile(policy, _ref(policy), ClusterFacts(policies=[policy]))
    assert first.status["plan"]["protected"] == {"ComplianceLock": 1}
    assert first.status["complianceLocks"][0]["name"] == "survey"
    # Someone removes the lock behind the API server's back (admission would refuse it).
    bare = _policy(policy.metadata.name, [dataset])
    remembered = RetentionPolicy.model_validate(
        {**bare.model_dump(mode="json", by_alias=True), "status": first.status}
    )
    facts = ClusterFacts(policies=[remembered])
    second = service.reconcile(bare, _ref(policy, 2), facts, first.status)
    assert second.status["plan"]["protected"] == {"ComplianceLock": 1}
    degraded = next(c for c in second.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ComplianceLockShortened")
    assert rucio_storage.get_rule(rule).expires_at is None
