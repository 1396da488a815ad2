"""The Rucio verbs of the operations toolkit (find, ingest, drill), against the real server."""

import gc
import os
import tracemalloc
import zlib

import pytest

from steward.exceptions import ConfigurationError, RucioNotFoundError, RucioPermanentError
from steward.storage.checksums import file_checksums
from steward.storage.rucio import File

pytestmark = pytest.mark.rucio


def _datasets(rucio_storage, scope, count, *, name_length=200):
    """``count`` empty datasets with long names, in bulk calls; their names."""
    names = [f"ds-{i:05d}-".ljust(name_length, "x") for i in range(count)]
    client = rucio_storage._client()  # test data in bulk, as Rucio's own tests add it
    for start in range(0, count, 500):
        client.add_dids(
            [{"scope": scope, "name": n, "type": "DATASET"} for n in names[start : start + 500]]
        )
    return names


def _peak(action):
    """Peak Python memory (bytes) allocated while ``action`` runs, and its result."""
    gc.collect()
    tracemalloc.start()
    try:
        result = action()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_iter_dids_streams_a_scope_in_the_memory_of_a_page(rucio_storage, rucio_data):
    """Reading the first results of a large listing holds a page, not the whole answer.

    The answer here is ~1,500 rows of ~300 bytes; collecting it costs over half a megabyte,
    taking the first ten rows of the stream a small fraction of that.
    """
    count = 1500
    _datasets(rucio_storage, rucio_data.scope, count)
    rucio_storage.list_scopes()  # log in first: the token is not what is measured

    def first_ten():
        stream = rucio_storage.iter_dids(rucio_data.scope, page_size=10)
        taken = [next(stream) for _ in range(10)]
        stream.close()
        return taken

    streamed_peak, first = _peak(first_ten)
    full_peak, everything = _peak(lambda: list(rucio_storage.iter_dids(rucio_data.scope)))

    assert len(first) == 10
    assert len(everything) == count
    assert full_peak > 500_000
    assert streamed_peak * 10 < full_peak, (streamed_peak, full_peak)


def test_iter_dids_filters_and_reports_sizes(rucio_storage, rucio_data):
    raw = rucio_data.dataset(meta={"datatype": "raw"}, files=3)
    rucio_data.dataset(meta={"datatype": "calexp"})
    (entry,) = rucio_storage.iter_dids(rucio_data.scope, {"datatype": "raw"})
    assert entry.did == raw
    assert entry.type == "DATASET"
    assert (entry.length, entry.bytes) == (None, None)  # Rucio counts when a dataset closes
    rucio_storage.close_collection(raw)
    (entry,) = rucio_storage.iter_dids(rucio_data.scope, {"datatype": "raw"})
    assert (entry.length, entry.bytes) == (3, 1000 + 1001 + 1002)


def test_iter_dids_mixes_column_and_custom_keys(rucio_server, rucio_storage, rucio_data):
    """Rucio refuses one filter with keys of two plugins; the adapter splits it.

    On SQLite no custom key exists: Rucio refuses it at once, with its reason.
    """
    wanted = rucio_data.dataset(meta={"datatype": "raw"})
    other_visit = rucio_data.dataset(meta={"datatype": "raw"})
    calexp = rucio_data.dataset(meta={"datatype": "calexp"})
    if rucio_server.database_url is None:
        with pytest.raises(RucioPermanentError, match="no metadata plugin"):
            list(rucio_storage.iter_dids(rucio_data.scope, {"datatype": "raw", "visit": "42"}))
        return
    rucio_storage.set_metadata(wanted, {"visit": "42"})
    rucio_storage.set_metadata(other_visit, {"visit": "43"})
    rucio_storage.set_metadata(calexp, {"visit": "42"})
    found = rucio_storage.iter_dids(
        rucio_data.scope, {"datatype": "raw", "visit": "42"}, page_size=1
    )
    assert [e.did for e in found] == [wanted]


def test_an_exclusion_on_a_key_rucio_cannot_hold_excludes_nothing(
    rucio_server, rucio_storage, rucio_data
):
    """Every export to a DAC excludes ``private``; on SQLite nothing can be private."""
    public = rucio_data.dataset(meta={"datatype": "raw"})
    private = rucio_data.dataset(meta={"datatype": "raw"})
    if rucio_server.database_url is not None:
        rucio_storage.set_metadata(private, {"private": "true"})
    selected = rucio_storage.list_dids(
        rucio_data.scope, {"datatype": "raw"}, exclude=[{"private": "true"}]
    )
    if rucio_server.database_url is None:
        assert selected == sorted([public, private])
    else:
        assert selected == [public]


