"""`IngestService` against the real Rucio: plan, apply, and failures that leave nothing visible
half-done, completed by running again."""

import hashlib
import zlib

import pytest

from steward.exceptions import PermanentError, RucioNotFoundError, RucioTransientError
from steward.services.ingest import AUDIT_KIND, IngestRequest, IngestService, dataset_did
from steward.storage.audit import AuditFilter
from steward.storage.rucio import Availability, File, RetryPolicy, RucioStorage

pytestmark = pytest.mark.rucio


class Killed(Exception):  # noqa: N818 - what it stands for, not an error
    """Stands for the process dying at a given line."""


@pytest.fixture
def impatient(rucio_server):
    """The adapter without in-call retries, so a refusal surfaces at once."""
    settings = rucio_server.settings(rucio_calls_per_second=10_000)
    with RucioStorage(settings, retry=RetryPolicy(attempts=1)) as storage:
        yield storage


def _files(directory, count, prefix="annex"):
    paths = []
    for i in range(count):
        path = directory / f"{prefix}-{i}.tar"
        path.write_bytes(f"EFD large file annex {prefix} {i}\n".encode() * (100 + i))
        paths.append(path)
    return paths


def _request(rucio_data, posix_site, paths, **extra):
    return IngestRequest(
        paths=paths,
        scope=rucio_data.scope,
        rse=posix_site.disk,
        meta={"datatype": "raw"},
        dataset="annex-2026-11",
        **extra,
    )


def _assert_complete(storage, scope, dataset, paths, rse):
    """Every file registered with its checksums, attached, the dataset selectable by metadata."""
    dids = sorted(f"{scope}:{p.name}" for p in paths)
    replicas = {r.did: r for r in storage.list_file_replicas(dids)}
    assert sorted(replicas) == dids
    for path in paths:
        data = path.read_bytes()
        replica = replicas[f"{scope}:{path.name}"]
        assert replica.bytes == len(data)
        assert replica.adler32 == f"{zlib.adler32(data):08x}"
        assert replica.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
        assert replica.states == {rse: "AVAILABLE"}
    assert sorted(storage.list_content(dataset)) == dids
    assert storage.list_dids(scope, {"datatype": "raw"}) == [dataset]


def test_plan_first_then_apply(rucio_storage, rucio_data, posix_site, audit, tmp_path):
    paths = _files(tmp_path, 3)
    for path in paths:  # the files are where the RSE keeps them: ingest only registers
        posix_site.put(rucio_storage, posix_site.disk, rucio_data.did(path.name), path.read_bytes())
    service = IngestService(rucio_storage, audit, actor="ops")
    request = _request(rucio_data, posix_site, paths)

    plan = service.plan(request)

    dataset = rucio_data.did("annex-2026-11")
    assert plan.dataset == dataset
    assert [f.did for f in plan.register] == [rucio_data.did(p.name) for p in paths]
    assert plan.create_dataset
    assert len(plan.attach) == 3
    assert plan.metadata == {"datatype": "raw"}
    assert not plan.conflicts
    for path in paths:  # the plan says where the bytes must be, and they are there
        pfn = plan.pfns[rucio_data.did(path.name)]
        assert pfn.endswith(path.name)
        assert posix_site.path(rucio_storage, posix_site.disk, rucio_data.did(path.name)).exists()
    text = "\n".join(plan.lines())
    assert f"+ register {rucio_data.did(paths[0].name)} on {posix_site.disk}" in text
    assert "Ingest: 3 to register, 0 already registered, 3 to attach" in text
    assert rucio_storage.get_collection(dataset) is None  # planning changed nothing

    lines = []
    result = service.apply(plan, progress=lines.append)

    assert (result.registered, result.created_dataset, result.attached) == (3, True, 3)
    _assert_complete(rucio_storage, rucio_data.scope, dataset, paths, posix_site.disk)
    assert not service.plan(request).pending
    actions = [e.action for e in audit.query(AuditFilter(kind=AUDIT_KIND, name=dataset))]
    assert actions == [
        "rucio.replica.add",
        "rucio.dataset.add",
        "rucio.did.attach",
        "rucio.did.set_metadata",
    ]
    assert lines[0] == f"registered 3/3 files on {posix_site.disk}"


