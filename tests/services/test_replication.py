"""ReplicationService against the real Rucio server: create, adopt, change, drift, delete."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steward.exceptions import RucioTransientError
from steward.models.replication import ReplicationRule
from steward.services.audit import ResourceRef
from steward.services.ownership import owner_tag
from steward.services.replication import (
    ORPHANED_PREFIX,
    STATUS_SAMPLE,
    ExpressionCache,
    ReplicationService,
    RuleSnapshot,
)
from steward.storage.audit import AuditFilter
from steward.storage.rucio import File, RuleState
from steward.testing.childprocess import poll

pytestmark = pytest.mark.rucio

NAMESPACE = "steward"
CLUSTER = "test-cluster"


@pytest.fixture
def service(rucio_storage, audit):
    return ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER)


def _resource(name, dids, destination="NCSA_TAPE", copies=1, **spec):
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
            "spec": {
                "selector": {"dids": dids},
                "destination": destination,
                "copies": copies,
                **spec,
            },
        }
    )


def _uid(name):
    """The resource's UID (names are unique per test, so one UID per name)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _ref(name, generation=1):
    return ResourceRef(
        kind="ReplicationRule",
        namespace=NAMESPACE,
        name=name,
        uid=_uid(name),
        generation=generation,
    )


def _tag(name):
    return owner_tag(CLUSTER, _uid(name))


def _owned(rucio_storage, name):
    return rucio_storage.list_rules(comment=_tag(name))


def _name(rucio_data, label):
    return f"{label}-{rucio_data.scope}"


def _replica_rses(rucio_storage, dataset):
    """RSEs holding an AVAILABLE replica of every file of the dataset."""
    states = rucio_storage.list_replicas([dataset])
    per_file = [
        {rse for rse, state in rses.items() if state == "AVAILABLE"} for rses in states.values()
    ]
    return set.intersection(*per_file) if per_file else set()


def test_creates_one_rule_per_did_and_becomes_ready(
    service, rucio_storage, rucio_data, rucio_server
):
    datasets = [rucio_data.dataset() for _ in range(3)]
    name = _name(rucio_data, "create")
    outcome = service.reconcile(_resource(name, datasets), _ref(name))
    assert outcome.status["selected"] == 3
    assert len(outcome.status["ruleIds"]) == 3
    assert ("Normal", "RulesCreated", "created 3 Rucio rules") in outcome.events
    assert _ready(outcome) == "False"

    rucio_server.daemons.converge()
    outcome = service.reconcile(_resource(name, datasets), _ref(name), outcome.status)
    assert outcome.status["counts"]["OK"] == 3
    assert _ready(outcome) == "True"
    assert all(_replica_rses(rucio_storage, d) >= {"NCSA_TAPE"} for d in datasets)


def test_reconcile_is_idempotent(service, rucio_storage, rucio_data):
    datasets = [rucio_data.dataset() for _ in range(4)]
    name = _name(rucio_data, "idem")
    for _ in range(3):
        service.reconcile(_resource(name, datasets), _ref(name))
    rules = _owned(rucio_storage, name)
    assert sorted(r.did for r in rules) == sorted(datasets)


def test_a_first_pass_repeated_after_a_crash_adopts_what_it_created(
    service, rucio_storage, rucio_data
):
    # A first pass skips listing the resource's rules; if it crashed before writing the
    # status, the next first pass creates them again, meets DuplicateRule and adopts.
    datasets = [rucio_data.dataset() for _ in range(3)]
    name = _name(rucio_data, "first")
    created = service.reconcile(_resource(name, datasets), _ref(name), first_pass=True)
    again = service.reconcile(_resource(name, datasets), _ref(name), first_pass=True)
    rules = _owned(rucio_storage, name)
    assert sorted(r.did for r in rules) == sorted(datasets)
    assert again.status["ruleIds"] == created.status["ruleIds"] == sorted(r.id for r in rules)
    assert again.status["counts"]["REPLICATING"] == 3


