"""Selecting DIDs by metadata that mixes DID columns and custom (JSON) keys, as policies do."""

from datetime import UTC, datetime

import pytest

from steward.exceptions import RucioPermanentError

pytestmark = pytest.mark.rucio


def test_column_and_custom_keys_together(rucio_server, rucio_storage, rucio_data):
    """policies/ select e.g. datatype (a DID column) and exclude archive (a custom key).

    Rucio refuses one filter mixing keys of two metadata plugins; the adapter lists each key
    on its own and intersects. On SQLite custom keys do not exist at all, which Rucio says.
    """
    raw = rucio_data.dataset(meta={"datatype": "raw"})
    kept_out = rucio_data.dataset(meta={"datatype": "raw"})
    rucio_data.dataset(meta={"datatype": "calexp"})
    if rucio_server.database_url is None:
        with pytest.raises(RucioPermanentError, match="archive"):
            rucio_storage.set_metadata(kept_out, {"archive": "false"})
        assert rucio_storage.list_dids(rucio_data.scope, {"datatype": "raw"}) == sorted(
            [raw, kept_out]
        )
        return
    rucio_storage.set_metadata(raw, {"instrument": "LSSTCam"})
    rucio_storage.set_metadata(kept_out, {"instrument": "LSSTCam", "archive": "false"})
    selected = rucio_storage.list_dids(
        rucio_data.scope,
        {"datatype": "raw", "instrument": "LSSTCam"},
        exclude=[{"archive": "false"}],
    )
    assert selected == [raw]


def test_new_dids_by_column_keys_are_bounded_by_creation(rucio_storage, rucio_data):
    old = rucio_data.dataset(meta={"datatype": "raw"})
    mark = datetime.now(UTC)
    new = rucio_data.dataset(meta={"datatype": "raw"})
    rucio_data.dataset(meta={"datatype": "calexp"})
    assert rucio_storage.list_dids(rucio_data.scope, {"datatype": "raw"}) == sorted([old, new])
    assert rucio_storage.list_new_dids(rucio_data.scope, {"datatype": "raw"}, since=mark) == [new]
    # Exclusions are checked on the new DIDs, by name.
    assert (
        rucio_storage.list_new_dids(
            rucio_data.scope, {"datatype": "raw"}, since=mark, exclude=[{"datatype": "raw"}]
        )
        == []
    )


def test_new_dids_mixing_plugins_see_custom_metadata_changes(
    rucio_server, rucio_storage, rucio_data
):
    """Both plugins' keys: new DIDs, and older ones whose custom metadata changed, match.

    The custom (JSON) plugin's rows carry their own update time, so a DID tagged
    ``instrument=LSSTCam`` after the mark is found; its DID-column keys are then checked by
    name (a calexp tagged so is not selected). Custom keys need PostgreSQL.
    """
    if rucio_server.database_url is None:  # SQLite: Rucio's JSON metadata plugin is off
        with pytest.raises(RucioPermanentError, match="instrument"):
            rucio_storage.list_new_dids(
                rucio_data.scope, {"instrument": "LSSTCam"}, since=datetime.now(UTC)
            )
        return
    raw, cam = {"datatype": "raw"}, {"instrument": "LSSTCam"}
    before = rucio_data.dataset(meta=raw)
    rucio_storage.set_metadata(before, cam)
    retagged = rucio_data.dataset(meta=raw)
    rucio_storage.set_metadata(retagged, {"instrument": "LATISS"})
    other_type = rucio_data.dataset(meta={"datatype": "calexp"})
    rucio_storage.set_metadata(other_type, {"instrument": "LATISS"})
    mark = datetime.now(UTC)
    new = rucio_data.dataset(meta={**raw, **cam})
    rucio_data.dataset(meta={**raw, "instrument": "LATISS"})
    excluded = rucio_data.dataset(meta={**raw, **cam, "archive": "false"})
    rucio_storage.set_metadata(retagged, cam)
    rucio_storage.set_metadata(other_type, cam)

    match = {**raw, **cam}
    found = rucio_storage.list_new_dids(
        rucio_data.scope, match, since=mark, exclude=[{"archive": "false"}]
    )
    assert found == sorted([new, retagged])
    full = rucio_storage.list_dids(rucio_data.scope, match, exclude=[{"archive": "false"}])
    assert full == sorted([before, new, retagged])
    assert excluded not in full


def test_custom_keys_with_a_creation_bound(rucio_server, rucio_storage, rucio_data):
    """The OODS window lists ``instrument`` (custom) with ``created_after``: the bound is a
    DID column (``created_at``), so it goes with the column keys, never in the custom filter
    (Rucio refuses a filter mixing plugins)."""
    raw = rucio_data.dataset(meta={"datatype": "raw"})
    if rucio_server.database_url is None:
        bound = {"datatype": "raw", "created_after": "2000-01-01T00:00:00"}
        assert rucio_storage.list_dids(rucio_data.scope, bound) == [raw]
        return
    rucio_storage.set_metadata(raw, {"instrument": "LATISS"})
    match = {"datatype": "raw", "instrument": "LATISS"}
    past = {**match, "created_after": "2000-01-01T00:00:00"}
    future = {**match, "created_after": "2999-01-01T00:00:00"}
    assert rucio_storage.list_dids(rucio_data.scope, past) == [raw]
    assert rucio_storage.list_dids(rucio_data.scope, future) == []
