"""Test configuration: the real-server fixtures live in tests/support, one module per stack."""

import pytest

pytest_plugins = [
    "support.campaigns",
    "support.database",
    "support.deployment",
    "support.handlers",
    "support.kube",
    "support.kueue",
    "support.operator",
    "support.rucio",
    "support.scheduling",
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``long`` first, keeping pytest-randomly's order otherwise.

    Under ``pytest -n`` (``make test``) a test of several minutes started last would run alone
    at the end; started first, the rest of the suite runs beside it. Runs after
    pytest-randomly's shuffle (``trylast``), so the order is still the seed's, and the same in
    every worker, as pytest-xdist requires.
    """
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
