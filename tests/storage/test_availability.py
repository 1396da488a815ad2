"""The shared "does Rucio answer" state, call timeouts and call slots: pure, on a fake clock."""

import threading
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from steward.config import Settings
from steward.storage.rucio import Admission, CallSlots, CallTimeouts, RucioAvailability


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _availability(clock: Clock, jitter: float = 0.5) -> RucioAvailability:
    return RucioAvailability(
        initial_probe=1.0,
        max_probe=8.0,
        clock=clock,
        wall=lambda: datetime(2026, 12, 1, 1, 2, 3, tzinfo=UTC),
        jitter=lambda: jitter,
    )


def test_timeouts_are_sized_by_what_a_call_does():
    timeouts = CallTimeouts(connect=1, read=2, write=3, listing=4)
    assert timeouts.of("get_replication_rule") == (1, 2)
    assert timeouts.of("whoami") == (1, 2)
    assert timeouts.of("ping") == (1, 2)
    assert timeouts.of("add_replication_rule") == (1, 3)
    assert timeouts.of("attach_dids") == (1, 3)
    assert timeouts.of("list_replication_rules") == (1, 4)
    assert timeouts.of("list_dids") == (1, 4)


def test_first_unanswered_call_marks_rucio_down_and_later_calls_are_refused():
    clock = Clock()
    availability = _availability(clock)
    transitions: list[tuple[bool, str]] = []
    availability.listeners.append(lambda up, reason: transitions.append((up, reason)))
    assert availability.admit() is Admission.CALL
    availability.failed("Rucio list_dids failed: ReadTimeout")
    assert not availability.up
    assert availability.admit() is Admission.REFUSE
    refused = availability.refused("get_rule", retry_after=10.0)
    assert "not attempted" in str(refused)
    assert "since 2026-12-01T01:02:03Z: Rucio list_dids failed: ReadTimeout" in str(refused)
    assert refused.retry_after == 10.0
    assert availability.describe().startswith("Rucio does not answer since 2026-12-01T01:02:03Z")
    assert transitions == [(False, availability.describe())]


def test_one_caller_probes_when_due_and_probes_back_off_exponentially_up_to_a_cap():
    clock = Clock()
    availability = _availability(clock)
    availability.failed("refused")
    waits = []
    for _ in range(6):
        waits.append(availability.wait())
        clock.now += availability.wait()
        assert availability.admit() is Admission.PROBE
        assert availability.admit() is Admission.REFUSE  # one probe at a time
        availability.failed("still refused", probe=True)
    assert waits == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
    assert "refused" in availability.describe()  # the first reason is kept
    assert "still" not in availability.describe()


def test_probe_schedule_has_jitter_within_twenty_percent():
    low, high = Clock(), Clock()
    early, late = _availability(low, jitter=0.0), _availability(high, jitter=0.999)
    early.failed("x")
    late.failed("x")
    assert early.wait() == pytest.approx(0.8)
    assert late.wait() == pytest.approx(1.2, rel=1e-3)


def test_failures_of_calls_in_flight_do_not_push_the_probe_back():
    clock = Clock()
    availability = _availability(clock)
    availability.failed("first timeout")
    due = availability.wait()
    for _ in range(4):
        availability.failed("another call in flight timed out")
    assert availability.wait() == pytest.approx(due)


def test_an_answer_marks_rucio_up_and_each_outage_is_announced_once():
    clock = Clock()
    availability = _availability(clock)
    transitions: list[bool] = []
    availability.listeners.append(lambda up, _reason: transitions.append(up))
    for _ in range(2):
        availability.failed("refused")
        availability.failed("refused")
        clock.now += availability.wait()
        assert availability.admit() is Admission.PROBE
        availability.answered()
        availability.answered()
        assert availability.up
        assert availability.admit() is Admission.CALL
    assert transitions == [False, True, False, True]


def test_slots_bound_calls_in_flight():
    slots = CallSlots(2)
    inside = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with slots.hold(30, abandon=lambda: False):
            inside.wait()
            release.wait()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    inside.wait()  # both slots taken
    busy = pytest.raises(TimeoutError, match="all 2 Rucio call slots stayed busy")
    with busy, slots.hold(30, abandon=lambda: True):
        pass
    with pytest.raises(TimeoutError), slots.hold(0, abandon=lambda: False):
        pass
    release.set()
    for thread in holders:
        thread.join()
    with slots.hold(0, abandon=lambda: False):
        pass  # free again
    with pytest.raises(TimeoutError, match="marked down"), slots.hold(30, abandon=lambda: True):
        pass


def test_slots_must_leave_handler_threads_free():
    with pytest.raises(ValidationError, match=r"rucio_max_calls \(4\) must be below workers \(4\)"):
        Settings(workers=4, rucio_max_calls=4)
    assert Settings().rucio_max_calls < Settings().workers
