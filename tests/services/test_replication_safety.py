"""ReplicationService never loses data under faults, partial answers or odd names.

Every scenario runs against the real Rucio server (its daemons and transmogrifier included);
faults are injected only where a real server cannot be made to fail on cue (`Faults`).
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steward.constants import ANNOTATION_APPROVE_RELEASE
from steward.exceptions import RucioPermanentError
from steward.models.replication import ReplicationRule
from steward.services.audit import AuditService
from steward.services.ownership import owner_tag, subscription_name
from steward.services.replication import (
    LEGACY_TAG_PREFIX,
    ORPHANED_PREFIX,
    RELEASED_PREFIX,
    ReleaseLimit,
    ReplicationService,
    RuleSnapshot,
)
from steward.storage.audit import AuditFilter
from steward.storage.rucio import RuleSpec, RuleState, SubscriptionSpec
from support.rucio import Faults
from support.samples import replication_ref

pytestmark = pytest.mark.rucio

NAMESPACE = "safety"
CLUSTER = "test-cluster"


def _service(rucio, audit, **options):
    # Every pass lists the whole selection (a full resync each time): the brake and the
    # other guards here act on full listings; tests/services/test_incremental_selection.py
    # covers the incremental passes between resyncs.
    options.setdefault("full_resync", timedelta(0))
    return ReplicationService(rucio=rucio, audit=audit, cluster_id=CLUSTER, **options)


@pytest.fixture
def service(rucio_storage, audit):
    return _service(rucio_storage, audit)


def _uid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _resource(name, destination="NCSA_DISK", *, dids=None, match=None, scope=None, **spec):
    selector = {"dids": dids} if dids is not None else {"scope": scope, "match": match}
    annotations = spec.pop("annotations", {})
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {
                "name": name,
                "namespace": spec.pop("namespace", NAMESPACE),
                "uid": _uid(name),
                "annotations": annotations,
            },
            "spec": {"selector": selector, "destination": destination, **spec},
        }
    )


def _tag(resource):
    return owner_tag(CLUSTER, resource.metadata.uid)


def _owned(rucio, resource):
    return rucio.list_rules(comment=_tag(resource))


def _name(rucio_data, label):
    return f"{label}-{rucio_data.scope}"


def _condition(outcome, type_):
    return next(c for c in outcome.status["conditions"] if c["type"] == type_)


def _reasons(outcome):
    return [reason for _, reason, _ in outcome.events]


# -- deletion fails safe -------------------------------------------------------------------------


def _custodial_lookup(expression, *_args, **_kwargs):
    return "custodial" in expression


def test_a_rucio_error_while_deciding_never_makes_the_policy_delete(
    rucio_storage, rucio_data, audit
):
    # The custodial lookup answers 503: unsure, so Orphan; the locked tape rule is kept.
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "unsure"), "NCSA_TAPE", dids=[dataset])
    faults = Faults(rucio_storage)
    faults.fail("list_rses", _custodial_lookup)
    service = _service(faults, audit)
    outcome = service.reconcile(resource, replication_ref(resource))
    assert outcome.status["deletionPolicy"] == "Orphan"
    (rule,) = _owned(rucio_storage, resource)
    assert rule.locked  # Rucio locks tape rules without a lifetime

    events = service.finalize(replication_ref(resource), resource.spec, outcome.status)
    assert [reason for _, reason, _ in events] == ["RulesOrphaned"]
    after = rucio_storage.get_rule(rule.id)
    assert after.expires_at is None
    assert after.locked
    assert after.comment == ORPHANED_PREFIX + _tag(resource)


def test_the_default_policy_is_decided_once_and_kept(rucio_storage, rucio_data, audit):
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "decided"), "NCSA_TAPE", dids=[dataset])
    outcome = _service(rucio_storage, audit).reconcile(resource, replication_ref(resource))
    assert outcome.status["deletionPolicy"] == "Orphan"
    # Later the lookup fails: the decision in status stands, nobody asks Rucio again.
    faults = Faults(rucio_storage)
    faults.fail("list_rses", _custodial_lookup)
    service = _service(faults, audit)
    again = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert again.status["deletionPolicy"] == "Orphan"
    service.finalize(replication_ref(resource), resource.spec, again.status)
    (rule,) = rucio_storage.list_rules(comment=ORPHANED_PREFIX + _tag(resource))
    assert rule.expires_at is None


def test_a_destination_with_any_custodial_rse_orphans_by_default(
    rucio_storage, rucio_data, service
):
    # site=NCSA selects NCSA_DISK and NCSA_TAPE: a copy may land on tape, so Orphan.
    resource = _resource(_name(rucio_data, "mixed"), "site=NCSA", dids=[rucio_data.dataset()])
    outcome = service.reconcile(resource, replication_ref(resource))
    assert outcome.status["deletionPolicy"] == "Orphan"
    disk = _resource(_name(rucio_data, "disk"), "NCSA_DISK", dids=[rucio_data.dataset()])
    assert service.reconcile(disk, replication_ref(disk)).status["deletionPolicy"] == "Delete"


def test_a_finalize_without_any_recorded_decision_and_no_answer_orphans(
    rucio_storage, rucio_data, audit
):
    # A first pass created the rule and crashed before its status was written; at deletion
    # Rucio cannot say whether the destination is custodial.
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "nostatus"), "NCSA_TAPE", dids=[dataset])
    _service(rucio_storage, audit).reconcile(resource, replication_ref(resource), first_pass=True)
    faults = Faults(rucio_storage)
    faults.fail("list_rses", _custodial_lookup)
    _service(faults, audit).finalize(replication_ref(resource), resource.spec, None)
    (rule,) = rucio_storage.list_rules(comment=ORPHANED_PREFIX + _tag(resource))
    assert rule.expires_at is None


# -- deselection brake ---------------------------------------------------------------------------


def test_a_did_missing_from_one_listing_keeps_its_rule(rucio_storage, rucio_data, service):
    kept, leaving = (rucio_data.dataset(meta={"datatype": "raw"}) for _ in range(2))
    resource = _resource(
        _name(rucio_data, "once"),
        scope=rucio_data.scope,
        match={"datatype": "raw"},
        deletionPolicy="Delete",
    )
    outcome = service.reconcile(resource, replication_ref(resource))
    assert outcome.status["selected"] == 2
    rucio_storage.set_metadata(leaving, {"datatype": "calexp"})

    first = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert "RulesDeleted" not in _reasons(first)
    assert all(r.expires_at is None for r in _owned(rucio_storage, resource))

    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert "RulesDeleted" in _reasons(second)
    gone = rucio_storage.list_rules(comment=RELEASED_PREFIX + _tag(resource))
    assert [r.did for r in gone] == [leaving]
    assert [r.did for r in _owned(rucio_storage, resource)] == [kept]


def test_a_listing_that_comes_back_is_not_released(rucio_storage, rucio_data, service):
    datasets = [rucio_data.dataset(meta={"datatype": "raw"}) for _ in range(2)]
    resource = _resource(
        _name(rucio_data, "flap"), scope=rucio_data.scope, match={"datatype": "raw"}
    )
    outcome = service.reconcile(resource, replication_ref(resource))
    rucio_storage.set_metadata(datasets[0], {"datatype": "calexp"})
    outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    rucio_storage.set_metadata(datasets[0], {"datatype": "raw"})  # the listing was wrong
    outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert sorted(r.did for r in _owned(rucio_storage, resource)) == sorted(datasets)
    assert "RulesDeleted" not in _reasons(outcome)


def test_a_large_release_waits_for_an_acknowledgement_naming_its_count(
    rucio_storage, rucio_data, audit
):
    datasets = [rucio_data.dataset(files=1) for _ in range(6)]
    service = _service(rucio_storage, audit, release_limit=ReleaseLimit(max_rules=3))
    name = _name(rucio_data, "brake")
    resource = _resource(name, dids=datasets, deletionPolicy="Delete")
    outcome = service.reconcile(resource, replication_ref(resource))
    assert len(_owned(rucio_storage, resource)) == 6

    smaller = _resource(name, dids=datasets[:1], deletionPolicy="Delete")
    held = service.reconcile(smaller, replication_ref(smaller, 2), outcome.status)
    assert held.status["pendingRelease"] == 5
    degraded = _condition(held, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ReleaseHeld")
    assert f"{ANNOTATION_APPROVE_RELEASE}=5" in degraded["message"]
    assert ("Warning", "ReleaseHeld") in [(t, r) for t, r, _ in held.events]
    assert len(_owned(rucio_storage, resource)) == 6

    again = service.reconcile(smaller, replication_ref(smaller, 2), held.status)
    assert again.events == []  # still held; the Event was posted once
    wrong = _resource(
        name,
        dids=datasets[:1],
        deletionPolicy="Delete",
        annotations={ANNOTATION_APPROVE_RELEASE: "4"},
    )
    still = service.reconcile(wrong, replication_ref(wrong, 2), again.status)
    assert still.status["pendingRelease"] == 5
    assert len(_owned(rucio_storage, resource)) == 6

    approved = _resource(
        name,
        dids=datasets[:1],
        deletionPolicy="Delete",
        annotations={ANNOTATION_APPROVE_RELEASE: "5"},
    )
    done = service.reconcile(approved, replication_ref(approved, 2), still.status)
    assert "RulesDeleted" in _reasons(done)
    assert done.annotations == {ANNOTATION_APPROVE_RELEASE: None}  # an approval is used once
    assert done.status.get("pendingRelease", 0) == 0
    assert _condition(done, "Degraded")["status"] == "False"
    assert [r.did for r in _owned(rucio_storage, resource)] == datasets[:1]
    intents = audit.query(AuditFilter(name=name, action="rucio.rule.release"))
    assert [e.result for e in intents] == ["intent"]


def test_an_empty_listing_never_releases_everything(rucio_storage, rucio_data, service):
    # A metadata key renamed: the selection comes back empty, pass after pass.
    datasets = [rucio_data.dataset(meta={"datatype": "raw"}) for _ in range(3)]
    resource = _resource(
        _name(rucio_data, "empty"),
        scope=rucio_data.scope,
        match={"datatype": "raw"},
        deletionPolicy="Delete",
    )
    outcome = service.reconcile(resource, replication_ref(resource))
    for dataset in datasets:
        rucio_storage.set_metadata(dataset, {"datatype": "calexp"})
    for _ in range(3):
        outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert outcome.status["pendingRelease"] == 3
    assert _condition(outcome, "Degraded")["reason"] == "ReleaseHeld"
    assert len(_owned(rucio_storage, resource)) == 3
    assert all(r.expires_at is None for r in _owned(rucio_storage, resource))


# -- adoption only of what Steward made ------------------------------------------------------------


def test_a_hand_made_rule_of_the_same_account_is_reported_not_adopted(
    rucio_storage, rucio_data, service
):
    dataset = rucio_data.dataset()
    hand_made = rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK", comment="keep: Alice"))
    resource = _resource(_name(rucio_data, "foreign"), dids=[dataset], deletionPolicy="Delete")
    outcome = service.reconcile(resource, replication_ref(resource))
    assert _owned(rucio_storage, resource) == []
    assert outcome.status["foreign"] == 1
    degraded = _condition(outcome, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ForeignRule")
    assert "ForeignRule" in _reasons(outcome)
    service.finalize(replication_ref(resource), resource.spec, outcome.status)
    rule = rucio_storage.get_rule(hand_made)
    assert (rule.comment, rule.expires_at) == ("keep: Alice", None)


def test_an_edited_tag_is_foreign_and_not_retried_every_pass(rucio_storage, rucio_data, service):
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "edited"), dids=[dataset])
    outcome = service.reconcile(resource, replication_ref(resource))
    (rule,) = _owned(rucio_storage, resource)
    rucio_storage.update_rule(rule.id, comment=_tag(resource) + " (moved by Bob)")
    outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert outcome.status["foreign"] == 1
    assert _condition(outcome, "Degraded")["reason"] == "ForeignRule"
    calls = rucio_storage.api_calls
    again = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert again.status["foreign"] == 1
    assert again.events == []
    # One listing of the resource's rules, one of the foreign rule: no add, no duplicate.
    assert rucio_storage.api_calls - calls <= 2


def test_a_rule_with_this_resources_legacy_tag_is_taken_over_once(
    rucio_storage, rucio_data, service, audit
):
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "legacy"), dids=[dataset])
    legacy = f"{LEGACY_TAG_PREFIX}{NAMESPACE}/{resource.metadata.name}"
    old = rucio_storage.add_rule(dataset, RuleSpec("NCSA_DISK", comment=legacy))
    subscription = f"steward-{NAMESPACE}-{resource.metadata.name}"  # its old name
    rucio_storage.add_subscription(
        SubscriptionSpec(
            name=subscription,
            filter={"scope": [rucio_data.scope], "did_type": ["DATASET"]},
            rules=[RuleSpec("NCSA_DISK", comment=legacy)],
            comments=legacy,
        )
    )
    status = {"observedGeneration": 1}  # reconciled by a Steward before owner tags
    outcome = service.reconcile(resource, replication_ref(resource), status)
    assert [r.id for r in _owned(rucio_storage, resource)] == [old]
    assert rucio_storage.get_subscription(subscription).state == "INACTIVE"
    assert outcome.status["ownerTag"] == _tag(resource)
    assert _condition(outcome, "Degraded")["status"] == "False"
    actions = [e.action for e in audit.query(AuditFilter(name=resource.metadata.name))]
    assert "rucio.rule.retag" in actions


# -- subscriptions ---------------------------------------------------------------------------------


def _subscription(rucio, resource):
    return rucio.get_subscription(subscription_name(CLUSTER, resource.metadata.uid))


def test_a_datatype_filter_is_sent_as_rucio_schema_wants(rucio_storage, rucio_data, service):
    resource = _resource(
        _name(rucio_data, "schema"), scope=rucio_data.scope, match={"datatype": "raw"}
    )
    service.reconcile(resource, replication_ref(resource))
    subscription = _subscription(rucio_storage, resource)
    assert subscription.filter["datatype"] == ["^raw$"]
    assert subscription.filter["scope"] == [f"^{rucio_data.scope}$"]


def test_subscriptions_match_dr1_exactly_not_dr10(rucio_storage, rucio_data, rucio_server, service):
    resource = _resource(
        _name(rucio_data, "dr1"),
        scope=rucio_data.scope,
        match={"version": "DR1"},
        deletionPolicy="Delete",
    )
    service.reconcile(resource, replication_ref(resource))
    dr1 = rucio_data.dataset("dr1-new", meta={"version": "DR1"})
    dr10 = rucio_data.dataset("dr10-new", meta={"version": "DR10"})
    rucio_server.daemons.run("transmogrifier")
    placed = {r.did for r in rucio_storage.list_rules(scope=rucio_data.scope)}
    assert dr1 in placed
    assert dr10 not in placed


def test_the_subscription_is_deactivated_whenever_it_may_not_place_data(
    rucio_storage, rucio_data, rucio_server, service
):
    name = _name(rucio_data, "sub")
    match = {"version": "v1"}
    spec = {"scope": rucio_data.scope, "match": match}
    resource = _resource(name, **spec)
    outcome = service.reconcile(resource, replication_ref(resource))
    assert _subscription(rucio_storage, resource).state != "INACTIVE"

    observing = _resource(name, managementPolicy="Observe", **spec)
    outcome = service.reconcile(observing, replication_ref(observing, 2), outcome.status)
    assert _subscription(rucio_storage, resource).state == "INACTIVE"
    rucio_data.dataset("while-observing", meta=match)
    rucio_server.daemons.run("transmogrifier")
    assert _owned(rucio_storage, resource) == []

    outcome = service.reconcile(resource, replication_ref(resource, 3), outcome.status)
    assert _subscription(rucio_storage, resource).state != "INACTIVE"
    window = _resource(
        name, transferWindow={"start": "00:00", "end": "23:59", "timezone": "UTC"}, **spec
    )
    outcome = service.reconcile(window, replication_ref(window, 4), outcome.status)
    assert _subscription(rucio_storage, resource).state == "INACTIVE"

    outcome = service.reconcile(resource, replication_ref(resource, 5), outcome.status)
    service.finalize(replication_ref(resource, 5), resource.spec, outcome.status)
    assert _subscription(rucio_storage, resource).state == "INACTIVE"


def test_subscription_names_of_look_alike_resources_differ(rucio_storage, rucio_data, service):
    # steward-{namespace}-{name} gave a-b/c and a/b-c one subscription.
    first = _resource(
        "c-" + rucio_data.scope, namespace="a-b", scope=rucio_data.scope, match={"version": "x"}
    )
    second = _resource(
        "b-c-" + rucio_data.scope, namespace="a", scope=rucio_data.scope, match={"version": "y"}
    )
    service.reconcile(first, replication_ref(first))
    service.reconcile(second, replication_ref(second))
    assert _subscription(rucio_storage, first).filter["version"] == ["^x$"]
    assert _subscription(rucio_storage, second).filter["version"] == ["^y$"]


# -- transfer windows ------------------------------------------------------------------------------


def test_closing_a_window_leaves_other_accounts_transfers_alone(
    rucio_storage, rucio_data, rucio_server, other_accounts, audit
):
    dataset = rucio_data.dataset()
    other = other_accounts.create()
    theirs = other.add_rule(dataset, RuleSpec("IN2P3_DISK", comment="someone else's"))
    name = _name(rucio_data, "window")
    resource = _resource(
        name,
        "IN2P3_DISK",
        dids=[dataset],
        transferWindow={"start": "22:00", "end": "06:00", "timezone": "UTC"},
    )
    clock = {"now": datetime(2026, 11, 23, 23, 0, tzinfo=UTC)}
    service = _service(rucio_storage, audit, clock=lambda: clock["now"])
    service.reconcile(resource, replication_ref(resource))
    (ours,) = _owned(rucio_storage, resource)
    assert ours.state is RuleState.REPLICATING

    clock["now"] = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    outcome = service.reconcile(resource, replication_ref(resource))
    assert "TransfersPaused" in _reasons(outcome)
    assert rucio_storage.get_rule(ours.id).state is RuleState.SUSPENDED
    assert other.get_rule(theirs).state is RuleState.REPLICATING  # not STUCK
    rucio_server.daemons.converge()
    assert other.get_rule(theirs).state is RuleState.OK


# -- records that tell the truth ------------------------------------------------------------------


def test_rules_of_completed_batches_are_audited_when_a_later_batch_fails(
    rucio_storage, rucio_data, audit
):
    datasets = sorted(rucio_data.dataset() for _ in range(4))
    missing = rucio_data.did("zz-never-registered")
    name = _name(rucio_data, "batches")
    resource = _resource(name, dids=[*datasets, missing])
    service = _service(rucio_storage, audit, batch_size=2)
    with pytest.raises(RucioPermanentError):
        service.reconcile(resource, replication_ref(resource))
    added = audit.query(AuditFilter(name=name, action="rucio.rule.add"))
    done = [e for e in added if e.result == "success"]
    assert sorted(e.target for e in done) == sorted(r.id for r in _owned(rucio_storage, resource))
    assert len(done) == 4
    assert [e.result for e in added if e.result != "success"] == ["intent"] * 3 + ["failure"]


def test_each_transfer_gate_change_is_audited_as_it_is_made(
    rucio_storage, rucio_data, rucio_server, audit
):
    datasets = sorted(rucio_data.dataset() for _ in range(2))
    name = _name(rucio_data, "gate")
    resource = _resource(
        name,
        "IN2P3_DISK",
        dids=datasets,
        transferWindow={"start": "22:00", "end": "06:00", "timezone": "UTC"},
    )
    clock = {"now": datetime(2026, 11, 23, 23, 0, tzinfo=UTC)}
    snapshot = RuleSnapshot(rucio_storage, max_age=3600)
    service = _service(rucio_storage, audit, clock=lambda: clock["now"], snapshot=snapshot)
    outcome = service.reconcile(resource, replication_ref(resource))
    first, second = sorted(_owned(rucio_storage, resource), key=lambda r: r.did)
    # The second rule goes away between the snapshot and the window closing.
    rucio_storage.update_rule(second.id, lifetime=timedelta(0))
    rucio_server.daemons.run("judge-cleaner")
    clock["now"] = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    service.reconcile(resource, replication_ref(resource), outcome.status, fresh=False)
    suspended = audit.query(AuditFilter(name=name, action="rucio.rule.suspend"))
    assert [e.target for e in suspended if e.result == "success"] == [first.id]
    assert [e.result for e in suspended if e.target != first.id] == ["intent"]
    assert rucio_storage.get_rule(first.id).state is RuleState.SUSPENDED


def test_a_publish_is_audited_before_rucio_is_asked(
    rucio_storage, rucio_data, rucio_server, audit, service
):
    dataset = rucio_data.dataset()
    container = rucio_data.did("published")
    rucio_storage.add_container(container)
    rucio_storage.close_collection(container)  # attaching to it will fail
    name = _name(rucio_data, "publish")
    resource = _resource(name, "NCSA_TAPE", dids=[dataset], publish=True, publishTo=container)
    outcome = service.reconcile(resource, replication_ref(resource))
    rucio_server.daemons.converge()
    with pytest.raises(RucioPermanentError):
        service.reconcile(resource, replication_ref(resource), outcome.status)
    rows = audit.query(AuditFilter(name=name, action="rucio.did.publish"))
    assert [(e.target, e.result) for e in rows] == [(container, "intent"), (container, "failure")]
    assert dataset in rows[0].after


def test_a_source_preference_in_another_order_is_not_rewritten_every_pass(
    rucio_storage, rucio_data, service, audit
):
    name = _name(rucio_data, "source")
    resource = _resource(
        name, "IN2P3_DISK", dids=[rucio_data.dataset()], sourcePreference="type=DISK&site=NCSA"
    )
    outcome = service.reconcile(resource, replication_ref(resource))
    for _ in range(2):
        outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
        assert outcome.events == []
    assert audit.query(AuditFilter(name=name, action="rucio.rule.update")) == []


# -- lifetimes and soft deletion ------------------------------------------------------------------


def _clocked(rucio, audit, clock):
    """A service and audit trail that both read ``clock`` (Steward's time, moved by tests)."""
    trail = AuditService(audit.sessions, clock=lambda: clock["now"])
    return _service(rucio, trail, clock=lambda: clock["now"])


def test_a_copy_with_a_lifetime_is_not_placed_again_once_it_expired(
    rucio_storage, rucio_data, rucio_server, audit
):
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "cache"), dids=[dataset], lifetime="30d")
    start = datetime.now(UTC)
    clock = {"now": start}
    service = _clocked(rucio_storage, audit, clock)
    outcome = service.reconcile(resource, replication_ref(resource))
    (rule,) = _owned(rucio_storage, resource)
    assert rule.expires_at is not None

    # A month goes by, for Rucio (the rule ages and judge-cleaner removes it) and Steward.
    month = timedelta(days=31)
    assert rucio_server.daemons.age_rule(rule.id, month.total_seconds()) == 1
    rucio_server.daemons.run("judge-cleaner")
    assert _owned(rucio_storage, resource) == []
    clock["now"] = start + month
    outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert _owned(rucio_storage, resource) == []
    assert outcome.status["expired"] == 1
    assert _condition(outcome, "Ready")["status"] == "True"
    again = service.reconcile(resource, replication_ref(resource), outcome.status, fresh=True)
    assert _owned(rucio_storage, resource) == []
    assert again.events == []


