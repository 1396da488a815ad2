"""Steward's parse of Rucio's answers gives what Rucio's own client parser gives."""

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rucio.common.utils import parse_response

from steward.storage.rucio import RuleSpec
from steward.storage.rucio.responses import DATE_FORMAT, parse, rucio_date
from steward.storage.rucio.types import Rule

dates = st.datetimes(
    min_value=datetime(1970, 1, 1),  # noqa: DTZ001 - Rucio's dates are naive UTC
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
).map(lambda value: value.strftime(DATE_FORMAT))
"""Rucio's dates, as its server writes them."""
texts = st.one_of(
    dates,
    st.text(max_size=30),
    st.text(max_size=10).map(lambda text: f"{text} UTC"),  # says UTC, is no date
    st.just("Mon, 31 Feb 2026 10:00:00 UTC"),  # the format, not a day
)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(deadline=None)  # a loaded CI machine: the first example also imports _strptime
@given(st.dictionaries(st.text(max_size=12), values, max_size=8))
def test_any_document_parses_as_rucios_client_parses_it(document):
    text = json.dumps(document)
    ours, theirs = parse(text), parse_response(text)
    assert ours == theirs
    assert repr(ours) == repr(theirs)  # the same types too: a date is a naive datetime


def test_a_date_is_parsed_once_for_every_document_that_repeats_it():
    text = datetime(2026, 12, 2, 3, 13, 16, 123456, tzinfo=UTC).strftime(DATE_FORMAT)
    first = parse(json.dumps({"created_at": text}))["created_at"]
    before = rucio_date.cache_info().hits
    again = parse(json.dumps([{"updated_at": text}, {"updated_at": text}]))
    assert rucio_date.cache_info().hits == before + 2
    assert first == again[0]["updated_at"] == datetime(2026, 12, 2, 3, 13, 16)  # noqa: DTZ001


@pytest.mark.rucio
def test_a_listing_reads_as_with_rucios_own_client(rucio_storage, rucio_data, rucio_cfg):
    from rucio.client import Client  # noqa: PLC0415 - after RUCIO_CONFIG is set

    dids = [rucio_data.dataset() for _ in range(3)]
    rucio_storage.add_rules(dids, RuleSpec("NCSA_DISK", comment=rucio_data.comment))
    asked = sum(rucio_date.cache_info()[:2])
    ours = rucio_storage.list_rules(comment=rucio_data.comment)
    assert sum(rucio_date.cache_info()[:2]) >= asked + 6  # Steward's client used Steward's parse
    filters = {"account": rucio_storage.account, "comments": rucio_data.comment}
    theirs = [Rule.from_rucio(row) for row in Client().list_replication_rules(filters)]
    assert len(ours) == 3
    assert sorted(ours, key=lambda rule: rule.id) == sorted(theirs, key=lambda rule: rule.id)
    assert all(rule.created_at is not None and rule.updated_at is not None for rule in ours)
