"""The heartbeat: how often a status whose only change is ``lastSyncTime`` is written anyway."""

from datetime import timedelta

import kopf
from hypothesis import given, settings
from hypothesis import strategies as st

from steward.handlers.common import heartbeat, post
from steward.services.site import Outcome

FLOOR = timedelta(seconds=600)


def test_a_kind_of_few_resources_keeps_ten_intervals():
    assert heartbeat(0, floor=FLOOR, writes=2.0) == FLOOR
    assert heartbeat(1_200, floor=FLOOR, writes=2.0) == FLOOR


def test_past_the_floor_the_period_grows_with_the_resources():
    assert heartbeat(10_000, floor=FLOOR, writes=2.0) == timedelta(seconds=5_000)
    assert heartbeat(10_000, floor=FLOOR, writes=20.0) == FLOOR


@settings(deadline=None)  # pure, but a loaded CI machine can take 200 ms for one example
@given(
    resources=st.integers(min_value=0, max_value=10_000_000),
    writes=st.floats(min_value=0.01, max_value=1_000),
)
def test_the_heartbeat_never_costs_more_writes_a_second_than_its_budget(resources, writes):
    period = heartbeat(resources, floor=FLOOR, writes=writes)
    assert period >= FLOOR
    assert resources / period.total_seconds() <= writes * (1 + 1e-9)


def _post(stored_sync, new_sync, every):
    """The patch `post` fills when only ``lastSyncTime`` moved, from ``stored`` to ``new``."""
    body = {"metadata": {"uid": "u"}, "status": {"lastSyncTime": stored_sync, "selected": 1}}
    patch = kopf.Patch()
    post(body, Outcome({"lastSyncTime": new_sync, "selected": 1}), patch, kopf.Memo(), every=every)
    return dict(patch)


def test_post_writes_an_unchanged_status_once_the_kinds_heartbeat_has_passed():
    stored, later = "2026-12-01T10:00:00Z", "2026-12-01T10:20:00Z"  # 1,200 s apart
    assert _post(stored, later, heartbeat(100, floor=FLOOR, writes=2.0)) == {
        "status": {"lastSyncTime": later, "selected": 1}
    }
    assert _post(stored, later, heartbeat(10_000, floor=FLOOR, writes=2.0)) == {}
