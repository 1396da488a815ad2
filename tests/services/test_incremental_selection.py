"""Incremental selection against the real Rucio server: the high-water mark and the resync.

After one full listing, a metadata-selected ReplicationRule lists only DIDs created (or whose
custom metadata changed) since the mark its status keeps. These tests cover what the mark
must survive: a restart, DIDs created while a pass lists, metadata changes, and the periodic
full resync that finds what no time bound shows.
"""

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from steward.exceptions import RucioPermanentError
from steward.models.replication import ReplicationRule
from steward.services.arrivals import ArrivalFeed
from steward.services.ownership import owner_tag
from steward.services.replication import RELEASED_PREFIX, ReplicationService
from support.samples import replication_ref

pytestmark = pytest.mark.rucio

NAMESPACE = "incremental"
CLUSTER = "test-cluster"
RAW = {"datatype": "raw"}


class Recording:
    """The real adapter, recording which verbs were called; ``after`` runs a hook on return."""

    def __init__(self, storage, after=None):
        self._storage = storage
        self._after = after or {}
        self.calls = []

    def __getattr__(self, name):
        attribute = getattr(self._storage, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self.calls.append(name)
            result = attribute(*args, **kwargs)
            if name in self._after:
                self._after[name]()
            return result

        return call


def _service(rucio, audit, **options):
    return ReplicationService(rucio=rucio, audit=audit, cluster_id=CLUSTER, **options)


def _resource(name, match, **spec):
    selector = {"scope": spec.pop("scope"), "match": match}
    if "exclude" in spec:
        selector["exclude"] = spec.pop("exclude")
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            },
            "spec": {"selector": selector, "destination": "NCSA_DISK", **spec},
        }
    )


def _placed(rucio, resource):
    """DIDs with a rule of the resource, each counted (a duplicate would count twice)."""
    return Counter(
        r.did for r in rucio.list_rules(comment=owner_tag(CLUSTER, resource.metadata.uid))
    )


def _name(rucio_data, label):
    return f"{label}-{rucio_data.scope}"


def test_after_a_restart_a_tick_lists_only_new_dids(rucio_storage, rucio_data, audit):
    existing = [rucio_data.dataset(meta=RAW, files=1) for _ in range(3)]
    resource = _resource(_name(rucio_data, "restart"), RAW, scope=rucio_data.scope)
    first = _service(rucio_storage, audit).reconcile(resource, replication_ref(resource))
    selection = first.status["selection"]
    assert selection["mode"] == "Full"
    assert selection["highWaterMark"] is not None
    assert selection["generation"] == 1

    new = rucio_data.dataset(meta=RAW, files=1)
    recording = Recording(rucio_storage)
    # A new process: nothing in memory, only the status the API server kept.
    restarted = _service(recording, audit)
    second = restarted.reconcile(resource, replication_ref(resource), first.status, fresh=True)
    assert second.status["selection"]["mode"] == "Incremental"
    assert "list_new_dids" in recording.calls
    assert "list_dids" not in recording.calls  # the scope was not listed again
    # The overlap lists the first pass's DIDs again; they are not placed twice.
    assert _placed(rucio_storage, resource) == Counter([*existing, new])
    assert ("Normal", "RulesCreated", "created 1 Rucio rules") in second.events
    assert second.status["selected"] == second.status["ruleCount"] == 4
    assert second.status["selection"]["fullSyncTime"] == selection["fullSyncTime"]
    assert second.status["selection"]["highWaterMark"] > selection["highWaterMark"]

    quiet = restarted.reconcile(resource, replication_ref(resource), second.status)
    assert quiet.events == []
    # Nothing new: the mark stays, so a quiet pass does not rewrite the status.
    assert quiet.status["selection"] == second.status["selection"]