def test_a_lifetime_copy_deleted_early_comes_back_until_its_first_placement_ends(
    rucio_storage, rucio_data, rucio_server, audit
):
    dataset = rucio_data.dataset()
    resource = _resource(_name(rucio_data, "early"), dids=[dataset], lifetime="30d")
    start = datetime.now(UTC)
    clock = {"now": start}
    service = _clocked(rucio_storage, audit, clock)
    outcome = service.reconcile(resource, replication_ref(resource))
    (rule,) = _owned(rucio_storage, resource)
    rucio_storage.update_rule(rule.id, lifetime=timedelta(0))  # someone removed it
    rucio_server.daemons.run("judge-cleaner")
    clock["now"] = start + timedelta(days=10)  # ten days after the first placement
    outcome = service.reconcile(resource, replication_ref(resource), outcome.status)
    assert "RulesCreated" in _reasons(outcome)
    (again,) = _owned(rucio_storage, resource)
    assert again.id != rule.id
    remaining = again.expires_at - datetime.now(UTC)  # Rucio counts from its own now
    assert abs(remaining - timedelta(days=20)) < timedelta(minutes=5)


def test_orphan_hands_over_a_rule_that_merely_expires_soon(rucio_storage, rucio_data, service):
    # Only a rule Steward itself deleted is skipped: one expiring within the hour by its own
    # lifetime is still this resource's and is handed over like the others.
    resource = _resource(
        _name(rucio_data, "soon"), dids=[rucio_data.dataset()], deletionPolicy="Orphan"
    )
    outcome = service.reconcile(resource, replication_ref(resource))
    (rule,) = _owned(rucio_storage, resource)
    rucio_storage.update_rule(rule.id, lifetime=timedelta(minutes=30))
    service.finalize(replication_ref(resource), resource.spec, outcome.status)
    assert rucio_storage.get_rule(rule.id).comment == ORPHANED_PREFIX + _tag(resource)


def test_a_released_rule_is_taken_back_when_its_did_is_selected_again(
    rucio_storage, rucio_data, service
):
    datasets = [rucio_data.dataset() for _ in range(2)]
    name = _name(rucio_data, "back")
    both = _resource(name, dids=datasets, deletionPolicy="Delete")
    outcome = service.reconcile(both, replication_ref(both))
    one = _resource(name, dids=datasets[:1], deletionPolicy="Delete")
    outcome = service.reconcile(one, replication_ref(one, 2), outcome.status)
    outcome = service.reconcile(one, replication_ref(one, 2), outcome.status)
    (released,) = rucio_storage.list_rules(comment=RELEASED_PREFIX + _tag(both))
    assert released.expires_at is not None
    outcome = service.reconcile(one, replication_ref(one, 2), outcome.status)
    assert "RulesDeleted" not in _reasons(outcome)  # released once, never again
    outcome = service.reconcile(both, replication_ref(both, 3), outcome.status)
    back = rucio_storage.get_rule(released.id)
    assert (back.comment, back.expires_at) == (_tag(both), None)
    assert len(_owned(rucio_storage, both)) == 2
