import pytest
from hypothesis import given
from hypothesis import strategies as st

from steward.models.rse_expression import (
    MAX_DEPTH,
    MAX_LENGTH,
    Operation,
    RSEExpressionError,
    canonical,
    evaluate,
    parse,
)

RSES = {
    "NCSA_DISK": {"site": "NCSA", "type": "DISK", "tier": 1},
    "NCSA_TAPE": {"site": "NCSA", "type": "TAPE", "tier": 1, "custodial": True},
    "IN2P3_TAPE": {"site": "IN2P3", "type": "TAPE", "tier": 1, "custodial": True},
    "IN2P3_DISK": {"site": "IN2P3", "type": "DISK", "tier": 1},
    "BASE_DISK": {"site": "BASE", "type": "DISK", "tier": 2, "dac": True},
    "BASE_OODS": {"site": "BASE", "type": "CACHE", "tier": 3},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("NCSA_TAPE", "NCSA_TAPE"),
        ("site=IN2P3&type=TAPE", "site=IN2P3&type=TAPE"),
        ("type=TAPE&site=IN2P3", "site=IN2P3&type=TAPE"),
        (" (site=IN2P3) & ( type=TAPE ) ", "site=IN2P3&type=TAPE"),
        ("B|A|B", "A|B"),
        ("A|B&C", "C&(A|B)"),
        ("(A|B)&C", "C&(A|B)"),
        ("A\\B", "A\\B"),
        ("A\\B\\C", "(A\\B)\\C"),
        ("*\\type=CACHE", "*\\type=CACHE"),
        ("tier<2&custodial", "custodial&tier<2"),
        ("tier>1.5", "tier>1.5"),
        ("((A))", "A"),
        ("A-1.x_y", "A-1.x_y"),
    ],
)
def test_canonical_forms(expression, expected):
    assert canonical(expression) == expected
    assert canonical(expected) == expected


@pytest.mark.parametrize(
    ("expression", "column", "fragment"),
    [
        ("", 1, "empty"),
        ("   ", 1, "empty"),
        ("site=IN2P3&&type=TAPE", 12, "expected an RSE name"),
        ("(site=NCSA", 11, "never closed"),
        ("site=NCSA)", 10, "unbalanced"),
        ("site=", 6, "no value"),
        ("tier<high", 6, "needs a number"),
        ("A B", 3, "expected an operator"),
        ("A|", 3, "ends where"),
        ("A|$", 3, "unexpected '$'"),
        ("&A", 1, "unexpected '&'"),
    ],
)
def test_syntax_errors_report_the_column(expression, column, fragment):
    with pytest.raises(RSEExpressionError) as info:
        parse(expression)
    assert info.value.column == column
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*", set(RSES)),
        ("NCSA_TAPE", {"NCSA_TAPE"}),
        ("site=IN2P3&type=TAPE", {"IN2P3_TAPE"}),
        ("custodial", {"NCSA_TAPE", "IN2P3_TAPE"}),
        ("custodial=true", {"NCSA_TAPE", "IN2P3_TAPE"}),
        ("tier<2", {"NCSA_DISK", "NCSA_TAPE", "IN2P3_TAPE", "IN2P3_DISK"}),
        ("tier>2", {"BASE_OODS"}),
        ("*\\type=CACHE\\type=TAPE", {"NCSA_DISK", "IN2P3_DISK", "BASE_DISK"}),
        ("site=SLAC", set()),
        ("site=BASE|site=NCSA&type=DISK", {"NCSA_DISK", "BASE_DISK"}),
    ],
)
def test_evaluate(expression, expected):
    assert evaluate(expression, RSES) == expected


_atoms = st.sampled_from(
    ["NCSA_TAPE", "BASE_DISK", "site=NCSA", "type=TAPE", "tier<2", "tier>1", "custodial", "*"]
)


def _expressions(depth: int = 3) -> st.SearchStrategy[str]:
    return st.recursive(
        _atoms,
        lambda inner: st.tuples(inner, st.sampled_from(["|", "&", "\\"]), inner).map(
            lambda t: f"({t[0]}){t[1]}({t[2]})"
        ),
        max_leaves=depth * 3,
    )


@given(_expressions())
def test_canonical_is_idempotent_and_preserves_meaning(expression):
    form = canonical(expression)
    assert canonical(form) == form
    assert evaluate(form, RSES) == evaluate(expression, RSES)


def test_parentheses_nest_at_most_max_depth():
    assert canonical("(" * MAX_DEPTH + "A" + ")" * MAX_DEPTH) == "A"
    with pytest.raises(RSEExpressionError, match="nest deeper than 50 levels") as info:
        parse("(" * (MAX_DEPTH + 1) + "A" + ")" * (MAX_DEPTH + 1))
    assert info.value.column == MAX_DEPTH + 1


def test_longer_than_rucio_stores_is_refused_before_parsing():
    with pytest.raises(RSEExpressionError, match="129,001 characters long; Rucio stores at most"):
        parse("A" * 129_001)


@pytest.mark.parametrize(("operator", "count"), [("|", 600), ("&", 600), ("\\", 50)])
def test_longest_chains_need_no_recursion(operator, count):
    terms = [f"R{i:03d}" for i in range(count)]
    expression = operator.join(terms)
    form = canonical(expression)
    assert canonical(form) == form
    assert (
        evaluate(expression, {"R001": {}, "R002": {}})
        == {
            "|": {"R001", "R002"},
            "&": set(),
            "\\": set(),
        }[operator]
    )


def test_long_alternation_is_a_deep_tree_evaluated_without_recursion():
    expression = "A" + "".join(f"{'|&'[i % 2]}R{i}" for i in range(1, 500))
    node = parse(expression)
    assert isinstance(node, Operation)
    assert evaluate(node, {"A": {}, "R1": {}}) == set()
    assert evaluate("A" + "|R1&A" * 500, {"A": {}, "R1": {}}) == {"A"}


def test_canonical_form_must_be_accepted_back():
    with pytest.raises(RSEExpressionError, match="nests parentheses 51 deep"):
        canonical("\\".join(["A"] * 53))


def test_canonical_form_longer_than_rucio_stores_is_refused():
    expression = "A" + "".join(f"{'|&'[i % 2]}B" for i in range(1, 1400))
    assert len(expression) <= MAX_LENGTH
    with pytest.raises(RSEExpressionError, match="canonical form Steward sends to Rucio"):
        canonical(expression)


def test_a_look_alike_letter_is_named_by_code_point():
    with pytest.raises(RSEExpressionError) as info:
        parse("site=IN2\u04203")
    assert "U+0420 CYRILLIC CAPITAL LETTER ER" in str(info.value)
    assert info.value.column == 9