def test_a_did_created_while_a_pass_lists_is_placed_by_the_next(rucio_storage, rucio_data, audit):
    """The mark is taken before the listing: what Rucio stamps after it is listed next time.

    No overlap here, so nothing but the mark's place can make this pass.
    """
    during = []

    def create():
        during.append(rucio_data.dataset(meta=RAW, files=1))

    resource = _resource(
        _name(rucio_data, "during"), RAW, scope=rucio_data.scope, exclude=[{"project": "junk"}]
    )
    before = rucio_data.dataset(meta=RAW, files=1)
    full = Recording(rucio_storage, after={"list_dids": create})
    first = _service(full, audit, overlap=timedelta(0)).reconcile(
        resource, replication_ref(resource)
    )
    assert first.status["selection"]["newData"] == "Steward"  # an exclusion: no subscription
    assert _placed(rucio_storage, resource) == Counter([before])  # during[0] came after

    arrived = rucio_data.dataset(meta=RAW, files=1)
    incremental = Recording(rucio_storage, after={"list_new_dids": create})
    service = _service(incremental, audit, overlap=timedelta(0))
    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Incremental"
    assert _placed(rucio_storage, resource) == Counter([before, during[0], arrived])

    third = service.reconcile(resource, replication_ref(resource), second.status)
    assert third.status["selection"]["mode"] == "Incremental"
    assert _placed(rucio_storage, resource) == Counter([before, *during[:2], arrived])
    assert "list_dids" not in incremental.calls


def test_exclusions_apply_to_new_dids(rucio_storage, rucio_data, audit):
    resource = _resource(
        _name(rucio_data, "exclude"), RAW, scope=rucio_data.scope, exclude=[{"project": "junk"}]
    )
    service = _service(rucio_storage, audit)
    first = service.reconcile(resource, replication_ref(resource))
    kept = rucio_data.dataset(meta=RAW, files=1)
    rucio_data.dataset(meta={**RAW, "project": "junk"}, files=1)
    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Incremental"
    assert _placed(rucio_storage, resource) == Counter([kept])


def test_a_custom_metadata_change_is_placed_by_the_next_pass(
    rucio_server, rucio_storage, rucio_data, audit
):
    match = {**RAW, "instrument": "LSSTCam"}
    resource = _resource(_name(rucio_data, "retag"), match, scope=rucio_data.scope)
    service = _service(rucio_storage, audit)
    if rucio_server.database_url is None:  # SQLite: Rucio's JSON metadata plugin is off
        with pytest.raises(RucioPermanentError, match="instrument"):
            service.reconcile(resource, replication_ref(resource))
        return
    tagged = rucio_data.dataset(meta=match, files=1)
    later = rucio_data.dataset(meta={**RAW, "instrument": "LATISS"}, files=1)
    first = service.reconcile(resource, replication_ref(resource))
    assert _placed(rucio_storage, resource) == Counter([tagged])

    rucio_storage.set_metadata(later, {"instrument": "LSSTCam"})
    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Incremental"
    assert _placed(rucio_storage, resource) == Counter([tagged, later])


def test_a_full_resync_finds_what_no_time_bound_shows(rucio_storage, rucio_data, audit):
    """DID-column metadata changed on older DIDs: seen at the resync, released after two looks."""
    kept, leaving = (rucio_data.dataset(meta=RAW, files=1) for _ in range(2))
    joining = rucio_data.dataset(meta={"datatype": "calexp"}, files=1)
    resource = _resource(
        _name(rucio_data, "resync"), RAW, scope=rucio_data.scope, deletionPolicy="Delete"
    )
    # No overlap: otherwise DIDs created just before the first pass are listed again.
    service = _service(rucio_storage, audit, overlap=timedelta(0))
    first = service.reconcile(resource, replication_ref(resource))
    rucio_storage.set_metadata(joining, RAW)
    rucio_storage.set_metadata(leaving, {"datatype": "calexp"})

    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Incremental"
    assert _placed(rucio_storage, resource) == Counter([kept, leaving])

    due = datetime.now(UTC) - timedelta(hours=7)
    stored = second.status | {
        "selection": second.status["selection"]
        | {"fullSyncTime": due.isoformat().replace("+00:00", "Z")}
    }
    third = service.reconcile(resource, replication_ref(resource), stored)
    assert third.status["selection"]["mode"] == "Full"
    assert third.status["deselection"]["dids"] == 1  # first look: kept
    assert _placed(rucio_storage, resource) == Counter([kept, leaving, joining])

    fourth = service.reconcile(resource, replication_ref(resource), third.status)
    assert fourth.status["selection"]["mode"] == "Full"  # a deselection waits for a second look
    assert _placed(rucio_storage, resource) == Counter([kept, joining])
    released = rucio_storage.list_rules(
        comment=RELEASED_PREFIX + owner_tag(CLUSTER, resource.metadata.uid)
    )
    assert [r.did for r in released] == [leaving]

    fifth = service.reconcile(resource, replication_ref(resource), fourth.status)
    assert fifth.status["selection"]["mode"] == "Incremental"


