"""A selector's DID name pattern: what it accepts, how it combines, what it matches.

Pure tests of the model and of the two translations of a pattern (the anchored regular
expression a subscription and the listing's case check use, and the overlap judged from two
patterns alone). The same patterns against the real Rucio server are in
tests/services/test_name_selection.py, against the real API server in
tests/models/test_admission_parity.py.
"""

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from steward.models.common import DataSelector, name_wildcard_regex, names_may_overlap
from steward.services.validation import validate_paths

ROOT = Path(__file__).resolve().parents[2]


def _error(selector):
    with pytest.raises(ValidationError) as caught:
        DataSelector.model_validate(selector)
    (error,) = caught.value.errors()
    return error


@pytest.mark.parametrize(
    "pattern",
    [
        "LSSTCam-20261122-*",
        "w46-*",
        "*",
        "*_calexp.fits",
        "/lsst/raw/*/2026*",
        "exact.name_v1",
        "a" * 250,
    ],
)
def test_rucio_name_characters_and_stars_are_accepted(pattern):
    selector = DataSelector.model_validate({"scope": "raw", "name": pattern})
    assert selector.name == pattern
    assert selector.match is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "the name pattern is empty"),
        ("raw *", "' ' at position 4 is not allowed there"),
        ("_raw*", "'_' at position 1 is not allowed there"),
        (".hidden*", "'.' at position 1 is not allowed there"),
        ("-x", "'-' at position 1 is not allowed there"),
        ("raw%", "'%' at position 4"),  # Rucio's own LIKE wildcard: not a name character
        ("raw?", "'?' at position 4"),
        ("raw[12]", "'[' at position 4"),
        ("raw\n", "'\\n' at position 4"),
        ("r\u00e9*", "'\u00e9' at position 2"),
        ("a" * 251, "251 characters long; Rucio names have at most 250"),
        (3, "expected a DID name pattern (a string), got the number 3"),
    ],
)
def test_other_patterns_are_refused_naming_the_field(pattern, message):
    error = _error({"scope": "raw", "name": pattern})
    assert error["loc"] == ("name",)
    assert message in error["msg"], error["msg"]


def test_a_name_selects_with_a_scope_alone_or_with_metadata():
    alone = DataSelector.model_validate({"scope": "user.kcarter", "name": "w46-*"})
    both = DataSelector.model_validate(
        {"scope": "raw", "name": "LSSTCam-*", "match": {"datatype": "raw"}, "exclude": [{"a": "b"}]}
    )
    assert (alone.dids, alone.match, alone.name) == (None, None, "w46-*")
    assert (both.match, both.name) == ({"datatype": "raw"}, "LSSTCam-*")


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"name": "w46-*"}, "a filter ('name') needs the 'scope' to search"),
        ({"match": {"datatype": "raw"}}, "a filter ('match') needs the 'scope' to search"),
        ({"scope": "raw"}, "give 'dids' (explicit list), or 'scope' with 'match'"),
        (
            {"dids": ["raw:a"], "name": "a*"},
            "'dids' (explicit list) cannot be combined with 'name'",
        ),
        (
            {"dids": ["raw:a"], "match": {"datatype": "raw"}},
            "'dids' (explicit list) cannot be combined with 'match'",
        ),
        ({"scope": "raw", "match": {"name": "a"}}, "select names with the 'name' field"),
        ({"dids": ["raw:a"], "exclude": [{"a": "b"}]}, "'exclude' applies to filters only"),
    ],
)
def test_the_sources_of_a_selection_combine_as_documented(selector, message):
    error = _error(selector)
    assert message in error["msg"], error["msg"]


def test_steward_validate_names_the_field_and_its_line(tmp_path):
    policy = tmp_path / "scratch.yaml"
    policy.write_text(
        "apiVersion: steward.lsst.io/v1alpha1\n"
        "kind: RetentionPolicy\n"
        "metadata:\n"
        "  name: scratch\n"
        "  namespace: steward\n"
        "spec:\n"
        "  selector:\n"
        "    scope: user.kcarter\n"
        "    name: 'w46 *'\n"
        "  lifetime: 21d\n"
    )
    result = validate_paths([policy], ROOT / "sites")
    (problem,) = result.problems
    assert problem.format().startswith(
        f"{policy}:9:11: RetentionPolicy/scratch: spec.selector.name: 'w46 *' is not a Rucio "
        "name pattern: ' ' at position 4 is not allowed there"
    ), problem.format()


@pytest.mark.parametrize(
    ("pattern", "names", "others"),
    [
        ("w46-*", ["w46-", "w46-jointcal", "w46-a.b"], ["w47-a", "xw46-a", "W46-a"]),
        ("LSSTCam-20261122-*", ["LSSTCam-20261122-000123"], ["LSSTCam-20261123-000123"]),
        ("*_calexp", ["v1_calexp", "_calexp"], ["v1_calexp2", "v1xcalexp"]),
        ("a.b*", ["a.b", "a.bc"], ["axb", "axbc"]),  # '.' is a dot, not any character
        ("a_b*", ["a_b1"], ["axb1"]),  # '_' is an underscore, not SQL's any character
        ("run-1", ["run-1"], ["run-10", "run-"]),
        ("*", ["x", "/a/b"], []),
    ],
)
def test_the_regex_of_a_pattern_matches_exactly_its_names(pattern, names, others):
    # The transmogrifier applies a subscription's pattern with re.match (start only).
    regex = name_wildcard_regex(pattern)
    assert [n for n in names if re.match(regex, n)] == names
    assert [n for n in others if re.match(regex, n)] == []


_patterns = st.text(alphabet="ab*", min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(_patterns, _patterns)
def test_two_patterns_overlap_exactly_when_some_name_matches_both(first, second):
    # Any shared name is at most as long as both patterns together, over their own letters.
    longest = len(first) + len(second)
    candidates = (
        "".join(letters)
        for size in range(longest + 1)
        for letters in itertools.product("ab", repeat=size)
    )
    both = [re.compile(name_wildcard_regex(p)) for p in (first, second)]
    shared = any(all(r.fullmatch(name) for r in both) for name in candidates)
    assert names_may_overlap(first, second) == shared
    assert names_may_overlap(None, first)
    assert names_may_overlap(second, None)
