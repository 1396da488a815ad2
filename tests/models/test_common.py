from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steward.models.common import format_duration, format_size, parse_duration, parse_size


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


@given(st.integers(min_value=0, max_value=10**9))
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
