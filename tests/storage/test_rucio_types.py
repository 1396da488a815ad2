"""`Rule.from_rucio`: what the rule snapshot keeps of each rule Rucio lists."""

import json

from steward.models.replication import RuleState
from steward.storage.rucio.types import Rule

_RULE = {
    "id": "530f1379a35340d59013a270551248c6",
    "scope": "raw",
    "name": "ds-00001",
    "account": "steward",
    "rse_expression": "NCSA_DISK",
    "copies": 1,
    "state": "OK",
    "locks_ok_cnt": 1,
    "comments": "steward:7b51d4ffe75b260fbc200c11",
    "grouping": "DATASET",
    "activity": "Data Consolidation",
    "source_replica_expression": "BASE_DISK",
}


def _listed(name):
    """A rule as Rucio's client returns it: freshly parsed JSON, every string a new object."""
    return Rule.from_rucio(json.loads(json.dumps({**_RULE, "name": name})))


def test_rules_share_the_strings_most_rules_repeat():
    first, second = _listed("ds-00001"), _listed("ds-00002")
    for field in (
        "scope",
        "account",
        "rse_expression",
        "comment",
        "grouping",
        "activity",
        "source_replica_expression",
    ):
        assert getattr(first, field) is getattr(second, field), field
    assert first.name == "ds-00001"
    assert second.name == "ds-00002"
    assert first.state is RuleState.OK
    assert first.locks_ok == 1


def test_absent_optional_strings_stay_none():
    data = {k: v for k, v in _RULE.items() if k not in {"comments", "activity"}}
    data["source_replica_expression"] = None
    rule = Rule.from_rucio(data)
    assert rule.comment is None
    assert rule.activity is None
    assert rule.source_replica_expression is None
