"""Selecting DIDs by metadata that mixes DID columns and custom (JSON) keys, as policies do."""

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
