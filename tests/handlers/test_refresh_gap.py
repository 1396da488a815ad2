"""`steward_refresh_gap_seconds`: how long a resource went between passes, at its refresh pass."""

import kopf
from prometheus_client import REGISTRY

from steward.handlers.common import passing
from support.clock import FakeTime


def _observed(kind):
    labels = {"kind": kind}
    count = REGISTRY.get_sample_value("steward_refresh_gap_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("steward_refresh_gap_seconds_sum", labels) or 0.0
    return count, total


def test_a_refresh_pass_observes_the_time_since_the_objects_last_pass():
    kind = "GapTestKind"  # a label no other test observes
    fake = FakeTime()
    memo = kopf.Memo()
    assert passing(kind, memo, refresh=True, clock=fake.clock) is None  # nothing before it
    fake.now += 45
    assert passing(kind, memo, refresh=False, clock=fake.clock) is None  # a change handler's
    fake.now += 70
    assert passing(kind, memo, refresh=True, clock=fake.clock) == 70
    fake.now += 200
    assert passing(kind, memo, refresh=True, clock=fake.clock) == 200
    assert _observed(kind) == (2.0, 270.0)


def test_each_object_has_its_own_last_pass():
    kind = "GapTestKindTwo"
    fake = FakeTime()
    first, second = kopf.Memo(), kopf.Memo()
    passing(kind, first, refresh=False, clock=fake.clock)
    fake.now += 10
    passing(kind, second, refresh=False, clock=fake.clock)
    fake.now += 5
    assert passing(kind, first, refresh=True, clock=fake.clock) == 15
    assert passing(kind, second, refresh=True, clock=fake.clock) == 5
