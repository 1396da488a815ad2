"""OODSService against the real Rucio server, with an injected clock (no sleeping).

Each test registers its own cache RSE (type CACHE), so fills and rules never mix; data is
created in the test's own scope. Rucio stamps DIDs with its own clock; the tests read those
times back and set the service's clock around them, so "a week later" takes no time.
"""

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.oods import OODSCache
from steward.models.retention import RetentionPolicy
from steward.services.audit import AuditService, ResourceRef
from steward.services.deletion import DeletionGate, Protections
from steward.services.oods import OODSService, day_obs, export_path, preview_plan
from steward.services.ownership import owner_tag, subscription_name
from steward.services.plan import OODSPreview
from steward.services.protections import ClusterFacts
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from support.rucio import mock_site
from support.waiting import until

pytestmark = pytest.mark.rucio

NAMESPACE = "steward"
CLUSTER = "test-cluster"
ONE_S = timedelta(seconds=1)


@pytest.fixture
def audit(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield AuditService(make_sessionmaker(engine))
    engine.dispose()


class Clock:
    """Rucio's time (the machine's), unless a test sets ``now`` to move ahead of it."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(rucio_storage, audit, clock):
    gate = DeletionGate(rucio_storage, audit, clock=clock)
    return OODSService(rucio_storage, audit, gate, cluster_id=CLUSTER, clock=clock)


@pytest.fixture
def cache_rse(rucio_storage, rucio_sites):
    """A CACHE RSE of the test's own, one distance from NCSA_DISK."""
    suffix = secrets.token_hex(3).upper()
    rse = f"OODS_{suffix}"
    site = mock_site(f"oods-{suffix.lower()}", f"OODS{suffix}", {rse: "CACHE"})
    rucio_storage.register_site(site, peers=[rucio_sites.ncsa])
    rucio_storage._ensure_distance("NCSA_DISK", rse, 1)
    return rse


def _cache(rucio_data, rse, **spec):
    return OODSCache.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "OODSCache",
            "metadata": {
                "name": f"oods-{rucio_data.scope}",
                "namespace": NAMESPACE,
                "uid": secrets.token_hex(8),
            },
            "spec": {
                "site": "base",
                "rse": rse,
                "scope": rucio_data.scope,
                "instruments": ["*"],
                "window": "1d",
                "capacity": "1GB",
                **spec,
            },
        }
    )


def _ref(cache, generation=1):
    return ResourceRef(
        kind="OODSCache",
        namespace=NAMESPACE,
        name=cache.metadata.name,
        uid=cache.metadata.uid,
        generation=generation,
    )


def _raw(rucio_data, count):
    return [rucio_data.dataset(meta={"datatype": "raw"}) for _ in range(count)]


def _created(rucio_storage, dids):
    metadata = rucio_storage.dids_metadata(dids)
    return {did: metadata[did]["created_at"] for did in dids}


def _generations(rucio_data, rucio_storage, *sizes):
    """Datasets created in successive seconds (Rucio stamps DIDs to the second), oldest first."""
    made = []
    for count in sizes:
        if made:
            last = max(_created(rucio_storage, made[-1]).values())
            until("Rucio's clock to pass a second", lambda t=last: datetime.now(UTC) > t + ONE_S)
        made.append(_raw(rucio_data, count))
    return made


def _cache_rules(rucio_storage, cache):
    return {
        r.did: r for r in rucio_storage.list_rules(comment=owner_tag(CLUSTER, cache.metadata.uid))
    }


def _gone(rule):
    return rule.expires_at is not None and rule.expires_at <= datetime.now(UTC) + timedelta(
        seconds=30
    )