def test_a_spec_change_or_waiting_dids_keep_passes_full(rucio_storage, rucio_data, audit):
    """No mark while selected DIDs wait (an embargo): an incremental pass would forget them."""
    dataset = rucio_data.dataset(meta=RAW, files=1)
    name = _name(rucio_data, "waiting")
    embargo = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    resource = _resource(name, RAW, scope=rucio_data.scope, notBefore=embargo)
    service = _service(rucio_storage, audit)
    first = service.reconcile(resource, replication_ref(resource))
    assert first.status["selection"]["highWaterMark"] is None
    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Full"
    assert _placed(rucio_storage, resource) == Counter()

    released = _resource(name, RAW, scope=rucio_data.scope)
    third = service.reconcile(released, replication_ref(released, 2), second.status)
    assert third.status["selection"]["mode"] == "Full"
    assert third.status["selection"]["generation"] == 2
    assert third.status["selection"]["highWaterMark"] is not None
    assert _placed(rucio_storage, resource) == Counter([dataset])


def test_a_rule_deleted_behind_stewards_back_is_restored_on_the_next_tick(
    rucio_server, rucio_storage, rucio_data, audit
):
    # An incremental tick sees only new DIDs, so a rule of an old DID that vanished from
    # Rucio would wait for the resync; fewer owned DIDs than status counted lists in full.
    datasets = [rucio_data.dataset(meta=RAW, files=1) for _ in range(3)]
    resource = _resource(_name(rucio_data, "vanished"), RAW, scope=rucio_data.scope)
    service = _service(rucio_storage, audit)
    first = service.reconcile(resource, replication_ref(resource))
    assert first.status["ruleCount"] == 3
    tag = owner_tag(CLUSTER, resource.metadata.uid)
    (gone,) = [r for r in rucio_storage.list_rules(comment=tag) if r.did == datasets[0]]
    rucio_storage.delete_rule(gone.id)  # soft: it expires within the hour
    assert rucio_server.daemons.age_rule(gone.id, timedelta(hours=2).total_seconds()) == 1
    rucio_server.daemons.run("judge-cleaner")
    assert datasets[0] not in _placed(rucio_storage, resource)

    recording = Recording(rucio_storage)
    second = _service(recording, audit).reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Full"
    assert "list_dids" in recording.calls
    assert _placed(rucio_storage, resource) == Counter(datasets)
    third = _service(recording, audit).reconcile(resource, replication_ref(resource), second.status)
    assert third.status["selection"]["mode"] == "Incremental"


def _reason(status, type_):
    return next(c["reason"] for c in status["conditions"] if c["type"] == type_)


def test_a_backlog_larger_than_one_pass_is_placed_over_passes_and_says_so(
    rucio_storage, rucio_data, audit
):
    """One pass creates at most ``max_rules_per_pass`` rules; the mark waits for the rest."""
    backlog = [rucio_data.dataset(meta=RAW, files=1) for _ in range(5)]
    resource = _resource(
        _name(rucio_data, "backlog"), RAW, scope=rucio_data.scope, exclude=[{"project": "junk"}]
    )
    service = _service(rucio_storage, audit, max_rules_per_pass=2)
    ref = replication_ref(resource)

    first = service.reconcile(resource, ref, first_pass=True)
    assert sum(_placed(rucio_storage, resource).values()) == 2
    assert first.status["deferred"] == 3
    assert (_reason(first.status, "Ready"), _reason(first.status, "Progressing")) == (
        "Behind",
        "Behind",
    )
    assert first.requeue_after == 0  # the next share comes seconds later, not a refresh later
    assert first.status["selection"]["highWaterMark"] is None  # DIDs wait: no mark yet

    arrived = rucio_data.dataset(meta=RAW, files=1)
    second = service.reconcile(resource, ref, first.status)
    assert sum(_placed(rucio_storage, resource).values()) == 4
    assert second.status["deferred"] == 2  # two of the backlog and the new one wait

    third = service.reconcile(resource, ref, second.status)
    assert _placed(rucio_storage, resource) == Counter([*backlog, arrived])  # each once
    assert third.status["deferred"] == 0
    assert _reason(third.status, "Ready") != "Behind"
    assert third.requeue_after is None
    assert third.status["selection"]["highWaterMark"] is not None
    quiet = service.reconcile(resource, ref, third.status)
    assert quiet.events == []
    assert quiet.status["selection"]["mode"] == "Incremental"


# -- the scope's arrivals, shared between its policies (ArrivalFeed) -------------------------