def test_copies_one_two_one_never_below_declared(service, rucio_storage, rucio_data, rucio_server):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "copies")
    # Disks only: a reduce over tape RSEs could drop the only custodial copy, and the
    # deletion gate keeps that (tests/services/test_change_gate.py).
    expression = "(site=NCSA&type=DISK)|(site=IN2P3&type=DISK)"
    service.reconcile(_resource(name, [dataset], expression, copies=1), _ref(name))
    rucio_server.daemons.converge()
    assert len(_replica_rses(rucio_storage, dataset)) >= 1

    outcome = service.reconcile(_resource(name, [dataset], expression, copies=2), _ref(name, 2))
    assert any(reason == "RuleChanged" for _, reason, _ in outcome.events)
    assert len(_replica_rses(rucio_storage, dataset)) >= 1
    rucio_server.daemons.converge()
    outcome = service.reconcile(_resource(name, [dataset], expression, copies=2), _ref(name, 2))
    assert len(_replica_rses(rucio_storage, dataset)) >= 2
    assert _ready(outcome) == "True"

    service.reconcile(_resource(name, [dataset], expression, copies=1), _ref(name, 3))
    assert len(_replica_rses(rucio_storage, dataset)) >= 1
    rucio_server.daemons.converge()
    outcome = service.reconcile(_resource(name, [dataset], expression, copies=1), _ref(name, 3))
    assert _ready(outcome) == "True"
    in_charge = [r for r in _owned(rucio_storage, name) if r.copies == 1]
    assert len(in_charge) == 1


def test_destination_change_moves_without_losing_the_copy(
    service, rucio_storage, rucio_data, rucio_server
):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "move")
    service.reconcile(_resource(name, [dataset], "NCSA_TAPE"), _ref(name))
    rucio_server.daemons.converge()
    service.reconcile(_resource(name, [dataset], "IN2P3_TAPE"), _ref(name, 2))
    assert "NCSA_TAPE" in _replica_rses(rucio_storage, dataset)
    rucio_server.daemons.converge()
    outcome = service.reconcile(_resource(name, [dataset], "IN2P3_TAPE"), _ref(name, 2))
    assert "IN2P3_TAPE" in _replica_rses(rucio_storage, dataset)
    assert _ready(outcome) == "True"
    assert {r.rse_expression for r in _owned(rucio_storage, name)} >= {"IN2P3_TAPE"}


def test_drift_is_restored(service, rucio_storage, rucio_data, rucio_server):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "drift")
    service.reconcile(_resource(name, [dataset]), _ref(name))
    (rule,) = _owned(rucio_storage, name)
    rucio_storage.delete_rule(rule.id, unlock=True)
    assert rucio_storage.get_rule(rule.id).expires_at is not None
    outcome = service.reconcile(_resource(name, [dataset]), _ref(name))
    assert any(reason == "DriftRestored" for _, reason, _ in outcome.events)
    assert rucio_storage.get_rule(rule.id).expires_at is None

    rucio_storage.update_rule(rule.id, locked=False)
    rucio_storage.update_rule(rule.id, lifetime=timedelta(0))
    rucio_server.daemons.run("judge-cleaner")
    assert _owned(rucio_storage, name) == []
    outcome = service.reconcile(_resource(name, [dataset]), _ref(name))
    (recreated,) = _owned(rucio_storage, name)
    assert recreated.id != rule.id
    assert outcome.status["ruleIds"] == [recreated.id]


@pytest.mark.parametrize("policy", ["Delete", "Orphan"])
def test_deletion_policy(service, rucio_storage, rucio_data, policy):
    datasets = [rucio_data.dataset() for _ in range(2)]
    name = _name(rucio_data, policy.lower())
    resource = _resource(name, datasets, "NCSA_DISK", deletionPolicy=policy)
    service.reconcile(resource, _ref(name))
    ids = {r.id for r in _owned(rucio_storage, name)}
    events = service.finalize(_ref(name), resource.spec)
    assert events[0][1] == f"Rules{'Deleted' if policy == 'Delete' else 'Orphaned'}"
    assert service.finalize(_ref(name), resource.spec) == []
    after = {rule_id: rucio_storage.get_rule(rule_id) for rule_id in ids}
    if policy == "Delete":
        assert all(rule.expires_at is not None for rule in after.values())
    else:
        assert all(rule.expires_at is None for rule in after.values())
        assert all(rule.comment.startswith(ORPHANED_PREFIX) for rule in after.values())