def _condition(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_the_window_moves_as_time_passes(
    service, rucio_storage, rucio_data, cache_rse, clock, rucio_server
):
    older, newer = _generations(rucio_data, rucio_storage, 2, 2)
    created = _created(rucio_storage, older + newer)
    a_max, b_min = max(created[d] for d in older), min(created[d] for d in newer)
    assert a_max < b_min
    cache = _cache(rucio_data, cache_rse)

    clock.now = max(created.values()) + timedelta(seconds=1)
    first = service.reconcile(cache, _ref(cache), ClusterFacts())
    rules = _cache_rules(rucio_storage, cache)
    assert set(rules) == set(older + newer)
    assert all(r.expires_at is not None for r in rules.values())
    assert first.status["files"] == 8
    assert first.status["bytes"] == sum(1000 + 1001 for _ in range(4))
    assert ("Normal", "Placed") in [(t, r) for t, r, _ in first.events]

    clock.now = a_max + timedelta(days=1) + (b_min - a_max) / 2
    moved = service.reconcile(cache, _ref(cache), ClusterFacts(), first.status)
    rules = _cache_rules(rucio_storage, cache)
    assert all(_gone(rules[d]) for d in older)
    assert not any(_gone(rules[d]) for d in newer)
    assert moved.status["evictedLastCycle"] == 2
    assert moved.status["reclaimedBytes"] == 2 * 2001
    assert ("Normal", "WindowExpired") in [(t, r) for t, r, _ in moved.events]
    assert moved.status["oldestItem"].startswith(b_min.strftime("%Y-%m-%dT%H"))

    # A day after the newer data: it has left the window too (Rucio's own lifetime ends it
    # by then), and data that arrived since is placed. Steward's clock is a day ahead of
    # Rucio's here, so only what Steward wrote is checked in Rucio.
    b_max = max(created[d] for d in newer)
    until("Rucio's clock to pass a second", lambda: datetime.now(UTC) > b_max + 2 * ONE_S)
    later = _raw(rucio_data, 1)
    clock.now = b_max + timedelta(days=1) + ONE_S
    again = service.reconcile(cache, _ref(cache), ClusterFacts(), moved.status)
    rules = _cache_rules(rucio_storage, cache)
    assert all(rules[d].expires_at <= clock.now for d in newer)
    assert later[0] in rules
    assert not _gone(rules[later[0]])
    assert ("Normal", "Placed") in [(t, r) for t, r, _ in again.events]
    rucio_server.daemons.run("judge-cleaner")
    assert not set(older) & set(_cache_rules(rucio_storage, cache))


def test_new_data_arrives_through_the_subscription(
    service, rucio_storage, rucio_data, cache_rse, clock, rucio_server
):
    cache = _cache(rucio_data, cache_rse)
    service.reconcile(cache, _ref(cache), ClusterFacts())
    subscription = rucio_storage.get_subscription(subscription_name(CLUSTER, cache.metadata.uid))
    assert subscription.filter["datatype"] == ["^raw$"]
    assert "excluded_pattern" not in subscription.filter
    (arrived,) = _raw(rucio_data, 1)
    rucio_server.daemons.run("transmogrifier")
    rule = _cache_rules(rucio_storage, cache)[arrived]
    lifetime = rule.expires_at - rule.created_at
    assert abs(lifetime - timedelta(days=1)) < timedelta(minutes=1)


def test_pins_survive_and_the_watermark_evicts_oldest_first_down_to_low(
    service, rucio_storage, rucio_data, cache_rse, clock
):
    (pinned, *old), new = _generations(rucio_data, rucio_storage, 3, 2)
    data = old + new
    # Five datasets of 2001 bytes: 10005 of 11000 bytes is above 0.9. Low is 0.6 (6600):
    # evicting the two oldest unpinned leaves 6003 and stops; the pinned one is as old.
    cache = _cache(
        rucio_data,
        cache_rse,
        capacity="11000B",
        highWatermark=0.9,
        lowWatermark=0.6,
        floorWatermark=0.99,
        pins=[{"selector": {"dids": [pinned]}, "reason": "master calibration"}],
    )
    placed = service.reconcile(cache, _ref(cache), ClusterFacts())
    rules = _cache_rules(rucio_storage, cache)
    assert rules[pinned].expires_at is None
    assert placed.status["pinned"] == 1
    assert placed.status["fill"] == round(10005 / 11000, 6)
    assert placed.status["evicting"] is False  # the fill is read before placing

    evicted = service.reconcile(cache, _ref(cache), ClusterFacts(), placed.status)
    rules = _cache_rules(rucio_storage, cache)
    assert sorted(d for d in data if _gone(rules[d])) == sorted(old)
    assert rules[pinned].expires_at is None
    assert evicted.status["evictedLastCycle"] == 2
    assert evicted.status["bytes"] == 3 * 2001
    assert evicted.status["evicting"] is False

    quiet = service.reconcile(cache, _ref(cache), ClusterFacts(), evicted.status)
    assert quiet.status["evictedLastCycle"] == 0
    assert not any(_gone(_cache_rules(rucio_storage, cache)[d]) for d in new)


def test_a_smaller_capacity_shows_its_eviction_before_carrying_it_out(
    service, rucio_storage, rucio_data, cache_rse, clock
):
    """A changed cache (a new generation) shows its eviction on its first pass.

    A hold applied beside the change reaches the operator on a watch of its own; one pass
    later it is in force (as for a new RetentionPolicy).
    """
    data = _raw(rucio_data, 3)
    cache = _cache(rucio_data, cache_rse, capacity="100000B", floorWatermark=0.999)
    placed = service.reconcile(cache, _ref(cache), ClusterFacts())
    quiet = service.reconcile(cache, _ref(cache), ClusterFacts(), placed.status)
    assert quiet.status["bytes"] == 3 * 2001
    body = cache.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"].update(capacity="6100B", lowWatermark=0.5)  # 6003 B: two go, 2001 B stay
    smaller = OODSCache.model_validate(body)
    shown = service.reconcile(smaller, _ref(smaller, 2), ClusterFacts(), quiet.status)
    assert not any(_gone(r) for r in _cache_rules(rucio_storage, smaller).values())
    assert shown.status["evictedLastCycle"] == 0
    progressing = _condition(shown.status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "PlanShown")
    assert ("Normal", "PlanShown") in [(t, r) for t, r, _ in shown.events]

    evicted = service.reconcile(smaller, _ref(smaller, 2), ClusterFacts(), shown.status)
    assert evicted.status["evictedLastCycle"] == 2
    rules = _cache_rules(rucio_storage, smaller)
    assert sum(_gone(rules[d]) for d in data) == 2


def test_held_data_is_not_evicted_and_its_rule_is_locked_in_rucio(
    service, rucio_storage, rucio_data, cache_rse, clock
):
    data = _raw(rucio_data, 3)
    cache = _cache(rucio_data, cache_rse, capacity="6100B", lowWatermark=0.3, floorWatermark=0.999)
    hold = RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "hold", "namespace": NAMESPACE},
            "spec": {"selector": {"dids": [data[0]]}, "lifetime": "3650d", "holds": [data[0]]},
        }
    )
    facts = ClusterFacts(policies=[hold])
    placed = service.reconcile(cache, _ref(cache), facts)
    assert _cache_rules(rucio_storage, cache)[data[0]].locked is True
    evicted = service.reconcile(cache, _ref(cache), facts, placed.status)
    rules = _cache_rules(rucio_storage, cache)
    assert not _gone(rules[data[0]])
    assert _gone(rules[data[1]])
    assert _gone(rules[data[2]])
    assert evicted.status["evictedLastCycle"] == 2
    assert evicted.status["evicting"] is True  # held back above low
    assert evicted.status["protected"] == {"LegalHold": 1}
    released = service.reconcile(cache, _ref(cache), ClusterFacts(), evicted.status)
    assert _cache_rules(rucio_storage, cache)[data[0]].locked is False
    assert released.status["evictedLastCycle"] == 1  # still above low: eviction goes on