def test_an_rse_refusing_midway_then_a_rerun_completes(
    impatient, rucio_data, posix_site, audit, tmp_path
):
    """The RSE goes read-only after the first batch (a downtime begins): the ingest stops,
    nothing is selectable by policies, and the same command run later completes it."""
    paths = _files(tmp_path, 5)
    service = IngestService(impatient, audit, actor="ops", batch_size=2)
    request = _request(rucio_data, posix_site, paths)
    dataset = rucio_data.did("annex-2026-11")

    def downtime_begins(line):
        if line.startswith("registered 2/"):
            impatient.set_rse_availability(posix_site.disk, Availability(write=False))

    with pytest.raises(RucioTransientError, match="unavailable for writing"):
        service.apply(service.plan(request), progress=downtime_begins)
    # Rucio answered (503 with its RSEWriteBlocked): an RSE's downtime is not Rucio down.
    assert impatient.availability.up

    registered = impatient.list_file_replicas([rucio_data.did(p.name) for p in paths])
    assert len(registered) == 2
    assert impatient.get_collection(dataset) is None
    assert impatient.list_dids(rucio_data.scope, {"datatype": "raw"}) == []
    failed = audit.query(AuditFilter(kind=AUDIT_KIND, name=dataset, action="rucio.replica.add"))
    assert [e.result for e in failed] == ["success", "failure"]

    impatient.set_rse_availability(posix_site.disk, Availability())
    again = service.plan(request)
    assert len(again.register) == 3
    assert "Ingest: 3 to register, 2 already registered" in again.lines()[-1]
    service.apply(again)

    _assert_complete(impatient, rucio_data.scope, dataset, paths, posix_site.disk)
    assert not service.plan(request).pending


def test_killed_before_the_metadata_the_dataset_stays_invisible_until_rerun(
    rucio_storage, rucio_data, posix_site, audit, tmp_path
):
    paths = _files(tmp_path, 3)
    service = IngestService(rucio_storage, audit, actor="ops")
    request = _request(rucio_data, posix_site, paths)
    dataset = rucio_data.did("annex-2026-11")

    def die_after_attaching(line):
        if line.startswith("attached"):
            raise Killed

    with pytest.raises(Killed):
        service.apply(service.plan(request), progress=die_after_attaching)

    assert len(rucio_storage.list_content(dataset)) == 3
    assert rucio_storage.list_dids(rucio_data.scope, {"datatype": "raw"}) == []
    rest = service.plan(request)
    assert (len(rest.register), rest.create_dataset, rest.attach) == (0, False, ())
    assert rest.metadata == {"datatype": "raw"}
    service.apply(rest)
    _assert_complete(rucio_storage, rucio_data.scope, dataset, paths, posix_site.disk)


def test_a_file_known_with_other_content_is_a_conflict(
    rucio_storage, rucio_data, posix_site, audit, tmp_path
):
    paths = _files(tmp_path, 2)
    clash = rucio_data.did(paths[1].name)
    rucio_storage.add_replicas("NCSA_DISK", [File(clash, bytes=7, adler32="0badcafe")])
    service = IngestService(rucio_storage, audit, actor="ops")

    plan = service.plan(_request(rucio_data, posix_site, paths))

    (conflict,) = plan.conflicts
    assert conflict.startswith(f"{clash} is already in Rucio with other content: size 7")
    assert "adler32 0badcafe in Rucio" in conflict
    assert plan.lines()[0] == f"!! {conflict}"
    with pytest.raises(PermanentError, match="1 conflicts; nothing was ingested"):
        service.apply(plan)
    assert rucio_storage.list_file_replicas([rucio_data.did(paths[0].name)]) == []
    assert rucio_storage.get_collection(plan.dataset) is None


def test_the_dataset_name_is_derived_the_same_way_every_time(
    rucio_storage, rucio_data, posix_site, audit, tmp_path
):
    """Without --dataset, running the same command again names (and completes) the same one."""
    paths = _files(tmp_path, 2)
    service = IngestService(rucio_storage, audit, actor="ops")
    request = IngestRequest(paths=paths, scope=rucio_data.scope, rse=posix_site.disk)
    first = service.plan(request).dataset
    assert first.startswith(f"{rucio_data.scope}:ingest-")
    dids = [rucio_data.did(p.name) for p in paths]
    assert dataset_did(request, list(reversed(dids))) == first
    assert dataset_did(IngestRequest(paths, "s", "R", dataset="s2:named"), dids) == "s2:named"


def test_bad_input_is_refused_before_rucio_is_asked(rucio_storage, rucio_data, audit, tmp_path):
    service = IngestService(rucio_storage, audit, actor="ops")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "same.tar").write_text("a")
    (tmp_path / "same.tar").write_text("b")
    twins = [tmp_path / "a" / "same.tar", tmp_path / "same.tar"]
    with pytest.raises(PermanentError, match=r"would both be .*same.tar: file names must be"):
        service.plan(IngestRequest(twins, rucio_data.scope, "NCSA_DISK"))
    with pytest.raises(PermanentError, match="not a regular file"):
        service.plan(IngestRequest([tmp_path / "a"], rucio_data.scope, "NCSA_DISK"))
    with pytest.raises(RucioNotFoundError, match="not registered"):
        service.plan(IngestRequest([tmp_path / "same.tar"], rucio_data.scope, "NO_SUCH_RSE"))