def test_custodial_destinations_orphan_by_default(service, rucio_sites):
    # The RSEs must exist: about an expression selecting nothing Rucio cannot say, so Orphan.
    spec = _resource("x", ["a:b"], "NCSA_TAPE").spec
    assert service.deletion_policy(spec)[0].value == "Orphan"
    spec = _resource("x", ["a:b"], "NCSA_DISK").spec
    assert service.deletion_policy(spec)[0].value == "Delete"


def test_closed_transfer_window_creates_nothing(service, rucio_storage, rucio_data):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "window")
    now = datetime.now(UTC)
    closed_start = (now + timedelta(hours=2)).strftime("%H:%M")
    closed_end = (now + timedelta(hours=3)).strftime("%H:%M")
    resource = _resource(
        name,
        [dataset],
        transferWindow={"start": closed_start, "end": closed_end, "timezone": "UTC"},
    )
    outcome = service.reconcile(resource, _ref(name))
    assert _owned(rucio_storage, name) == []
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "WaitingForTransferWindow"
    assert 3600 < outcome.requeue_after < 3 * 3600


def test_embargo_then_release(rucio_storage, rucio_data, audit):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "embargo")
    until = datetime.now(UTC) + timedelta(days=1)
    resource = _resource(name, [dataset], notBefore=until.isoformat())
    early = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER)
    early.reconcile(resource, _ref(name))
    assert _owned(rucio_storage, name) == []
    later = ReplicationService(
        rucio=rucio_storage,
        audit=audit,
        clock=lambda: until + timedelta(seconds=1),
        cluster_id=CLUSTER,
    )
    later.reconcile(resource, _ref(name))
    assert len(_owned(rucio_storage, name)) == 1


def test_observe_only_reports(service, rucio_storage, rucio_data):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "observe")
    outcome = service.reconcile(_resource(name, [dataset], managementPolicy="Observe"), _ref(name))
    assert _owned(rucio_storage, name) == []
    assert outcome.events == []
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Observing"


def test_every_action_is_audited(service, rucio_data, audit):
    datasets = [rucio_data.dataset() for _ in range(2)]
    name = _name(rucio_data, "audited")
    service.reconcile(_resource(name, datasets), _ref(name, 7))
    entries = audit.query(AuditFilter(name=name, action="rucio.rule.add"))
    assert [e.result for e in entries] == ["intent", "success", "success"]
    assert {e.generation for e in entries} == {7}
    assert all(e.target for e in entries[1:])
    assert audit.verify() == []


def test_stuck_rules_show_degraded(service, rucio_storage, rucio_data, rucio_server):
    dataset = rucio_data.dataset(files=1)
    name = _name(rucio_data, "stuck")
    rucio_storage.set_replicas_available(
        "NCSA_DISK", rucio_data.files_of(dataset, 1), available=False
    )
    outcome = service.reconcile(_resource(name, [dataset], "IN2P3_DISK"), _ref(name))
    rucio_server.daemons.converge()
    outcome = service.reconcile(
        _resource(name, [dataset], "IN2P3_DISK"), _ref(name), outcome.status
    )
    (rule,) = _owned(rucio_storage, name)
    assert rule.state is RuleState.STUCK
    degraded = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RulesStuck")
    assert outcome.status["counts"]["STUCK"] == 1


def _ready(outcome):
    return next(c["status"] for c in outcome.status["conditions"] if c["type"] == "Ready")