def test_the_floor_refuses_new_placements(
    service, rucio_storage, rucio_data, cache_rse, clock, rucio_server
):
    pinned = _raw(rucio_data, 2)
    pins = [{"selector": {"dids": pinned}, "reason": "calibrations"}]
    cache = _cache(rucio_data, cache_rse, capacity="4100B", pins=pins)
    full = service.reconcile(cache, _ref(cache), ClusterFacts())
    assert full.status["placements"] == "Open"  # the pins themselves were placed
    refused = service.reconcile(cache, _ref(cache), ClusterFacts(), full.status)
    assert refused.status["placements"] == "Refused"
    assert _condition(refused.status, "PlacementsRefused")["status"] == "True"
    assert _condition(refused.status, "Degraded")["reason"] == "PlacementsRefused"
    subscription = rucio_storage.get_subscription(subscription_name(CLUSTER, cache.metadata.uid))
    assert subscription.filter["excluded_pattern"] == ".*"
    (arrived,) = _raw(rucio_data, 1)
    rucio_server.daemons.run("transmogrifier")
    still = service.reconcile(cache, _ref(cache), ClusterFacts(), refused.status)
    assert arrived not in _cache_rules(rucio_storage, cache)
    assert still.status["placements"] == "Refused"

    roomy = _cache(rucio_data, cache_rse, capacity="1GB", pins=pins)
    roomy.metadata.uid = cache.metadata.uid
    opened = service.reconcile(roomy, _ref(roomy, 2), ClusterFacts(), still.status)
    assert opened.status["placements"] == "Open"
    assert arrived in _cache_rules(rucio_storage, cache)


def test_a_cache_rse_without_usage_source_raises_an_alarm(
    service, rucio_storage, rucio_root, rucio_data, cache_rse, clock
):
    cache = _cache(rucio_data, cache_rse)
    alarmed = service.reconcile(cache, _ref(cache), ClusterFacts())
    missing = _condition(alarmed.status, "UsageSourceMissing")
    assert missing["status"] == "True"
    assert "obsolete replicas" in missing["message"]
    assert ("Warning", "UsageSourceMissing") in [(t, r) for t, r, _ in alarmed.events]
    quiet = service.reconcile(cache, _ref(cache), ClusterFacts(), alarmed.status)
    assert ("Warning", "UsageSourceMissing") not in [(t, r) for t, r, _ in quiet.events]
    rucio_root.set_rse_usage(cache_rse, "storage", used=0, free=10**12)  # a storage probe
    fixed = service.reconcile(cache, _ref(cache), ClusterFacts(), quiet.status)
    assert _condition(fixed.status, "UsageSourceMissing")["status"] == "False"


