"""The disaster-recovery drill against the real Rucio server and real files on posix RSEs.

Rucio's mock transfer tool moves no bytes, so in these tests the function the drill sleeps in
runs Rucio's daemons (judge, conveyor) and then copies each recalled file's bytes from the tape
directory to the scratch directory, standing in for FTS; tests that need a corrupt or a lost
recall make that stand-in copy wrong bytes or none. What the drill itself does (sample, rules,
waiting, reading back through Rucio's posix protocol, checksums, release) is real.
"""

import random
from datetime import UTC, datetime, timedelta

import pytest

from steward.exceptions import PermanentError, RucioNotFoundError
from steward.services.drill import (
    AUDIT_KIND,
    DrillFile,
    DrillReport,
    DrillRequest,
    DrillService,
    Outcome,
    drill_metrics,
    reservoir,
)
from steward.services.ingest import IngestRequest, IngestService
from steward.storage.audit import AuditFilter
from steward.storage.rucio import File, RuleSpec

CLUSTER = "drill-test-cluster"


@pytest.fixture
def tape_only(rucio_storage, rucio_data, posix_site, audit, tmp_path):
    """Three datasets of two files each, ingested on the tape RSE with their bytes there, and a
    fourth whose files are on disk too (never sampled). Returns the tape-only file DIDs."""
    ingest = IngestService(rucio_storage, audit, actor="ops")
    tape_only = []
    for d in range(4):
        paths = []
        for f in range(2):
            path = tmp_path / "annex" / f"d{d}-f{f}.tar"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(f"annex {d} {f}\n".encode() * (200 + f))
            posix_site.put(
                rucio_storage, posix_site.tape, rucio_data.did(path.name), path.read_bytes()
            )
            paths.append(path)
        request = IngestRequest(
            paths, rucio_data.scope, posix_site.tape, {"datatype": "raw"}, f"annex-{d}"
        )
        ingest.apply(ingest.plan(request))
        dids = [rucio_data.did(p.name) for p in paths]
        if d == 3:
            rucio_storage.add_replicas(
                posix_site.disk,
                [File(did, bytes=p.stat().st_size) for did, p in zip(dids, paths, strict=True)],
            )
        else:
            tape_only += dids
    return sorted(tape_only)


def _transfers(rucio_server, rucio_storage, posix_site, dids, *, corrupt=(), lose=()):
    """What the drill sleeps in: Rucio works, then the stand-in for FTS copies the bytes."""

    def sleep(_seconds):
        rucio_server.daemons.converge()
        for replica in rucio_storage.list_file_replicas(dids, rse_expression=posix_site.scratch):
            if replica.states.get(posix_site.scratch) != "AVAILABLE" or replica.did in lose:
                continue
            data = posix_site.path(rucio_storage, posix_site.tape, replica.did).read_bytes()
            if replica.did in corrupt:
                data = data[:-1] + b"!"
            posix_site.put(rucio_storage, posix_site.scratch, replica.did, data)

    return sleep


def _request(rucio_data, posix_site, files, **extra):
    return DrillRequest(
        scope=rucio_data.scope,
        tape=posix_site.tape,
        scratch=posix_site.scratch,
        files=files,
        match={"datatype": "raw"},
        poll=timedelta(seconds=1),
        seed=20261130,
        **extra,
    )