def test_two_resources_never_steal_one_rucio_rule(service, rucio_storage, rucio_data):
    dataset = rucio_data.dataset()
    first, second = _name(rucio_data, "first"), _name(rucio_data, "second")
    service.reconcile(_resource(first, [dataset], "NCSA_DISK"), _ref(first))
    outcome = service.reconcile(_resource(second, [dataset], "NCSA_DISK"), _ref(second))
    assert [r.did for r in _owned(rucio_storage, first)] == [dataset]
    assert _owned(rucio_storage, second) == []
    assert any(reason == "SharedRule" for _, reason, _ in outcome.events)
    degraded = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SharedRule")
    assert _tag(first) in degraded["message"]
    events = service.finalize(
        _ref(second), _resource(second, [dataset], "NCSA_DISK", deletionPolicy="Delete").spec
    )
    assert events == []
    assert rucio_storage.list_rules(comment=_tag(first))[0].expires_at is None


def test_publish_only_after_the_custodial_copy_is_ok(
    service, rucio_storage, rucio_data, rucio_server, audit
):
    dataset = rucio_data.dataset()
    container = rucio_data.did("published")
    name = _name(rucio_data, "publish")
    resource = _resource(name, [dataset], "NCSA_TAPE", publish=True, publishTo=container)
    outcome = service.reconcile(resource, _ref(name))
    assert outcome.status["published"] == 0
    assert rucio_storage.is_open(dataset)
    assert not any(reason == "Published" for _, reason, _ in outcome.events)

    rucio_server.daemons.converge()
    outcome = service.reconcile(resource, _ref(name), outcome.status)
    assert ("Normal", "Published", f"published 1 datasets to {container}") in outcome.events
    assert outcome.status["published"] == 1
    assert rucio_storage.list_content(container) == [dataset]
    assert not rucio_storage.is_open(dataset)
    published = audit.query(AuditFilter(action="rucio.did.publish", result="success"))
    assert [e.target for e in published] == [dataset]

    again = service.reconcile(resource, _ref(name), outcome.status)
    assert again.events == []
    assert again.status["published"] == 1


class CountingListings:
    """The real adapter, counting bulk listings (a spy: every call still reaches Rucio)."""

    def __init__(self, storage):
        self.storage = storage
        self.listings = 0

    def list_rules(self, **filters):
        self.listings += 1
        return self.storage.list_rules(**filters)


def test_timer_reconciles_share_one_listing(rucio_storage, rucio_data, audit):
    names = [_name(rucio_data, f"snap{i}") for i in range(5)]
    datasets = {name: rucio_data.dataset() for name in names}
    clock = {"now": 0.0}
    counting = CountingListings(rucio_storage)
    snapshot = RuleSnapshot(counting, max_age=60, clock=lambda: clock["now"])
    service = ReplicationService(
        rucio=rucio_storage, audit=audit, snapshot=snapshot, cluster_id=CLUSTER
    )
    for name in names:
        service.reconcile(_resource(name, [datasets[name]], "NCSA_DISK"), _ref(name))
    for now, listings in ((1.0, 1), (30.0, 1), (62.0, 2)):
        clock["now"] = now
        for name in names:
            outcome = service.reconcile(
                _resource(name, [datasets[name]], "NCSA_DISK"), _ref(name), fresh=False
            )
            assert outcome.events == []
            assert outcome.status["ruleIds"]
        assert counting.listings == listings  # one bulk listing per interval, for all five


class CountingRSEListings:
    """The real adapter, counting RSE expression listings (every call still reaches Rucio)."""

    def __init__(self, storage):
        self.storage = storage
        self.listings = 0

    def list_rses(self, expression="*"):
        self.listings += 1
        return self.storage.list_rses(expression)

    def __getattr__(self, name):
        return getattr(self.storage, name)


