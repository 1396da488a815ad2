"""The shared rule snapshot: one full listing, then only what Rucio changed, merged by rule id.

The merge (`RuleIndex`) is pure and tested here without Rucio; the listing schedule, the
``updated_after`` filter, what a change, a new rule and a removal look like between intervals,
and a reconcile's use of it run against the real Rucio server, with injected clocks.
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steward.exceptions import RucioNotFoundError
from steward.models.replication import ReplicationRule
from steward.services.audit import ResourceRef
from steward.services.ownership import owner_tag
from steward.services.replication import ReplicationService, RuleIndex, RuleSnapshot
from steward.storage.rucio import Rule, RuleSpec, RuleState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CLUSTER = "snapshot-cluster"
NAMESPACE = "snapshot"


def _rule(rule_id, comment, *, expires_at=None, updated_at=NOW):
    return Rule(
        id=rule_id,
        scope="raw",
        name=f"d-{rule_id}",
        account="steward",
        rse_expression="NCSA_DISK",
        copies=1,
        state=RuleState.OK,
        comment=comment,
        expires_at=expires_at,
        updated_at=updated_at,
    )


def _ids(rules):
    return {rule.id for rule in rules}


# -- the merge, pure -------------------------------------------------------------------------


def test_a_changed_comment_moves_the_rule_and_a_new_rule_joins_its_tag():
    index = RuleIndex()
    index.replace([_rule("a", "t1"), _rule("b", "t1"), _rule("c", "t2")])
    index.merge([_rule("b", "t2"), _rule("d", "t1")])
    assert _ids(index.rules("t1", NOW, timedelta(0))) == {"a", "d"}
    assert _ids(index.rules("t2", NOW, timedelta(0))) == {"b", "c"}
    assert len(index) == 4


def test_a_rule_listed_twice_is_kept_once_as_listed_last():
    index = RuleIndex()
    index.merge([_rule("a", "t1")])
    index.merge([_rule("a", "t1", updated_at=NOW + timedelta(minutes=1))])
    (rule,) = index.rules("t1", NOW, timedelta(0))
    assert rule.updated_at == NOW + timedelta(minutes=1)
    assert len(index) == 1


def test_a_full_listing_drops_what_it_does_not_return():
    index = RuleIndex()
    index.replace([_rule("a", "t1"), _rule("b", "t1"), _rule("c", "t2")])
    index.replace([_rule("a", "t1")])
    assert _ids(index.rules("t1", NOW, timedelta(0))) == {"a"}
    assert index.rules("t2", NOW, timedelta(0)) == []
    assert len(index) == 1


def test_a_put_is_the_whole_of_its_tag():
    index = RuleIndex()
    index.replace([_rule("a", "t1"), _rule("b", "t1"), _rule("c", "t2")])
    # The tag's own listing: b left it (released, deleted), c joined it (re-tagged to it).
    index.put("t1", [_rule("a", "t1"), _rule("c", "t1")])
    assert _ids(index.rules("t1", NOW, timedelta(0))) == {"a", "c"}
    assert index.rules("t2", NOW, timedelta(0)) == []
    assert len(index) == 2  # b is nowhere until a listing says where it went
    index.merge([_rule("b", "released:t1")])
    assert _ids(index.rules("released:t1", NOW, timedelta(0))) == {"b"}


def test_an_expired_rule_is_left_out_of_answers_past_the_tolerance():
    index = RuleIndex()
    index.replace(
        [
            _rule("kept", "t1"),
            _rule("later", "t1", expires_at=NOW + timedelta(hours=1)),
            _rule("skew", "t1", expires_at=NOW - timedelta(minutes=1)),
            _rule("expired", "t1", expires_at=NOW - timedelta(minutes=10)),
        ]
    )
    assert _ids(index.rules("t1", NOW, timedelta(minutes=5))) == {"kept", "later", "skew"}


# -- against Rucio ---------------------------------------------------------------------------


class Listings:
    """The real adapter, recording each rule listing's filters and the ids it returned."""

    def __init__(self, storage):
        self.storage = storage
        self.calls = []

    def list_rules(self, **filters):
        rules = self.storage.list_rules(**filters)
        self.calls.append((filters, _ids(rules)))
        return rules

    def __getattr__(self, name):
        return getattr(self.storage, name)


def _remove_behind_the_back(rucio_storage, rucio_server, rule_id):
    """Remove a rule from Rucio with no change a listing of changed rules would show.

    Deleted (soft: it expires within the hour), then aged two hours (its ``updated_at``
    too) and cleaned: as a rule removed while Steward was not looking.
    """
    assert rucio_storage.delete_rule(rule_id)
    assert rucio_server.daemons.age_rule(rule_id, 7200) == 1
    rucio_server.daemons.run("judge-cleaner")
    with pytest.raises(RucioNotFoundError):
        rucio_storage.get_rule(rule_id)


