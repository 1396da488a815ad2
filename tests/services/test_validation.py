"""The validation service: the admission entry point, the crash guard, the selector index."""

import json
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from steward.models.common import DataSelector, names_may_overlap
from steward.services.validation import (
    Problem,
    Severity,
    _guarded,
    _SelectorIndex,
    check_resource,
    validate_paths,
)
from steward.storage.yamlfile import load_text
from support.samples import CAMPAIGN, RETENTION, RULE, patched

ROOT = Path(__file__).resolve().parents[2]
SITES = [
    document
    for path in sorted((ROOT / "sites").glob("*.yaml"))
    for document in yaml.safe_load_all(path.read_text())
]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_valid_body_has_no_problems():
    assert check_resource(patched(RULE, ("metadata", "namespace"), "steward"), SITES, now=NOW) == []


def test_a_body_gets_the_messages_validate_prints_for_a_file(tmp_path):
    broken = patched(RULE, ("spec", "copies"), "2")
    broken = patched(broken, ("spec", "destination"), "site=SLAC")
    broken = patched(broken, ("spec", "lifetime"), "0s")
    path = tmp_path / "rule.yaml"
    path.write_text(yaml.safe_dump(broken))
    from_file = validate_paths([path], ROOT / "sites", now=NOW).problems
    from_body = check_resource(broken, SITES, now=NOW)
    assert [p.message for p in from_body] == [p.message for p in from_file]
    assert [p.field for p in from_body] == ["spec.copies", "spec.lifetime"]
    assert {(p.path, p.line, p.column) for p in from_body} == {(None, None, None)}
    assert from_body[0].format() == (
        "ReplicationRule/x: spec.copies: expected an integer, got the string '2' (write it "
        "without quotes)"
    )


def test_semantic_checks_use_the_live_objects_as_context():
    body = patched(RULE, ("spec", "destination"), "site=SLAC")
    (problem,) = check_resource(body, SITES, now=NOW)
    assert problem.message == (
        "spec.destination: RSE expression 'site=SLAC' matches no RSE declared in sites/"
    )
    assert problem.field == "spec.destination"
    kept = patched(RULE, ("spec", "lifetime"), None)
    kept = patched(kept, ("spec", "selector"), {"scope": "scratch", "match": {}})
    kept = patched(kept, ("metadata", "namespace"), "elsewhere")
    (problem,) = check_resource(RETENTION, [*SITES, kept], now=NOW)
    assert problem.message.startswith(
        "spec.selector: would expire data that ReplicationRule/x (namespace elsewhere) keeps"
    )


def test_existence_is_checked_only_for_the_kinds_given_in_full():
    failed = patched(RETENTION, ("spec", "dataClass"), "FailedCampaignOutputs")
    failed = patched(failed, ("spec", "campaign"), "drp-pilot")
    assert check_resource(failed, SITES, now=NOW) == []
    (problem,) = check_resource(failed, SITES, complete={"Site", "Campaign"}, now=NOW)
    assert problem.message.startswith(
        "spec.campaign: Campaign/drp-pilot does not exist in namespace s"
    )
    campaign = patched(CAMPAIGN, ("metadata", "name"), "drp-pilot")
    context = [*SITES, campaign]
    assert check_resource(failed, context, complete={"Site", "Campaign"}, now=NOW) == []
    rule = patched(RULE, ("spec", "destination"), "site=SLAC")
    assert check_resource(rule, [], complete=(), now=NOW) == []


def test_the_old_version_of_the_body_is_not_a_duplicate():
    body = patched(RULE, ("metadata", "namespace"), "steward")
    assert check_resource(body, [*SITES, body], now=NOW) == []


def test_a_body_that_is_not_a_steward_resource():
    (problem,) = check_resource({"apiVersion": "v1", "kind": "Pod"}, SITES)
    assert problem.message == "apiVersion is 'v1'; Steward resources use 'steward.lsst.io/v1alpha1'"


def test_a_failing_check_becomes_a_located_problem_not_a_crash():
    (document,) = load_text(Path("p.yaml"), "---\nkind: Site\nmetadata: {name: a}\n")

    def broken() -> list[Problem]:
        raise KeyError("boom")

    (problem,) = _guarded(document, broken)
    assert (problem.path, problem.line, problem.column) == (Path("p.yaml"), 2, 1)
    assert problem.severity is Severity.ERROR
    assert problem.message.startswith("internal error while checking this document (KeyError")
    assert "this is a bug in Steward" in problem.message
    assert json.loads(json.dumps(problem.to_json()))["kind"] == "Site"


def test_a_problem_stays_on_one_line():
    problem = Problem(Path("p.yaml"), 1, 2, "bad value 'a\nb\x07'", "Site", "a")
    assert problem.format() == "p.yaml:1:2: Site/a: bad value 'a\\nb\\x07'"


# The index that replaced the comparison of every pair ----------------------------------

_values = st.sampled_from(["raw", "calexp", "LSSTCam", "LATISS"])
_selectors = st.one_of(
    st.builds(
        lambda dids: DataSelector(dids=dids),
        st.lists(st.sampled_from(["raw:a", "raw:b", "raw:c", "drp:a"]), min_size=1, max_size=3),
    ),
    st.builds(
        lambda scope, match: DataSelector(scope=scope, match=match),
        st.sampled_from(["raw", "drp"]),
        st.dictionaries(st.sampled_from(["datatype", "instrument", "run"]), _values, max_size=3),
    ),
    st.builds(
        lambda scope, match, name: DataSelector(scope=scope, match=match, name=name),
        st.sampled_from(["raw", "drp"]),
        st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["datatype", "instrument"]), _values, max_size=2),
        ),
        st.sampled_from(["w46-*", "w47-*", "w46-a", "*-a", "w4*", "*"]),
    ),
)


def _may_overlap(a: DataSelector, b: DataSelector) -> bool:
    """The pairwise rule the index must agree with (tests/models/test_selector_name.py proves
    `names_may_overlap` against every name a pair of patterns could share)."""
    if a.dids is not None and b.dids is not None:
        return bool(set(a.dids) & set(b.dids))
    if a.dids is None and b.dids is None:
        a_match, b_match = a.match or {}, b.match or {}
        return (
            a.scope == b.scope
            and all(b_match.get(k, v) == v for k, v in a_match.items())
            and names_may_overlap(a.name, b.name)
        )
    return False


@settings(max_examples=200, deadline=None)
@given(st.lists(_selectors, max_size=12), _selectors)
def test_the_selector_index_finds_exactly_the_overlapping_selectors(indexed, query):
    index: _SelectorIndex[int] = _SelectorIndex()
    for position, selector in enumerate(indexed):
        index.overlapping(selector)
        index.add(selector, position)
    expected = [i for i, selector in enumerate(indexed) if _may_overlap(selector, query)]
    assert index.overlapping(query) == expected


_odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["0s", "7d", "2026-02-30T00:00:00Z", "America", "(((A", "A|B", "-", "*"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaf_paths(value, (*prefix, index))
    yield prefix


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([RULE, RETENTION, *SITES[:1]]).flatmap(
        lambda body: st.tuples(
            st.just(body), st.sampled_from([p for p in _leaf_paths(body) if p]), _odd
        )
    )
)
def test_any_value_anywhere_gives_problems_never_an_internal_error(case):
    body, path, value = case
    problems = check_resource(patched(body, path, value), SITES, now=NOW)
    assert not [p for p in problems if "internal error" in p.message], problems
    json.dumps([p.to_json() for p in problems])