def test_new_resources_share_the_custodial_lookups(rucio_storage, rucio_data, audit):
    counting = CountingRSEListings(rucio_storage)
    service = ReplicationService(
        rucio=counting, audit=audit, cluster_id=CLUSTER, expressions=ExpressionCache(60)
    )
    for index in range(3):
        name = _name(rucio_data, f"shared{index}")
        outcome = service.reconcile(
            _resource(name, [rucio_data.dataset()], "NCSA_TAPE"), _ref(name)
        )
        assert outcome.status["deletionPolicy"] == "Orphan"
    assert counting.listings == 2  # the destination and the custodial RSEs, once for all


class HeldRSEListings:
    """The real adapter, whose RSE listings wait until the test lets them go; the first one
    can be made to fail (after waiting) as a Rucio that refuses."""

    def __init__(self, storage, *, fail_first=False):
        self.storage = storage
        self.started = threading.Event()
        self.go = threading.Event()
        self.calls = 0
        self.fail_first = fail_first

    def list_rses(self, expression="*"):
        self.calls += 1
        self.started.set()
        assert self.go.wait(60)
        if self.fail_first and self.calls == 1:
            raise RucioTransientError("Rucio refused the listing (the test's fault)")
        return self.storage.list_rses(expression)


def _ask_together(cache, held, callers):
    """``callers`` threads ask ``cache`` one expression while the first listing is held."""
    answers, errors = [], []

    def ask():
        try:
            answers.append(cache.rses(held, "NCSA_TAPE"))
        except RucioTransientError as error:
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(callers)]
    threads[0].start()
    assert held.started.wait(30)
    for thread in threads[1:]:
        thread.start()
    poll(lambda: cache.waiting == callers - 1, timeout=30, what="the others wait")
    held.go.set()
    for thread in threads:
        thread.join(30)
    return answers, errors


def test_an_expression_is_listed_once_for_callers_asking_together(rucio_storage, rucio_sites):
    held = HeldRSEListings(rucio_storage)
    cache = ExpressionCache(60, clock=lambda: 0.0)
    answers, errors = _ask_together(cache, held, 4)
    assert (held.calls, cache.listings, errors) == (1, 1, [])
    assert answers == [frozenset({"NCSA_TAPE"})] * 4


def test_a_failed_listing_is_not_shared_with_those_waiting_for_it(rucio_storage, rucio_sites):
    held = HeldRSEListings(rucio_storage, fail_first=True)
    cache = ExpressionCache(60, clock=lambda: 0.0)
    answers, errors = _ask_together(cache, held, 4)
    assert len(errors) == 1  # the caller whose listing failed, and only it
    assert held.calls == 2  # one waiting caller asked again; the rest had its answer
    assert answers == [frozenset({"NCSA_TAPE"})] * 3


def test_window_closing_suspends_and_reopening_resumes(
    rucio_storage, rucio_data, rucio_server, audit
):
    dataset = rucio_data.dataset()
    name = _name(rucio_data, "suspend")
    resource = _resource(
        name,
        [dataset],
        "IN2P3_DISK",
        transferWindow={"start": "22:00", "end": "06:00", "timezone": "UTC"},
    )
    night = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    day = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    clock = {"now": night}
    service = ReplicationService(
        rucio=rucio_storage, audit=audit, clock=lambda: clock["now"], cluster_id=CLUSTER
    )
    service.reconcile(resource, _ref(name))
    (rule,) = _owned(rucio_storage, name)
    assert rule.state is RuleState.REPLICATING

    clock["now"] = day
    outcome = service.reconcile(resource, _ref(name))
    assert any(reason == "TransfersPaused" for _, reason, _ in outcome.events)
    assert rucio_storage.get_rule(rule.id).state is RuleState.SUSPENDED
    # Transfers queued before the window closed finish (cancelling them would cancel them
    # for every other rule waiting for the same files); nothing new is queued for the rule.
    rucio_server.daemons.converge()
    assert rucio_storage.get_rule(rule.id).state is RuleState.SUSPENDED
    late = File(f"{dataset}.late", bytes=500)
    rucio_storage.add_replicas("NCSA_DISK", [late])
    rucio_storage.attach(dataset, [late.did])
    rucio_server.daemons.converge()
    assert "IN2P3_DISK" not in rucio_storage.list_replicas([late.did])[late.did]

    clock["now"] = night + timedelta(days=1)
    outcome = service.reconcile(resource, _ref(name))
    assert any(reason == "TransfersResumed" for _, reason, _ in outcome.events)
    rucio_server.daemons.age_locks(rule.id, 21 * 3600)  # the day went by, for Rucio too
    rucio_server.daemons.run("judge-repairer")
    rucio_server.daemons.converge()
    assert rucio_storage.get_rule(rule.id).state is RuleState.OK
    replicas = rucio_storage.list_replicas([*rucio_data.files_of(dataset), late.did])
    assert all(states.get("IN2P3_DISK") == "AVAILABLE" for states in replicas.values())