def test_read_replica_reads_the_bytes_back(
    rucio_storage, rucio_data, posix_site, tmp_path, rucio_cfg
):
    data = b"efd annex " * 1000
    did = rucio_data.did("annex-1.tar")
    local = tmp_path / "annex-1.tar"
    local.write_bytes(data)
    sums = file_checksums(local)
    assert sums.adler32 == f"{zlib.adler32(data):08x}"
    rucio_storage.add_replicas(
        posix_site.disk, [File(did, bytes=sums.bytes, adler32=sums.adler32, md5=sums.md5)]
    )
    posix_site.put(rucio_storage, posix_site.disk, did, data)
    (replica,) = rucio_storage.list_file_replicas([did])
    assert (replica.bytes, replica.adler32, replica.md5) == (sums.bytes, sums.adler32, sums.md5)
    (pfn,) = replica.pfns[posix_site.disk]

    assert rucio_storage.read_replica(posix_site.disk, pfn) == sums
    assert "RUCIO_CLIENT_MODE" not in os.environ  # a Rucio server started later must not see it

    posix_site.path(rucio_storage, posix_site.disk, did).unlink()
    with pytest.raises(RucioNotFoundError, match="cannot read"):
        rucio_storage.read_replica(posix_site.disk, pfn)


def test_reading_needs_a_rucio_cfg(rucio_storage, rucio_data, posix_site, monkeypatch):
    """Rucio's protocol implementations read rucio.cfg; without one the error says so."""
    from rucio.common.config import clean_cached_config  # noqa: PLC0415 - after TMPDIR is set

    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    clean_cached_config()
    did = rucio_data.did("f")
    rucio_storage.add_replicas(posix_site.disk, [File(did, bytes=1)])
    pfn = rucio_storage.expected_pfns(posix_site.disk, [did])[did]
    with pytest.raises(ConfigurationError, match="set RUCIO_CONFIG"):
        rucio_storage.read_replica(posix_site.disk, pfn)


def test_a_mock_replica_has_no_bytes_to_read(rucio_storage, rucio_data):
    dataset = rucio_data.dataset(files=1)
    (replica,) = rucio_storage.list_file_replicas([dataset])
    rse, (pfn,) = next(iter(replica.pfns.items()))
    with pytest.raises(RucioNotFoundError, match="mock protocol, which stores no bytes"):
        rucio_storage.read_replica(rse, pfn)


def test_rse_info_and_where_a_deterministic_rse_keeps_files(rucio_storage, posix_site):
    tape = rucio_storage.get_rse_info(posix_site.tape)
    assert (tape.type, tape.deterministic, tape.flag("custodial")) == ("TAPE", True, True)
    assert not rucio_storage.get_rse_info(posix_site.disk).flag("custodial")
    pfns = rucio_storage.expected_pfns(posix_site.disk, ["s:a", "s:b"])
    assert set(pfns) == {"s:a", "s:b"}
    assert all(pfn.startswith("file://") and str(posix_site.root) in pfn for pfn in pfns.values())
    with pytest.raises(RucioNotFoundError, match="not registered"):
        rucio_storage.get_rse_info(f"{posix_site.facility}_NOPE")


def test_where_many_long_named_files_go_is_asked_in_requests_the_server_takes(
    rucio_storage, posix_site
):
    # lfns2pfns carries its DIDs in the URL: 200 names of 120 characters in one request
    # were refused with HTTP 414 (found by bench/operations.py ingesting 200 files).
    dids = [f"s:{'x' * 110}-{i:05d}" for i in range(200)]
    pfns = rucio_storage.expected_pfns(posix_site.disk, dids)
    assert sorted(pfns) == sorted(dids)
    assert all(pfns[did].endswith(did.split(":")[1]) for did in dids)


def test_get_collection_and_metadata(rucio_storage, rucio_data):
    dataset = rucio_data.dataset(meta={"datatype": "raw"})
    assert rucio_storage.get_collection(dataset).open
    assert rucio_storage.get_collection(rucio_data.did("absent")) is None
    with pytest.raises(RucioPermanentError, match="not a dataset"):
        rucio_storage.get_collection(rucio_data.files_of(dataset)[0])
    assert rucio_storage.get_metadata(dataset)["datatype"] == "raw"
    bulk = rucio_storage.get_metadata_bulk([dataset, rucio_data.did("absent")])
    assert list(bulk) == [dataset]
    assert rucio_data.scope in rucio_storage.list_scopes()
