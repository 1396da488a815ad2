"""When a pass lists everything and where the high-water mark goes: pure decisions, no Rucio.

The listing itself is proven against the real Rucio server in test_incremental_selection.py;
these pin down the choices around it, which a clock and a status decide.
"""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from steward.models.replication import ReplicationRuleSpec
from steward.services.audit import ResourceRef
from steward.services.replication import ReplicationService

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REF = ResourceRef(kind="ReplicationRule", namespace="n", name="r", uid="u", generation=3)


def _spec(**extra):
    return ReplicationRuleSpec.model_validate(
        {
            "selector": {"scope": "raw", "match": {"datatype": "raw"}},
            "destination": "NCSA_TAPE",
            **extra,
        }
    )


def _stamp(moment):
    return moment.isoformat().replace("+00:00", "Z")


def _status(mark=NOW - timedelta(minutes=1), synced=NOW - timedelta(hours=1), **extra):
    return {
        "selection": {
            "mode": "Incremental",
            "highWaterMark": _stamp(mark) if mark else None,
            "fullSyncTime": _stamp(synced) if synced else None,
            "generation": 3,
        },
        **extra,
    }


@pytest.fixture
def service():
    # The decision reads only the status, the spec and the clock: no Rucio, no audit.
    return ReplicationService(rucio=None, audit=None, overlap=timedelta(seconds=30))


def test_an_incremental_pass_starts_an_overlap_before_the_mark(service):
    since = service._incremental_since(_spec(), REF, _status(), NOW, ())
    assert since == NOW - timedelta(minutes=1, seconds=30)


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({}, "no mark yet"),
        (_status(mark=None), "no mark: DIDs were waiting"),
        (_status(synced=None), "never listed in full"),
        (_status(synced=NOW - timedelta(hours=6)), "resync due"),
        (_status(deselection={"dids": 1, "digest": "x"}), "a deselection waits"),
        (_status(pendingRelease=4), "a release is held"),
        (_status() | {"selection": _status()["selection"] | {"generation": 2}}, "spec changed"),
        (_status() | {"selection": _status()["selection"] | {"highWaterMark": "soon"}}, "junk"),
    ],
)
def test_a_full_listing_when(service, status, why):
    assert service._incremental_since(_spec(), REF, status, NOW, ()) is None, why


def test_a_full_listing_when_a_rule_went_missing(service):
    # Status counted rules for two DIDs; Rucio now lists one: the other may need restoring.
    listed = [SimpleNamespace(did="raw:a")]
    counted = _status(ruleCount=2)
    assert service._incremental_since(_spec(), REF, counted, NOW, listed) is None
    assert service._incremental_since(_spec(), REF, _status(ruleCount=1), NOW, listed)


def test_explicit_dids_are_never_listed(service):
    spec = ReplicationRuleSpec.model_validate(
        {"selector": {"dids": ["raw:a"]}, "destination": "NCSA_TAPE"}
    )
    assert service._incremental_since(spec, REF, _status(), NOW, ()) is None


def test_a_due_resync_waits_while_transfers_may_not_start(service):
    # A resync finding new DIDs could not place them; it would leave no mark behind.
    embargoed = _spec(notBefore=_stamp(NOW + timedelta(days=1)))
    due = _status(synced=NOW - timedelta(hours=7))
    assert service._incremental_since(embargoed, REF, due, NOW, ()) is not None
    assert service._incremental_since(_spec(), REF, due, NOW, ()) is None