@pytest.mark.rucio
def test_a_drill_recalls_verifies_reports_and_releases(
    rucio_server, rucio_storage, rucio_data, posix_site, audit, tape_only, rucio_cfg
):
    service = DrillService(
        rucio_storage,
        audit,
        cluster_id=CLUSTER,
        actor="drill-cron",
        sleep=_transfers(rucio_server, rucio_storage, posix_site, tape_only),
    )

    report = service.run(_request(rucio_data, posix_site, files=4))

    assert report.passed, "\n".join(report.lines())
    assert len(report.files) == 4
    assert {f.did for f in report.files} <= set(tape_only)
    assert all(f.outcome is Outcome.VERIFIED for f in report.files)
    assert all(f.recall_seconds is not None for f in report.files)  # each recall was timed
    assert report.bytes == sum(f.bytes for f in report.files) > 0
    rule_ids = sorted(f.rule_id for f in report.files)
    assert sorted(report.released) == rule_ids
    for rule_id in rule_ids:  # released: expired at once, replicas purged
        rule = rucio_storage.get_rule(rule_id)
        assert rule.expires_at <= datetime.now(UTC) + timedelta(minutes=1)
        assert rule.purge_replicas
    rucio_server.daemons.run("judge-cleaner")
    for rule_id in rule_ids:
        with pytest.raises(RucioNotFoundError):
            rucio_storage.get_rule(rule_id)

    text = "\n".join(report.lines())
    assert f"held only on {posix_site.tape}, recalled to {posix_site.scratch}" in text
    assert "Summary: 4 verified, 0 failed; time to recall: max" in text
    assert text.endswith("PASSED")
    rows = audit.query(AuditFilter(kind=AUDIT_KIND, name=report.run_id))
    actions = [row.action for row in rows]
    assert actions == ["rucio.rule.add"] * 4 + ["rucio.rule.release"] * 4 + ["drill.report"]
    assert {row.actor for row in rows} == {"drill-cron"}
    assert rows[-1].result == "success"

    metrics = drill_metrics(report)
    labels = {"tape": posix_site.tape, "scratch": posix_site.scratch}
    assert metrics.get_sample_value("steward_drill_files", {**labels, "outcome": "Verified"}) == 4
    assert metrics.get_sample_value("steward_drill_failures", labels) == 0
    assert metrics.get_sample_value("steward_drill_passed", labels) == 1
    assert metrics.get_sample_value("steward_drill_bytes", labels) == report.bytes
    assert metrics.get_sample_value("steward_drill_recall_seconds_count", labels) == 4


@pytest.mark.rucio
def test_corrupt_and_lost_recalls_fail_the_drill(
    rucio_server, rucio_storage, rucio_data, posix_site, audit, tape_only, rucio_cfg
):
    corrupt, lost = tape_only[0], tape_only[1]
    service = DrillService(
        rucio_storage,
        audit,
        cluster_id=CLUSTER,
        actor="ops",
        sleep=_transfers(
            rucio_server, rucio_storage, posix_site, tape_only, corrupt={corrupt}, lose={lost}
        ),
    )

    report = service.run(_request(rucio_data, posix_site, files=len(tape_only)))

    outcomes = {f.did: f for f in report.files}
    assert outcomes[corrupt].outcome is Outcome.CHECKSUM_MISMATCH
    assert "adler32" in outcomes[corrupt].detail
    assert "in the catalogue" in outcomes[corrupt].detail
    assert outcomes[lost].outcome is Outcome.UNREADABLE
    assert "cannot read" in outcomes[lost].detail
    assert report.verified == len(tape_only) - 2
    assert not report.passed
    assert len(report.released) == len(tape_only)
    assert report.lines()[-1] == "FAILED"
    summary = audit.query(AuditFilter(kind=AUDIT_KIND, name=report.run_id, action="drill.report"))
    assert summary[0].result == "failure"
    labels = {"tape": posix_site.tape, "scratch": posix_site.scratch}
    assert drill_metrics(report).get_sample_value("steward_drill_failures", labels) == 2


@pytest.mark.rucio
def test_a_recall_that_does_not_come_in_time_is_reported_and_released(
    rucio_storage, rucio_data, posix_site, audit, tape_only
):
    """Nobody runs Rucio's daemons: the rules stay REPLICATING until the drill gives up."""
    now = [datetime(2026, 11, 30, 3, 0, tzinfo=UTC)]

    def sleep(seconds):
        now[0] += timedelta(seconds=seconds)

    service = DrillService(
        rucio_storage,
        audit,
        cluster_id=CLUSTER,
        actor="ops",
        clock=lambda: now[0],
        sleep=sleep,
    )

    report = service.run(_request(rucio_data, posix_site, files=2, timeout=timedelta(seconds=5)))

    assert [f.outcome for f in report.files] == [Outcome.TIMEOUT, Outcome.TIMEOUT]
    assert "still REPLICATING after 0:00:05" in report.files[0].detail
    assert len(report.released) == 2
    assert report.finished_at - report.started_at == timedelta(seconds=5)
    assert report.recall_times() == []
    assert "nothing recalled" in report.lines()[-2]


@pytest.mark.rucio
def test_a_rule_the_drill_did_not_create_is_neither_counted_nor_released(
    rucio_server, rucio_storage, rucio_data, posix_site, audit, tape_only, rucio_cfg
):
    someone_elses = rucio_storage.add_rule(
        tape_only[0], RuleSpec(posix_site.scratch, comment="pre-staged by a campaign")
    )
    service = DrillService(
        rucio_storage,
        audit,
        cluster_id=CLUSTER,
        actor="ops",
        sleep=_transfers(rucio_server, rucio_storage, posix_site, tape_only),
    )

    report = service.run(_request(rucio_data, posix_site, files=len(tape_only)))

    mine = {f.did: f for f in report.files}[tape_only[0]]
    assert mine.outcome is Outcome.NOT_OWNED
    assert someone_elses not in report.released
    assert rucio_storage.get_rule(someone_elses).expires_at is None
    assert report.verified == len(tape_only) - 1
    assert not report.passed