@pytest.mark.rucio
def test_between_full_listings_only_changed_rules_are_listed(
    rucio_storage, rucio_data, rucio_server
):
    first, second = f"snap-{uuid.uuid4().hex}", f"snap-{uuid.uuid4().hex}"
    datasets = [rucio_data.dataset() for _ in range(4)]
    old, updated, removed = (
        rucio_storage.add_rule(did, RuleSpec("NCSA_DISK", comment=first)) for did in datasets[:3]
    )
    assert rucio_server.daemons.age_rule(old, 86400) == 1  # unchanged for a day
    clock = {"now": 0.0}
    listings = Listings(rucio_storage)
    snapshot = RuleSnapshot(
        listings,
        max_age=60,
        clock=lambda: clock["now"],
        full_resync=3600,
        overlap=timedelta(seconds=30),
    )
    assert _ids(snapshot.rules(first)) == {old, updated, removed}
    ((full, listed_first),) = listings.calls
    assert full == {}  # the first listing is a full one
    assert {old, updated, removed} <= listed_first
    mark = max(rucio_storage.get_rule(r).updated_at for r in (updated, removed))

    # Between two intervals: a rule created, one re-tagged, one removed behind the back.
    created = rucio_storage.add_rule(datasets[3], RuleSpec("NCSA_DISK", comment=first))
    rucio_storage.update_rule(updated, comment=second)
    _remove_behind_the_back(rucio_storage, rucio_server, removed)

    clock["now"] = 30.0
    assert _ids(snapshot.rules(first)) == {old, updated, removed}  # young enough: no call
    assert len(listings.calls) == 1

    clock["now"] = 61.0
    assert _ids(snapshot.rules(first)) == {old, created, removed}
    assert _ids(snapshot.rules(second)) == {updated}
    assert len(listings.calls) == 2  # one listing per interval, for every tag
    filters, listed = listings.calls[1]
    assert set(filters) == {"updated_after"}
    assert filters["updated_after"] >= mark - timedelta(seconds=30)
    assert {created, updated} <= listed
    assert old not in listed  # unchanged: not sent again
    assert removed not in listed  # removed: Rucio reports nothing

    clock["now"] = 3700.0  # the full resync drops what is gone
    assert _ids(snapshot.rules(first)) == {old, created}
    assert _ids(snapshot.rules(second)) == {updated}
    assert listings.calls[2][0] == {}


@pytest.mark.rucio
def test_listings_start_at_the_mark_once_one_begun_an_overlap_after_it_has_returned(
    rucio_data, rucio_server, other_accounts
):
    """Before, every listing started an overlap before the mark: a quiet steady state listed
    every rule changed in the overlap before the last change, each interval, for ever. A row
    stamped before the mark but committed late must still be listed."""
    mine = other_accounts.create()  # an account of the test's own: nothing else moves its mark
    tag = f"snap-{uuid.uuid4().hex}"
    spec = RuleSpec("NCSA_DISK", comment=tag)
    first = mine.add_rule(rucio_data.dataset(), spec)
    assert rucio_server.daemons.age_rule(first, 3600) == 1  # so that later rules are later
    clock = {"now": 0.0}
    listings = Listings(mine)
    overlap = timedelta(seconds=90)
    snapshot = RuleSnapshot(
        listings, max_age=60, clock=lambda: clock["now"], full_resync=3600, overlap=overlap
    )
    assert _ids(snapshot.rules(tag)) == {first}  # the full listing raised the mark, at 0 s
    mark = mine.get_rule(first).updated_at

    clock["now"] = 61.0  # began 61 s after the mark was seen: less than the overlap
    snapshot.rules(tag)
    assert listings.calls[1] == ({"updated_after": mark - overlap}, {first})
    # A row stamped 30 s before the mark that commits only now (a slow transaction).
    late = mine.add_rule(rucio_data.dataset(), spec)
    shift = mine.get_rule(late).updated_at - (mark - timedelta(seconds=30))
    assert rucio_server.daemons.age_rule(late, shift.total_seconds()) == 1
    clock["now"] = 122.0  # begins an overlap after: still from before the mark, and settles
    assert _ids(snapshot.rules(tag)) == {first, late}
    assert listings.calls[2] == ({"updated_after": mark - overlap}, {first, late})
    clock["now"] = 183.0  # from the mark itself, whose second is listed again
    assert _ids(snapshot.rules(tag)) == {first, late}
    assert listings.calls[3] == ({"updated_after": mark}, {first})

    second = mine.add_rule(rucio_data.dataset(), spec)
    clock["now"] = 244.0
    assert _ids(snapshot.rules(tag)) == {first, late, second}  # a change after the mark
    assert listings.calls[4] == ({"updated_after": mark}, {first, second})
    moved = mine.get_rule(second).updated_at
    clock["now"] = 305.0  # the mark moved: from an overlap before it again
    snapshot.rules(tag)
    assert listings.calls[5] == ({"updated_after": moved - overlap}, {second})


