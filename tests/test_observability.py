"""Per-resource metric series: only what carries information, and gone with the resource."""

from __future__ import annotations

import secrets

from prometheus_client import REGISTRY

from steward.models.replication import RuleState
from steward.observability import forget_rule_states, observe_backlog, observe_rule_states


def _states(namespace: str, name: str) -> dict[str, float]:
    """The ``steward_rucio_rules`` series of one resource, by state."""
    return {
        state.value: value
        for state in RuleState
        if (
            value := REGISTRY.get_sample_value(
                "steward_rucio_rules", {"namespace": namespace, "name": name, "state": state.value}
            )
        )
        is not None
    }


def test_only_states_with_rules_have_a_series():
    namespace, name = "metrics", f"rr-{secrets.token_hex(3)}"
    counts = dict.fromkeys((s.value for s in RuleState), 0)
    observe_rule_states(namespace, name, {**counts, "OK": 3, "REPLICATING": 2})
    assert _states(namespace, name) == {"OK": 3, "REPLICATING": 2}


def test_a_state_that_empties_loses_its_series():
    namespace, name = "metrics", f"rr-{secrets.token_hex(3)}"
    observe_rule_states(namespace, name, {"OK": 1, "REPLICATING": 2, "STUCK": 0})
    observe_rule_states(namespace, name, {"OK": 3, "REPLICATING": 0, "STUCK": 0})
    assert _states(namespace, name) == {"OK": 3}


def test_forgetting_a_resource_drops_its_series_and_no_other():
    namespace, name, other = "metrics", f"rr-{secrets.token_hex(3)}", f"rr-{secrets.token_hex(3)}"
    for each in (name, other):
        observe_rule_states(namespace, each, {"OK": 1, "STUCK": 1})
        observe_backlog(namespace, each, {"active": True, "backlog": 1})
    forget_rule_states(namespace, name)
    assert _states(namespace, name) == {}
    assert (
        REGISTRY.get_sample_value(
            "steward_replication_backlog_rules",
            {"namespace": namespace, "name": name, "phase": "catching_up"},
        )
        is None
    )
    assert _states(namespace, other) == {"OK": 1, "STUCK": 1}
    assert (
        REGISTRY.get_sample_value(
            "steward_replication_backlog_rules",
            {"namespace": namespace, "name": other, "phase": "backlog"},
        )
        == 1
    )