@pytest.mark.rucio
def test_a_drill_needs_a_custodial_tape_and_a_disk(rucio_storage, rucio_data, posix_site, audit):
    service = DrillService(rucio_storage, audit, cluster_id=CLUSTER, actor="ops")
    with pytest.raises(PermanentError, match="not a custodial TAPE RSE"):
        service.run(
            DrillRequest(rucio_data.scope, tape=posix_site.disk, scratch=posix_site.scratch)
        )
    with pytest.raises(PermanentError, match="recall to a DISK RSE"):
        service.run(DrillRequest(rucio_data.scope, tape=posix_site.tape, scratch=posix_site.tape))
    assert audit.query(AuditFilter(kind=AUDIT_KIND)) == []


@pytest.mark.rucio
def test_on_mock_rses_nothing_can_be_verified_and_the_report_says_why(
    rucio_server, rucio_storage, rucio_data, audit
):
    """What a local stack can prove: sampling, recall rules, timing, release; not the bytes."""
    files = [File(rucio_data.did(f"mock-{i}"), bytes=100 + i) for i in range(2)]
    rucio_storage.add_replicas("NCSA_TAPE", files)
    rucio_storage.add_dataset(rucio_data.did("on-tape"), meta={"datatype": "raw"})
    rucio_storage.attach(rucio_data.did("on-tape"), [f.did for f in files])
    service = DrillService(
        rucio_storage,
        audit,
        cluster_id=CLUSTER,
        actor="ops",
        sleep=lambda _: rucio_server.daemons.converge(),
    )

    report = service.run(
        DrillRequest(rucio_data.scope, tape="NCSA_TAPE", scratch="NCSA_DISK", files=2, seed=1)
    )

    assert [f.outcome for f in report.files] == [Outcome.UNREADABLE, Outcome.UNREADABLE]
    assert all("mock protocol, which stores no bytes" in f.detail for f in report.files)
    assert all(f.recall_seconds is not None for f in report.files)
    assert len(report.released) == 2
    assert not report.passed


@pytest.mark.rucio
def test_nothing_to_sample_is_a_failed_drill(rucio_storage, rucio_data, posix_site, audit):
    rucio_data.dataset(meta={"datatype": "raw"})  # on NCSA_DISK, not on the tape
    service = DrillService(rucio_storage, audit, cluster_id=CLUSTER, actor="ops")
    report = service.run(_request(rucio_data, posix_site, files=1))
    assert report.files == []
    assert "has its only available replica on" in report.error
    assert not report.passed


def test_reservoir_is_uniform_and_reproducible():
    counts = dict.fromkeys(range(10), 0)
    rng = random.Random(7)
    for _ in range(4000):
        for item in reservoir(iter(range(10)), 3, rng):
            counts[item] += 1
    assert all(1000 < count < 1400 for count in counts.values()), counts  # 1200 expected
    assert reservoir(range(100), 5, random.Random(3)) == reservoir(range(100), 5, random.Random(3))
    assert reservoir(range(2), 5, random.Random(3)) == [0, 1]


def test_requests_that_cannot_work_are_refused():
    with pytest.raises(PermanentError, match="must exceed the timeout"):
        DrillRequest("raw", "T", "S", lifetime=timedelta(hours=1), timeout=timedelta(hours=2))
    with pytest.raises(PermanentError, match="at least one file"):
        DrillRequest("raw", "T", "S", files=0)


def test_a_report_passes_only_when_every_file_is_verified():
    request = DrillRequest("raw", "NCSA_TAPE", "NCSA_SCRATCH")
    started = datetime(2026, 11, 30, tzinfo=UTC)
    report = DrillReport("run", request, 1, started)
    assert not report.passed  # nothing sampled proves nothing
    report.files = [DrillFile("raw:a", 10, "00000001", None, "r1", Outcome.VERIFIED, 30.0)]
    assert report.passed
    report.files.append(DrillFile("raw:b", 5, None, None, "r2", Outcome.STUCK, None, "why"))
    assert (report.passed, report.verified, report.failures, report.bytes) == (False, 1, 1, 15)
    assert report.to_json()["recallSecondsMax"] == 30.0
    assert "  raw:b  Stuck: why" in report.lines()
