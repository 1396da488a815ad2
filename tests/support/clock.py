"""A fake clock for code that takes ``clock`` and ``sleep``: time is asserted, never waited."""

from __future__ import annotations


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
