"""Waiting in tests: on a condition, with a deadline, failing the test with what was awaited."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from steward.testing.childprocess import poll

T = TypeVar("T")


def until(
    what: str,
    probe: Callable[[], T],
    *,
    timeout: float = 60.0,
    between: Callable[[], object] | None = None,
) -> T:
    """Poll ``probe`` until truthy and return it (running ``between`` each round, e.g. Rucio
    daemons); fail the test at the deadline, naming ``what`` and the last value."""
    try:
        return poll(probe, timeout=timeout, what=what, between=between)
    except TimeoutError as error:
        pytest.fail(str(error))