@pytest.mark.rucio
def test_a_reconcile_restores_what_the_snapshot_shows_deleted_and_the_rest_later(
    rucio_storage, rucio_data, rucio_server, audit
):
    """A rule removed without a change looks placed to timer ticks until its resource lists
    its own rules; Rucio's delete is a change (an expiry within the hour), so a tick sees it
    and restores it, and that pass's own listing then shows the other one gone."""
    name = f"drift-{rucio_data.scope}"
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    datasets = sorted(rucio_data.dataset() for _ in range(2))
    resource = ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
            "spec": {"selector": {"dids": datasets}, "destination": "NCSA_DISK"},
        }
    )
    ref = ResourceRef(kind="ReplicationRule", namespace=NAMESPACE, name=name, uid=uid)
    tag = owner_tag(CLUSTER, uid)
    clock = {"now": 0.0}
    listings = Listings(rucio_storage)
    snapshot = RuleSnapshot(listings, max_age=60, clock=lambda: clock["now"], full_resync=3600)
    service = ReplicationService(
        rucio=rucio_storage, audit=audit, snapshot=snapshot, cluster_id=CLUSTER
    )
    status = service.reconcile(resource, ref).status
    rules = {rule.did: rule.id for rule in rucio_storage.list_rules(comment=tag)}
    assert len(snapshot.rules(tag)) == 2  # the first, full listing

    _remove_behind_the_back(rucio_storage, rucio_server, rules[datasets[1]])
    clock["now"] = 61.0
    tick = service.reconcile(resource, ref, status, fresh=False)
    assert tick.events == []  # its DID looks placed: nothing unsafe, a creation delayed
    assert set(listings.calls[-1][0]) == {"updated_after"}

    assert rucio_storage.delete_rule(rules[datasets[0]])  # soft: expires within the hour
    clock["now"] = 122.0
    tick = service.reconcile(resource, ref, tick.status, fresh=False)
    assert [reason for _, reason, _ in tick.events] == ["DriftRestored"]
    assert rucio_storage.get_rule(rules[datasets[0]]).expires_at is None

    clock["now"] = 183.0  # that pass listed its own rules: the other one is missing now
    tick = service.reconcile(resource, ref, tick.status, fresh=False)
    assert [reason for _, reason, _ in tick.events] == ["RulesCreated"]
    assert {rule.did for rule in rucio_storage.list_rules(comment=tag)} == set(datasets)
    assert [set(filters) for filters, _ in listings.calls] == [set(), *[{"updated_after"}] * 3]


@pytest.mark.rucio
def test_a_release_is_decided_on_rucio_not_on_a_stale_snapshot(
    rucio_storage, rucio_data, rucio_server, audit
):
    """Rules the snapshot still holds after Rucio lost them must not make a release look
    small: two of eight rules is within the release limit (a quarter), two of the four that
    are left is not, and is held for an acknowledgement."""
    name = f"brake-{rucio_data.scope}"
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    raw = {"datatype": "raw"}
    datasets = sorted(rucio_data.dataset(meta=raw, files=1) for _ in range(8))
    resource = ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
            "spec": {
                "selector": {
                    "scope": rucio_data.scope,
                    "match": raw,
                    "exclude": [{"project": "junk"}],  # no subscription
                },
                "destination": "NCSA_DISK",
                "deletionPolicy": "Orphan",
            },
        }
    )
    ref = ResourceRef(kind="ReplicationRule", namespace=NAMESPACE, name=name, uid=uid, generation=1)
    tag = owner_tag(CLUSTER, uid)
    clock = {"now": 0.0}
    snapshot = RuleSnapshot(rucio_storage, max_age=60, clock=lambda: clock["now"])
    service = ReplicationService(
        rucio=rucio_storage,
        audit=audit,
        snapshot=snapshot,
        cluster_id=CLUSTER,
        full_resync=timedelta(0),  # every pass lists the whole selection
    )
    status = service.reconcile(resource, ref).status
    assert status["ruleCount"] == 8
    rules = {rule.did: rule.id for rule in rucio_storage.list_rules(comment=tag)}
    leaving = datasets[:2]
    for did in leaving:
        rucio_storage.set_metadata(did, {"datatype": "calexp"})
    status = service.reconcile(resource, ref, status, fresh=False).status  # the first look
    assert status["deselection"]["dids"] == 2

    for did in datasets[4:]:
        _remove_behind_the_back(rucio_storage, rucio_server, rules[did])
    clock["now"] = 61.0
    assert len(snapshot.rules(tag)) == 8  # the snapshot does not know
    tick = service.reconcile(resource, ref, status, fresh=False)  # the second look
    assert tick.status["pendingRelease"] == 2
    assert [reason for _, reason, _ in tick.events] == ["ReleaseHeld"]
    assert "of 4 Rucio rules" in tick.events[0][2]
    owned = {rule.did for rule in rucio_storage.list_rules(comment=tag)}
    assert set(leaving) <= owned  # nothing was released
