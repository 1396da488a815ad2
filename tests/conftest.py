"""Test configuration: the real-server fixtures live in tests/support, one module per stack."""

pytest_plugins = [
    "support.campaigns",
    "support.database",
    "support.deployment",
    "support.kube",
    "support.kueue",
    "support.operator",
    "support.rucio",
]
