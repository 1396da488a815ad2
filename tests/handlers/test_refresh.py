"""The refresh loop of a kind (`steward.handlers.refresh`): one thread instead of a timer each.

The pure tests pin who leads (read as kopf reads its peering object) and which objects are
tracked. The others run the loop's cycle against the real API server with a pass that
records what it was given, so they show what the loop itself does: list every page, pass
only tracked, live, due objects, merge each pass's patch into the stored status, post its
Events, back off after a transient error, and stand by while it does not lead. The
ReplicationRule pass itself runs in every end-to-end test of the operator.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import kopf
import kubernetes
import pytest

from steward.constants import GROUP, VERSION
from steward.handlers.common import _event
from steward.handlers.refresh import QUIET, RefreshLoop, Tracked, cycle_wait, leads
from steward.storage.kubernetes import ResourceKey
from steward.storage.refreshing import RefreshObjects
from support.samples import minimal_rule
from support.waiting import until

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MINE = 5_000


def _peer(priority, seen_ago, lifetime=60):
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
    }


def test_a_process_leads_unless_a_live_peer_has_a_higher_priority():
    assert leads({"status": {"me": _peer(MINE, 1), "young": _peer(MINE - 1, 1)}}, MINE, NOW)
    assert not leads({"status": {"me": _peer(MINE, 1), "old": _peer(MINE + 1, 59)}}, MINE, NOW)
    assert leads({"status": {"me": _peer(MINE, 1), "dead": _peer(MINE + 1, 61)}}, MINE, NOW)
    assert leads({"status": {}}, MINE, NOW)


def test_no_peering_object_means_nobody_leads():
    # kopf's peering is mandatory in a deployment: without the object every process waits.
    assert not leads(None, MINE, NOW)


def test_a_peer_seen_without_a_time_zone_is_read_in_utc():
    naive = {"priority": MINE + 1, "lifetime": 60, "lastseen": "2026-12-01T11:59:30"}
    assert not leads({"status": {"old": naive}}, MINE, NOW)


def test_tracked_objects_share_one_memo_and_a_listing_prunes_only_older_ones():
    ticks = iter([1.0, 1.5, 2.0, 5.0])
    tracked = Tracked({"context": "ctx"}, clock=lambda: next(ticks))
    first = tracked.track("a")
    assert tracked.track("a") is first  # at 1.5: tracked since 1.0 all the same
    assert first.context == "ctx"
    first["status"] = "{}"
    tracked.track("b")  # tracked at 2.0
    tracked.track("c")  # tracked at 5.0: after the listing began
    assert tracked.prune(["a"], before=3.0) == 1
    assert tracked.get("b") is None
    assert tracked.get("c") is not None
    assert tracked.get("a")["status"] == "{}"
    tracked.forget("a")
    assert tracked.get("a") is None
    assert len(tracked) == 1


class Recorder:
    """A pass that records each body it gets, writes a status, posts an Event, may fail."""

    def __init__(self):
        self.seen = []
        self.bodies = []
        self.failing = {}
        self.guard = threading.Lock()

    def __call__(self, body, patch, memo):
        name = body["metadata"]["name"]
        with self.guard:
            self.seen.append(name)
            self.bodies.append(body)
        memo["passed_at"] = clock.now
        patch.status["refreshedBy"] = "loop"
        _event(body, "Normal", "Refreshed", f"{name} refreshed")
        if name in self.failing:
            raise kopf.TemporaryError("Rucio refused", delay=self.failing[name])


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


clock = Clock()


@pytest.fixture
def objects(kube_api, namespace):
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    uids = {}
    for index in range(7):
        name = f"r{index}"
        created = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "replicationrules", minimal_rule(name, namespace)
        )
        uids[name] = created["metadata"]["uid"]
    return custom, uids


def _loop(kube_api, tracked, recorder, leading=lambda: True):
    return RefreshLoop(
        objects=RefreshObjects(kube_api, "ReplicationRule"),
        tracked=tracked,
        refresh=recorder,
        interval=60.0,
        edge_interval=5.0,
        workers=2,
        leading=leading,
        clock=clock,
        page_size=2,
    )


def _mine(seen, uids):
    return sorted(name for name in seen if name in uids)


@pytest.mark.kube
def test_a_cycle_passes_every_tracked_object_once_and_merges_its_patch(
    kube_api, namespace, objects
):
    custom, uids = objects
    tracked = Tracked({}, clock=clock)
    for name in ("r0", "r1", "r2", "r3", "r4"):
        tracked.track(uids[name])
    recorder = Recorder()
    loop = _loop(kube_api, tracked, recorder)
    try:
        # r5 and r6 were never handled by a change handler: not passed. r4 is being deleted.
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "replicationrules",
            "r4",
            {"metadata": {"finalizers": ["test/hold"]}},
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "replicationrules", "r4")
        tracked.get(uids["r3"])["passed_at"] = clock.now - 10  # passed 10 s ago: not due
        tracked.get(uids["r1"])["retry_at"] = clock.now + 30  # backing off

        report = loop.cycle()

        assert _mine(recorder.seen, uids) == ["r0", "r2"]
        assert all("managedFields" not in body["metadata"] for body in recorder.bodies)
        assert report.listed >= 7  # with other tests' objects: listed two at a time
        stored = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "replicationrules", "r0"
        )
        assert stored["status"]["refreshedBy"] == "loop"
        events = kubernetes.client.CoreV1Api(kube_api).list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={uids['r0']}"
        )
        assert [(e.reason, e.message, e.source.component) for e in events.items] == [
            ("Refreshed", "r0 refreshed", "steward")
        ]
    finally:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "replicationrules", "r4", {"metadata": {"finalizers": None}}
        )
        loop.stop()


@pytest.mark.kube
def test_a_transient_error_backs_the_object_off_and_its_patch_still_lands(
    kube_api, namespace, objects
):
    custom, uids = objects
    tracked = Tracked({}, clock=clock)
    tracked.track(uids["r0"])
    recorder = Recorder()
    recorder.failing["r0"] = 120
    loop = _loop(kube_api, tracked, recorder)
    try:
        assert loop.cycle().failed >= 1
        stored = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "replicationrules", "r0"
        )
        assert stored["status"]["refreshedBy"] == "loop"  # kopf, too, writes a failed patch
        assert tracked.get(uids["r0"])["retry_at"] == clock.now + 120

        clock.now += 60  # the next interval: still backing off
        loop.cycle()
        clock.now += 61  # past the delay
        del recorder.failing["r0"]
        loop.cycle()
        assert _mine(recorder.seen, uids) == ["r0", "r0"]
        assert tracked.get(uids["r0"])["retry_at"] is None
    finally:
        loop.stop()


@pytest.mark.kube
def test_a_process_that_does_not_lead_passes_nothing_and_prunes_nothing(
    kube_api, namespace, objects
):
    _, uids = objects
    tracked = Tracked({}, clock=clock)
    tracked.track(uids["r0"])
    gone = str(uuid.uuid4())
    tracked.track(gone)
    recorder = Recorder()
    standby = _loop(kube_api, tracked, recorder, leading=lambda: False)
    try:
        report = standby.cycle()
        assert (report.led, recorder.seen) == (False, [])
        assert tracked.get(gone) is not None
    finally:
        standby.stop()

    leader = _loop(kube_api, tracked, recorder)
    clock.now += 1
    try:
        report = leader.cycle()
        assert report.led
        assert _mine(recorder.seen, uids) == ["r0"]
        assert tracked.get(gone) is None  # not listed: deleted while nobody watched
    finally:
        leader.stop()


@pytest.mark.kube
def test_a_started_loop_refreshes_each_interval_until_stopped(kube_api, namespace, objects):
    _, uids = objects
    tracked = Tracked({}, clock=clock)
    tracked.track(uids["r0"])
    recorder = Recorder()
    loop = RefreshLoop(
        objects=RefreshObjects(kube_api, "ReplicationRule"),
        tracked=tracked,
        refresh=recorder,
        interval=0.5,
        edge_interval=0.1,
        workers=2,
        leading=lambda: True,
    )
    loop.start()
    try:
        until("two refreshes of r0", lambda: _mine(recorder.seen, uids) == ["r0", "r0"], timeout=30)
    finally:
        loop.stop()
    seen = len(recorder.seen)
    assert not loop.running
    assert len(recorder.seen) == seen


class _Burst(Tracked):
    """Change handlers that begin a pass at every moment until `end`: no pause to wait for.

    A thread calling `track` every 50 ms would model the same burst only while it is never
    starved for `QUIET`; on a loaded machine it can be, and the loop rightly stops yielding.
    """

    def __init__(self) -> None:
        super().__init__({})
        self.ended = threading.Event()

    @property
    def changed_at(self) -> float | None:
        return None if self.ended.is_set() else time.monotonic()

    @changed_at.setter
    def changed_at(self, value: float | None) -> None:
        """`track` notes its pass; in a burst, every moment has one already."""


@pytest.mark.kube
def test_a_started_loop_yields_to_a_burst_of_change_passes_for_at_most_its_limit(
    kube_api, namespace, objects
):
    _, uids = objects
    tracked = _Burst()
    tracked.track(uids["r0"])
    recorder = Recorder()
    passed_at = []

    def timed(body, patch, memo):
        passed_at.append(time.monotonic())
        recorder(body, patch, memo)

    loop = RefreshLoop(
        objects=RefreshObjects(kube_api, "ReplicationRule"),
        tracked=tracked,
        refresh=timed,
        interval=0.5,
        edge_interval=60.0,
        workers=2,
        leading=lambda: True,
        yield_limit=4.0,
    )
    started = time.monotonic()
    loop.start()
    try:
        until("a refresh of r0 despite the burst", lambda: passed_at, timeout=30)
        first = passed_at[0] - started
        tracked.ended.set()
        until("refreshes every interval again", lambda: len(passed_at) >= 3, timeout=30)
    finally:
        tracked.ended.set()
        loop.stop()
    # Without yielding the first cycle begins after 0.5 s; it waited for the limit (4 s).
    assert first >= 4.0
    assert first < 15


@pytest.mark.kube
def test_an_edge_that_has_come_is_passed_within_seconds_reading_that_object_alone(
    kube_api, namespace, objects
):
    custom, uids = objects
    tracked = Tracked({}, clock=clock)

    def track(name, **memo):
        tracked.track(uids[name], ResourceKey("ReplicationRule", namespace, name)).update(memo)

    track("r0", edge_at=clock.now - 1)  # a window opened a second ago
    track("r1", edge_at=clock.now + 30)  # an embargo ends in 30 s
    track("r2")  # no edge
    track("r3", edge_at=clock.now - 1, retry_at=clock.now + 10)  # backing off
    track("r4", edge_at=clock.now - 1)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "replicationrules", "r4")
    gone = ResourceKey("ReplicationRule", namespace, "gone")
    tracked.track(str(uuid.uuid4()), gone).update(edge_at=clock.now - 1)  # never existed
    recorder = Recorder()
    loop = _loop(kube_api, tracked, recorder)
    try:
        assert loop.edges() == 1

        def stored():
            body = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "replicationrules", "r0"
            )
            return (body.get("status") or {}).get("refreshedBy")

        until("the edge pass's status stored", lambda: stored() == "loop", timeout=30)
        assert recorder.seen == ["r0"]
        standby = _loop(kube_api, tracked, recorder, leading=lambda: False)
        try:
            assert standby.edges() == 0  # r0's edge is still due, but this one does not lead
        finally:
            standby.stop()
    finally:
        loop.stop()


@pytest.mark.kube
def test_without_the_peering_crd_the_peering_object_reads_as_missing(kube_api):
    assert RefreshObjects(kube_api, "ReplicationRule").peering("steward") is None


def test_a_cycle_is_due_an_interval_after_the_last_began_when_changes_are_idle():
    wait = partial(cycle_wait, interval=10.0, yield_limit=100.0)
    assert wait(103.0, 100.0, changed_at=None) == 7.0
    assert wait(110.0, 100.0, changed_at=None) == 0.0
    assert wait(110.0, 100.0, changed_at=110.0 - QUIET) == 0.0  # the last change a pause ago


def test_while_change_passes_keep_coming_the_next_cycle_waits_up_to_the_yield_limit():
    wait = partial(cycle_wait, interval=10.0, yield_limit=100.0)
    assert wait(110.0, 100.0, changed_at=109.75) == pytest.approx(QUIET - 0.25)
    assert wait(150.0, 100.0, changed_at=150.0) == QUIET
    assert wait(199.5, 100.0, changed_at=199.5) == pytest.approx(0.5)  # not past the limit
    assert wait(200.0, 100.0, changed_at=200.0) == 0.0


def test_without_a_yield_limit_changes_never_delay_a_cycle():
    assert cycle_wait(110.0, 100.0, interval=10.0, yield_limit=0.0, changed_at=110.0) == 0.0


def test_a_change_handler_tracking_an_object_notes_when_it_began():
    tracked = Tracked({}, clock=clock)
    assert tracked.changed_at is None
    clock.now = 42.0
    tracked.track("uid")
    assert tracked.changed_at == 42.0
