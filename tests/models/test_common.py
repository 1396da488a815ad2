import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from steward.models.common import (
    INT64_MAX,
    Bool,
    Int,
    Number,
    Resource,
    RSEExpression,
    Timestamp,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("720h", timedelta(hours=720)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7 days", "7", 7, "", "d7", "1.5d", "-1d", "7D", None])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [(timedelta(days=7), "7d"), (timedelta(hours=36), "1d12h"), (timedelta(0), "0s")],
)
def test_format_duration(value, text):
    assert format_duration(value) == text


@given(st.integers(min_value=1, max_value=10**9))
def test_duration_round_trip(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500TiB", 500 * 2**40),
        ("2PB", 2 * 10**15),
        ("800GB", 800 * 10**9),
        ("1.5KiB", 1536),
        ("1024", 1024),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["500 TB of disk", "-1", -1, "1XB", True, "TiB", ""])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=2**62))
def test_size_round_trip(value):
    assert parse_size(format_size(value)) == value


@pytest.mark.parametrize("text", ["0s", "0d0h", "00w", "99999999999999999999999999d", "365001d"])
def test_parse_duration_rejects_zero_and_huge(text):
    with pytest.raises(ValueError, match=r"not a positive duration|longer than 1000 years"):
        parse_duration(text)


def test_size_beyond_int64_is_refused():
    assert parse_size("7EiB") == 7 * 2**60 <= INT64_MAX
    with pytest.raises(ValueError, match="more than 8 EiB"):
        parse_size("9EiB")
    with pytest.raises(ValueError, match="more than 8 EiB"):
        parse_size(2**63)


class Strict(BaseModel):
    count: Int = 0
    flag: Bool = False
    fraction: Number = 0.5
    at: Timestamp | None = None


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("count", "2", "expected an integer, got the string '2' (write it without quotes)"),
        ("count", True, "expected an integer, got the boolean true"),
        ("count", 2.5, "expected an integer, got the number 2.5"),
        ("count", math.nan, "expected an integer, got NaN (not a number)"),
        ("count", math.inf, "expected an integer, got infinity"),
        ("count", 2**63, "does not fit in 64 bits"),
        ("count", float(2**60), "expected an integer"),
        ("count", None, "expected an integer, got null"),
        ("flag", "true", "expected true or false, got the string 'true'"),
        ("flag", 1, "expected true or false, got the number 1"),
        ("fraction", math.nan, "expected a number, got NaN (not a number)"),
        ("fraction", "0.9", "expected a number, got the string '0.9'"),
        ("fraction", False, "expected a number, got the boolean false"),
        ("at", 1700000000, "expected an RFC 3339 time"),
        ("at", "2026-11-01", "needs a time zone"),
        ("at", "2026-12-01T08:00:00", "needs a time zone"),
        ("at", "2026-12-01 08:00:00Z", "is not an RFC 3339 time"),
        ("at", "2026-02-30T08:00:00Z", "is not a real time: day is out of range for month"),
        ("at", "2026-12-01T08:00:60Z", "is not a real time"),
        ("at", datetime(2026, 12, 1), "needs a time zone"),  # noqa: DTZ001 - the point
    ],
)
def test_strict_types_refuse_what_the_api_server_refuses(field, value, fragment):
    with pytest.raises(ValidationError) as info:
        Strict.model_validate({field: value})
    (error,) = info.value.errors()
    assert fragment in error["msg"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("count", 2, 2),
        ("count", 2.0, 2),
        ("count", -(2**63), -(2**63)),
        ("flag", True, True),
        ("fraction", 1, 1.0),
        ("at", "2026-12-01T08:00:00Z", datetime(2026, 12, 1, 8, tzinfo=UTC)),
        ("at", "2026-12-01t08:00:00.123456789+01:00", datetime(2026, 12, 1, 7, 0, 0, 123456, UTC)),
    ],
)
def test_strict_types_accept_what_the_api_server_accepts(field, value, expected):
    assert getattr(Strict.model_validate({field: value}), field) == expected


def _resource(**metadata):
    return {"apiVersion": "steward.lsst.io/v1alpha1", "kind": "X", "metadata": metadata}


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({"name": "a", "namepsace": "s"}, "Extra inputs are not permitted"),
        ({"name": "rule-"}, "String should match pattern"),
        ({"name": "a" * 64}, "at most 63 characters"),
        ({"name": "a", "namespace": "Steward"}, "is not a DNS label"),
        ({"name": "a", "namespace": "a" * 64}, "at most 63 characters"),
        ({"name": "a", "labels": {"bad key": "x"}}, "label key 'bad key' is not valid"),
        ({"name": "a", "labels": {"Example.com/k": "x"}}, "is not a DNS subdomain"),
        ({"name": "a", "labels": {"a/b/c": "x"}}, "at most one '/'"),
        ({"name": "a", "labels": {"/k": "x"}}, "the prefix before '/' is empty"),
        ({"name": "a", "labels": {"k": "-x"}}, "label value '-x' is not valid"),
        ({"name": "a", "labels": {"k": "x" * 64}}, "label value"),
        ({"name": "a", "labels": {"k": "r\u0430w"}}, "U+0430 CYRILLIC SMALL LETTER A"),
        ({"name": "a", "annotations": {"bad key": "x"}}, "annotation key 'bad key'"),
        ({"name": "a", "annotations": {"k": "x" * 262144}}, "256 KiB"),
        ({"name": "a", "generation": 2**63}, "does not fit in 64 bits"),
        ({"name": "a", "creationTimestamp": "yesterday"}, "not an RFC 3339 time"),
    ],
)
def test_metadata_is_checked_as_the_api_server_checks_it(metadata, fragment):
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        Resource.model_validate(_resource(**metadata))


def test_metadata_accepts_what_the_api_server_sets():
    live = _resource(
        name="a",
        namespace="steward",
        labels={"app.kubernetes.io/managed-by": "steward-apply", "empty": ""},
        annotations={"Steward.LSST.io/Git-Commit": "abc"},
        uid="0b0e",
        resourceVersion="42",
        generation=3,
        creationTimestamp="2026-12-01T08:00:00Z",
        finalizers=["steward.lsst.io/finalizer"],
        managedFields=[{"manager": "steward", "operation": "Apply"}],
    )
    assert Resource.model_validate(live).metadata.generation == 3


def test_rse_expression_messages_never_echo_a_long_value():
    class Rule(BaseModel):
        destination: RSEExpression

    for value in ["A|" * 60_000 + "A", "(" * 51 + "A" + ")" * 51, None, ["A"]]:
        with pytest.raises(ValidationError) as info:
            Rule.model_validate({"destination": value})
        assert len(info.value.errors()[0]["msg"]) < 300
