"""A fake clock for code that takes ``clock`` and ``sleep``: time is asserted, never waited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeTime:
    """A monotonic clock that moves only when slept on (or moved by the test)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class StepClock:
    """An injected wall clock: every call returns a time one second after the last."""

    def __init__(self, start: datetime = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now