class HeldListings:
    """The real adapter, whose bulk listing (not by comment) waits until the test lets it go."""

    def __init__(self, storage):
        self.storage = storage
        self.started = threading.Event()
        self.go = threading.Event()
        self.calls = []

    def list_rules(self, **filters):
        self.calls.append(filters)
        if "comment" not in filters:  # the first listing (all) or a later one (what changed)
            self.started.set()
            self.go.wait(60)
        return self.storage.list_rules(**filters)


def test_a_slow_listing_makes_no_timer_queue_behind_it(rucio_storage, rucio_data, audit):
    """One thread lists every rule; the others use the snapshot while it is young enough,
    then list their own rules: none waits for the bulk listing (it may hang)."""
    name = _name(rucio_data, "slow")
    dataset = rucio_data.dataset()
    clock = {"now": 0.0}
    held = HeldListings(rucio_storage)
    snapshot = RuleSnapshot(held, max_age=60, clock=lambda: clock["now"])
    service = ReplicationService(
        rucio=rucio_storage, audit=audit, snapshot=snapshot, cluster_id=CLUSTER
    )
    outcome = service.reconcile(_resource(name, [dataset], "NCSA_DISK"), _ref(name))
    tag = outcome.status["ownerTag"]
    held.go.set()
    assert len(snapshot.rules(tag)) == 1  # the first listing
    held.go.clear()
    held.started.clear()
    clock["now"] = 61.0
    lister = threading.Thread(target=snapshot.rules, args=(tag,))
    lister.start()
    assert held.started.wait(30)
    assert len(snapshot.rules(tag)) == 1  # the previous snapshot, 61 s old
    clock["now"] = 121.0
    assert len(snapshot.rules(tag)) == 1  # too old: its own listing
    assert held.calls[-1] == {"comment": tag}
    assert lister.is_alive()  # all the while, the bulk listing was held
    held.go.set()
    lister.join(30)
    assert not lister.is_alive()


def test_status_samples_rule_ids_and_release_reads_rucio_not_status(
    service, rucio_storage, rucio_data
):
    # More rules than the status sample: counts say how many, the sample is the first ids in
    # order (stable between passes), and deleting the resource releases every rule, those
    # beyond the sample too, since the release lists them from Rucio by owner tag.
    datasets = [rucio_data.dataset(files=1) for _ in range(STATUS_SAMPLE + 5)]
    name = _name(rucio_data, "sample")
    resource = _resource(name, datasets, "NCSA_DISK", deletionPolicy="Delete")
    first = service.reconcile(resource, _ref(name))
    again = service.reconcile(resource, _ref(name), first.status)
    rules = _owned(rucio_storage, name)
    assert len(rules) == STATUS_SAMPLE + 5
    assert first.status["ruleCount"] == again.status["ruleCount"] == STATUS_SAMPLE + 5
    assert again.status["ruleIds"] == sorted(r.id for r in rules)[:STATUS_SAMPLE]
    assert first.status["ruleIds"] == again.status["ruleIds"]

    service.finalize(_ref(name), resource.spec, again.status)
    assert all(rucio_storage.get_rule(r.id).expires_at is not None for r in rules)
    assert _owned(rucio_storage, name) == []
