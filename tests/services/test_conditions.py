"""Status conditions and status patches (pure functions)."""

from __future__ import annotations

from datetime import timedelta

from steward.services.conditions import status_changes

HEARTBEAT = timedelta(minutes=10)
OLD = {"counts": {"OK": 3}, "lastSyncTime": "2026-11-23T10:00:00Z", "selected": 3}


def test_nothing_new_within_the_heartbeat_writes_nothing() -> None:
    new = {**OLD, "lastSyncTime": "2026-11-23T10:09:59Z"}
    assert status_changes(OLD, new, heartbeat=HEARTBEAT) == {}


def test_nothing_new_for_a_heartbeat_writes_the_sync_time() -> None:
    new = {**OLD, "lastSyncTime": "2026-11-23T10:10:00Z"}
    assert status_changes(OLD, new, heartbeat=HEARTBEAT) == {"lastSyncTime": "2026-11-23T10:10:00Z"}


def test_a_change_writes_it_with_the_sync_time() -> None:
    new = {**OLD, "counts": {"OK": 4}, "lastSyncTime": "2026-11-23T10:00:30Z"}
    assert status_changes(OLD, new, heartbeat=HEARTBEAT) == {
        "counts": {"OK": 4},
        "lastSyncTime": "2026-11-23T10:00:30Z",
    }


def test_a_first_status_is_written_whole() -> None:
    assert status_changes({}, OLD, heartbeat=HEARTBEAT) == OLD


def test_an_unreadable_stored_time_is_overwritten() -> None:
    old = {**OLD, "lastSyncTime": "yesterday"}
    assert status_changes(old, OLD, heartbeat=HEARTBEAT) == {"lastSyncTime": OLD["lastSyncTime"]}