def test_the_export_layout_is_computed_per_file(
    service, rucio_storage, rucio_data, cache_rse, clock
):
    (dataset,) = _raw(rucio_data, 1)
    created = _created(rucio_storage, [dataset])[dataset]
    export = {"root": "/repo/oods", "layout": "{datatype}/{day_obs}/{name}"}
    cache = _cache(rucio_data, cache_rse, export=export)
    outcome = service.reconcile(cache, _ref(cache), ClusterFacts())
    files = rucio_data.files_of(dataset)
    expected = [
        {"did": f, "path": f"/repo/oods/raw/{day_obs(created)}/{f.partition(':')[2]}"}
        for f in files
    ]
    assert outcome.status["exportSample"] == expected
    path, missing = export_path(
        cache.spec.model_copy(
            update={
                "export": cache.spec.export.model_copy(update={"layout": "{instrument}/{name}"})
            }
        ),
        files[0],
        {"datatype": "raw"},
    )
    assert (path, missing) == ("", ["instrument"])


def test_day_obs_rolls_over_at_noon_utc():
    assert day_obs(datetime(2026, 11, 22, 11, 59, tzinfo=UTC)) == "20261121"
    assert day_obs(datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) == "20261122"


def test_instruments_select_by_metadata_or_say_why_rucio_cannot(
    service, rucio_storage, rucio_data, cache_rse, clock
):
    lsstcam, latiss = _raw(rucio_data, 2)
    custom = rucio_storage.custom_metadata(rucio_data.scope)
    if custom:
        rucio_storage.set_metadata(lsstcam, {"instrument": "LSSTCam"})
        rucio_storage.set_metadata(latiss, {"instrument": "LATISS"})
    cache = _cache(rucio_data, cache_rse, instruments=["LSSTCam"])
    outcome = service.reconcile(cache, _ref(cache), ClusterFacts())
    subscription = rucio_storage.get_subscription(subscription_name(CLUSTER, cache.metadata.uid))
    assert subscription.filter["instrument"] == ["^LSSTCam$"]
    degraded = _condition(outcome.status, "Degraded")
    if custom:  # PostgreSQL: Rucio's JSON metadata plugin
        assert set(_cache_rules(rucio_storage, cache)) == {lsstcam}
        assert degraded["status"] == "False" or degraded["reason"] == "UsageSourceMissing"
    else:  # SQLite: Rucio refuses custom keys, and the cache says so
        assert _cache_rules(rucio_storage, cache) == {}
        assert degraded["reason"] == "SelectionRefused"
        assert "instrument" in degraded["message"]
        assert outcome.status["files"] == 0


def test_the_preview_shows_what_the_next_cycle_evicts(
    service, rucio_storage, rucio_data, cache_rse, clock
):
    old, _new = _generations(rucio_data, rucio_storage, 2, 1)
    roomy = _cache(rucio_data, cache_rse)
    service.reconcile(roomy, _ref(roomy), ClusterFacts())
    tight = roomy.model_copy(
        update={"spec": roomy.spec.model_copy(update={"capacity": 5000, "low_watermark": 0.5})}
    )
    preview = OODSPreview(rucio_storage, CLUSTER, clock=clock)
    body = tight.model_dump(mode="json", by_alias=True, exclude_none=True)
    live = {"metadata": {"uid": roomy.metadata.uid}}
    (impact,) = preview.consequences(None, body, live)
    assert (impact.action, impact.rules) == ("expire", 2)
    assert set(impact.release) == {cache_rse}
    assert impact.release[cache_rse].files == impact.deletable[cache_rse].files > 0
    assert all(_gone(r) is False for r in _cache_rules(rucio_storage, roomy).values())
    plan = preview_plan(rucio_storage, tight, Protections(), cluster_id=CLUSTER, now=clock())
    assert sorted(plan.sample()) == sorted(old)


def test_a_deleted_cache_stops_placing_and_releases_its_pins(
    service, rucio_storage, rucio_data, cache_rse, clock, audit
):
    (pinned,) = _raw(rucio_data, 1)
    cache = _cache(
        rucio_data, cache_rse, pins=[{"selector": {"dids": [pinned]}, "reason": "calib"}]
    )
    service.reconcile(cache, _ref(cache), ClusterFacts())
    assert _cache_rules(rucio_storage, cache)[pinned].expires_at is None
    events = service.finalize(cache, _ref(cache))
    assert {reason for _, reason, _ in events} == {"SubscriptionStopped", "PinsReleased"}
    rule = _cache_rules(rucio_storage, cache)[pinned]
    assert rule.expires_at is not None
    assert abs(rule.expires_at - datetime.now(UTC) - timedelta(days=1)) < timedelta(minutes=5)
    subscription = rucio_storage.get_subscription(subscription_name(CLUSTER, cache.metadata.uid))
    assert subscription.filter["excluded_pattern"] == ".*"
    assert service.finalize(cache, _ref(cache)) == []