class Ticks:
    """A monotonic clock the test moves: the feed's listings age only when told."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _listings():
    """Rucio DID listings this process has sent (each retry counts)."""
    return REGISTRY.get_sample_value("steward_rucio_calls_total", {"operation": "list_dids"}) or 0


def _mark(status):
    return datetime.fromisoformat(status["selection"]["highWaterMark"])


def test_a_quiet_tick_of_two_policies_of_one_scope_is_one_listing(rucio_storage, rucio_data, audit):
    rucio_data.dataset(meta=RAW, files=1)
    raw = _resource(
        _name(rucio_data, "quiet-raw"), RAW, scope=rucio_data.scope, exclude=[{"project": "x"}]
    )
    calexp = _resource(
        _name(rucio_data, "quiet-calexp"), {"datatype": "calexp"}, scope=rucio_data.scope
    )
    feed = ArrivalFeed(rucio_storage, max_age=3600.0, clock=Ticks())
    # No overlap: the dataset above is before both marks, so nothing arrived since.
    service = _service(rucio_storage, audit, arrivals=feed, overlap=timedelta(0))
    first = {r.metadata.name: service.reconcile(r, replication_ref(r)) for r in (raw, calexp)}

    before = _listings()
    quiet = [
        service.reconcile(r, replication_ref(r), first[r.metadata.name].status)
        for r in (raw, calexp)
    ]
    assert [q.status["selection"]["mode"] for q in quiet] == ["Incremental", "Incremental"]
    assert _listings() - before == 1  # one listing of the scope for both policies
    assert all(q.events == [] for q in quiet)

    alone = _service(rucio_storage, audit, overlap=timedelta(0))  # no feed: each lists its own
    before = _listings()
    for r in (raw, calexp):
        alone.reconcile(r, replication_ref(r), first[r.metadata.name].status)
    assert _listings() - before == 2


def test_arrivals_listed_once_are_placed_by_every_policy_they_match(
    rucio_storage, rucio_data, audit
):
    raw = _resource(
        _name(rucio_data, "arrive-raw"), RAW, scope=rucio_data.scope, exclude=[{"project": "junk"}]
    )
    also = _resource(
        _name(rucio_data, "arrive-also"), RAW, scope=rucio_data.scope, destination="IN2P3_DISK"
    )
    calexp = _resource(
        _name(rucio_data, "arrive-calexp"), {"datatype": "calexp"}, scope=rucio_data.scope
    )
    recording = Recording(rucio_storage)
    service = _service(recording, audit, arrivals=ArrivalFeed(recording, max_age=3600.0))
    passes = {
        r.metadata.name: service.reconcile(r, replication_ref(r)) for r in (raw, also, calexp)
    }

    new = rucio_data.dataset(meta=RAW, files=1)
    junk = rucio_data.dataset(meta={**RAW, "project": "junk"}, files=1)
    recording.calls.clear()
    for r in (raw, also, calexp):
        passes[r.metadata.name] = service.reconcile(
            r, replication_ref(r), passes[r.metadata.name].status
        )
    assert recording.calls.count("list_arrived") == 1
    assert _placed(rucio_storage, raw) == Counter([new])
    assert _placed(rucio_storage, also) == Counter([new, junk])
    assert _placed(rucio_storage, calexp) == Counter()
    assert [passes[r.metadata.name].status["selected"] for r in (raw, also, calexp)] == [1, 2, 0]


def test_a_did_created_while_the_shared_listing_runs_is_placed_by_the_next_tick(
    rucio_storage, rucio_data, audit
):
    """The mark a policy stores is when the shared listing was sent, not when it used it."""
    during = []

    def create():
        during.append(rucio_data.dataset(meta=RAW, files=1))

    first_policy = _resource(_name(rucio_data, "during-a"), RAW, scope=rucio_data.scope)
    second_policy = _resource(
        _name(rucio_data, "during-b"),
        RAW,
        scope=rucio_data.scope,
        exclude=[{"project": "x"}],
        destination="IN2P3_DISK",
    )
    ticks = Ticks()
    sent = []

    def wall():
        sent.append(datetime.now(UTC))
        return sent[-1]

    recording = Recording(rucio_storage, after={"list_arrived": create})
    feed = ArrivalFeed(recording, max_age=60.0, clock=ticks, wall=wall)
    service = _service(recording, audit, arrivals=feed, overlap=timedelta(0))
    full = {
        r.metadata.name: service.reconcile(r, replication_ref(r))
        for r in (first_policy, second_policy)
    }
    arrived = rucio_data.dataset(meta=RAW, files=1)
    recording.calls.clear()

    second = {
        r.metadata.name: service.reconcile(r, replication_ref(r), full[r.metadata.name].status)
        for r in (first_policy, second_policy)
    }
    assert recording.calls.count("list_arrived") == 1
    for r in (first_policy, second_policy):
        assert _placed(rucio_storage, r) == Counter([arrived])  # during[0] came after
        assert _mark(second[r.metadata.name].status) <= sent[0]
    # The second policy's pass began after the listing: its mark is the listing's, not its own.
    assert _mark(second[second_policy.metadata.name].status) == sent[0]

    ticks.now += 61.0  # the shared listing is old: the next tick lists again
    third = {
        r.metadata.name: service.reconcile(r, replication_ref(r), second[r.metadata.name].status)
        for r in (first_policy, second_policy)
    }
    assert recording.calls.count("list_arrived") == 2
    for r in (first_policy, second_policy):
        assert _placed(rucio_storage, r) == Counter([arrived, during[0]])
        assert _mark(third[r.metadata.name].status) <= sent[1]
    assert _mark(third[second_policy.metadata.name].status) == sent[1]
    assert "list_dids" not in recording.calls  # no policy listed the scope itself


def test_a_policy_with_an_older_mark_lists_from_it_and_keeps_a_mark_its_listing_covered(
    rucio_storage, rucio_data, audit
):
    ticks = Ticks()
    sent = []

    def wall():
        sent.append(datetime.now(UTC))
        return sent[-1]

    recording = Recording(rucio_storage)
    feed = ArrivalFeed(recording, max_age=3600.0, clock=ticks, wall=wall)
    service = _service(recording, audit, arrivals=feed, overlap=timedelta(0))
    older = _resource(_name(rucio_data, "older"), RAW, scope=rucio_data.scope)
    newer = _resource(_name(rucio_data, "newer"), {"datatype": "calexp"}, scope=rucio_data.scope)
    # Its full pass ran before this process started: the feed has not heard of its mark.
    old_full = _service(rucio_storage, audit, overlap=timedelta(0)).reconcile(
        older, replication_ref(older)
    )
    between = rucio_data.dataset(meta=RAW, files=1)  # after older's mark, before newer's
    new_full = service.reconcile(newer, replication_ref(newer))
    assert _placed(rucio_storage, older) == Counter()

    service.reconcile(newer, replication_ref(newer), new_full.status)
    assert recording.calls.count("list_arrived") == 1  # from newer's mark: without `between`
    tick = service.reconcile(older, replication_ref(older), old_full.status)
    assert recording.calls.count("list_arrived") == 2  # the first did not cover older's mark
    assert _placed(rucio_storage, older) == Counter([between])
    # No later than the listing that covered it was sent (here: this pass's own start).
    assert _mark(old_full.status) < _mark(tick.status) <= sent[1]


def test_a_custom_metadata_change_reaches_policies_through_the_shared_listing(
    rucio_server, rucio_storage, rucio_data, audit
):
    if rucio_server.database_url is None:  # SQLite: no JSON plugin, so no shared JSON listing
        feed = ArrivalFeed(rucio_storage, max_age=60.0)
        since = datetime.now(UTC) - timedelta(minutes=1)
        assert feed.since(rucio_data.scope, "dataset", ["custom"], since) is None
        return
    match = {**RAW, "instrument": "LSSTCam"}
    resource = _resource(_name(rucio_data, "shared-retag"), match, scope=rucio_data.scope)
    ticks = Ticks()
    recording = Recording(rucio_storage)
    service = _service(recording, audit, arrivals=ArrivalFeed(recording, max_age=60.0, clock=ticks))
    later = rucio_data.dataset(meta={**RAW, "instrument": "LATISS"}, files=1)
    first = service.reconcile(resource, replication_ref(resource))
    assert _placed(rucio_storage, resource) == Counter()

    rucio_storage.set_metadata(later, {"instrument": "LSSTCam"})
    recording.calls.clear()
    second = service.reconcile(resource, replication_ref(resource), first.status)
    assert second.status["selection"]["mode"] == "Incremental"
    assert recording.calls.count("list_arrived") == 2  # DID columns and JSON, once each
    assert _placed(rucio_storage, resource) == Counter([later])
