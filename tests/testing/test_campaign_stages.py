"""Steward's kwok Stages for campaign pods: one outcome rule, never a random choice."""

import yaml

from steward.testing.controlplane import CAMPAIGN_STAGES


def _stages():
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(CAMPAIGN_STAGES.read_text())}


def test_the_outcome_rule_is_the_same_in_every_stage():
    stages = _stages()
    outcomes = {
        name: next(
            e for e in stage["spec"]["selector"]["matchExpressions"] if "def inv" in e["key"]
        )
        for name, stage in stages.items()
        if name.startswith("steward-invocation-")
    }
    assert {o["values"][0] for o in outcomes.values()} == {"complete", "exit", "oom"}
    assert len({o["key"] for o in outcomes.values()}) == 1


def test_every_stage_outweighs_kwoks_own_and_selects_campaign_pods():
    for stage in _stages().values():
        assert stage["spec"]["weight"] >= 1
        keys = [e["key"] for e in stage["spec"]["selector"]["matchExpressions"]]
        assert '.metadata.labels["steward.lsst.io/campaign"]' in keys
