"""Shared read-back of just-created rules (`RecentRules`) against the real Rucio server."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.replication import ReplicationRule
from steward.services.ownership import owner_tag
from steward.services.recent_rules import RecentRules
from steward.services.replication import ReplicationService
from steward.storage.rucio import RuleSpec
from support.samples import replication_ref
from support.waiting import until

pytestmark = pytest.mark.rucio

CLUSTER = "test-cluster"


class Listings:
    """The real adapter; records each ``list_rules`` call's filters, can hold the first."""

    def __init__(self, storage, hold=None):
        self._storage = storage
        self._hold = hold
        self.calls = []

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def list_rules(self, **filters):
        self.calls.append(filters)
        if self._hold is not None and len(self.calls) == 1:
            assert self._hold.wait(30), "the test never released the first listing"
        return self._storage.list_rules(**filters)


def _rules(rucio_storage, rucio_data, count, rse="NCSA_DISK"):
    datasets = [rucio_data.dataset() for _ in range(count)]
    added = rucio_storage.add_rules(datasets, RuleSpec(rse, comment=f"recent-{uuid.uuid4()}"))
    return [added.rule_ids[d] for d in datasets]


def test_an_answer_holds_every_rule_asked_for_or_is_none(rucio_storage, rucio_data):
    before = datetime.now(UTC)
    ids = _rules(rucio_storage, rucio_data, 2)
    recent = RecentRules(rucio_storage)
    assert sorted(r.id for r in recent.rules(ids, before)) == sorted(ids)
    # A rule changed before the listing's reach (here: a clock ahead of Rucio's by an
    # hour) is not in it: no partial answer, the caller lists by its tag.
    assert recent.rules(ids, before + timedelta(hours=1)) is None
    assert recent.listings == 2


def test_requests_arriving_during_a_listing_share_the_next_one(rucio_storage, rucio_data):
    since = datetime.now(UTC)
    ids = [_rules(rucio_storage, rucio_data, 1) for _ in range(4)]
    hold = threading.Event()
    listings = Listings(rucio_storage, hold=hold)
    recent = RecentRules(listings)
    answers = {}

    def ask(index):
        answers[index] = recent.rules(ids[index], since)

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    until("the first listing to start", lambda: len(listings.calls) == 1)
    others = [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for thread in others:
        thread.start()
    until("three requests to wait", lambda: recent.waiting == 3)
    hold.set()
    for thread in [first, *others]:
        thread.join(timeout=60)
    assert {i: [r.id for r in answers[i]] for i in answers} == {i: ids[i] for i in range(4)}
    assert recent.listings == len(listings.calls) == 2  # four requests, two listings


def _resource(name, dids):
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {
                "name": name,
                "namespace": "recent",
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            },
            "spec": {"selector": {"dids": dids}, "destination": "NCSA_TAPE"},
        }
    )


def test_a_new_resource_reads_its_rules_back_through_the_shared_listing(
    rucio_storage, rucio_data, audit
):
    datasets = [rucio_data.dataset() for _ in range(2)]
    resource = _resource(f"shared-{rucio_data.scope}", datasets)
    listings = Listings(rucio_storage)
    service = ReplicationService(
        rucio=listings, audit=audit, cluster_id=CLUSTER, recent=RecentRules(listings)
    )
    outcome = service.reconcile(resource, replication_ref(resource), first_pass=True)
    tag = owner_tag(CLUSTER, resource.metadata.uid)
    assert [set(call) for call in listings.calls] == [{"updated_after"}]  # no tag listing
    rules = rucio_storage.list_rules(comment=tag)
    assert outcome.status["ruleIds"] == sorted(r.id for r in rules)
    assert outcome.status["counts"]["REPLICATING"] == outcome.status["ruleCount"] == 2


def test_rules_it_cannot_find_there_are_listed_by_tag(rucio_storage, rucio_data, audit):
    """A first pass again after a crash: the rule it takes back did not change this pass."""
    datasets = [rucio_data.dataset()]
    resource = _resource(f"again-{rucio_data.scope}", datasets)
    ref = replication_ref(resource)
    ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER).reconcile(
        resource, ref, first_pass=True
    )
    later = datetime.now(UTC) + timedelta(minutes=5)
    listings = Listings(rucio_storage)
    service = ReplicationService(
        rucio=listings,
        audit=audit,
        cluster_id=CLUSTER,
        recent=RecentRules(listings),
        clock=lambda: later,
    )
    again = service.reconcile(resource, ref, first_pass=True)
    tag = owner_tag(CLUSTER, resource.metadata.uid)
    assert listings.calls[-1] == {"comment": tag}
    assert again.status["ruleIds"] == [r.id for r in rucio_storage.list_rules(comment=tag)]
    assert again.status["ruleCount"] == 1
