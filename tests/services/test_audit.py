import threading
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from steward.exceptions import ConfigurationError
from steward.schema.audit import AuditEntry
from steward.services.audit import AuditRecord, AuditService, ResourceRef, utc
from steward.storage.audit import AuditFilter
from steward.storage.database import (
    MIGRATIONS,
    current_revision,
    ensure_current,
    head_revision,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from support.clock import StepClock
from support.database import tamper
from support.waiting import until

RULE = ResourceRef(
    kind="ReplicationRule",
    namespace="steward",
    name="raw-to-in2p3",
    uid="u-1",
    generation=3,
    git_commit="a" * 40,
    git_author="Jane Ops <jane@example.org>",
    git_path="policies/replication/raw-to-in2p3.yaml",
)


@pytest.fixture
def engine(audit_engine):
    return audit_engine


@pytest.fixture
def service(engine):
    return AuditService(make_sessionmaker(engine), clock=StepClock())


def _fill(service, count=5):
    return [
        service.record(
            AuditRecord(
                resource=RULE,
                action="rucio.rule.add",
                actor="operator",
                target=f"rule-{i}",
                after={"copies": 1, "rse_expression": "site=IN2P3&type=TAPE"},
            )
        )
        for i in range(count)
    ]


def _tamper(engine, *statements):
    tamper(engine, *statements)


def test_rows_chain_and_verify(service):
    entries = _fill(service)
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1].prev_hash == entries[0].hash
    assert service.verify() == []
    assert service.head() == (5, entries[-1].hash)


def test_rows_carry_provenance(service):
    _fill(service, 1)
    (entry,) = service.query(AuditFilter(name="raw-to-in2p3"))
    assert (entry.kind, entry.generation, entry.git_commit) == ("ReplicationRule", 3, "a" * 40)
    assert entry.git_author == "Jane Ops <jane@example.org>"
    assert entry.after == '{"copies":1,"rse_expression":"site=IN2P3&type=TAPE"}'


def test_stored_rows_hold_exactly_what_record_many_returned(service):
    """The rows go in as one executemany (storage/audit.py), not through the ORM's flush:
    every column read back equals the returned entry, nulls and the time's zone included."""
    bare = ResourceRef(kind="Site", name="in2p3")
    records = [
        AuditRecord(resource=RULE, action="rucio.rule.add", actor="operator", result="intent"),
        AuditRecord(
            resource=bare,
            action="rucio.rule.delete",
            actor="cli",
            target="rule-9",
            before={"copies": 2, "did": "raw:a"},
            after=[1, "two"],
            result="failure",
            message="quota exceeded",
        ),
    ]
    written = [*service.record_many(records), *service.record_many(records[:1])]
    stored = service.query(AuditFilter())
    columns = [column.key for column in AuditEntry.__table__.columns]
    assert [[getattr(e, c) for c in columns if c != "time"] for e in stored] == [
        [getattr(e, c) for c in columns if c != "time"] for e in written
    ]
    assert [utc(e.time) for e in stored] == [e.time for e in written]
    assert [e.id for e in stored] == [1, 2, 3]
    assert (stored[1].namespace, stored[1].uid, stored[1].message) == (None, None, "quota exceeded")
    assert stored[0].message == ""
    assert service.verify() == []


def test_edit_is_detected_and_named(engine, service):
    _fill(service)
    _tamper(engine, "UPDATE audit_entries SET target = 'rule-x' WHERE id = 3")
    findings = service.verify()
    assert [(f.entry_id, "edited" in f.problem) for f in findings] == [(3, True)]


def test_deleted_row_is_detected(engine, service):
    _fill(service)
    _tamper(engine, "DELETE FROM audit_entries WHERE id = 2")
    findings = service.verify()
    assert findings[0].entry_id == 3
    assert "row 2 deleted before row 3" in findings[0].problem


def test_deleted_tail_is_detected(engine, service):
    _fill(service)
    _tamper(engine, "DELETE FROM audit_entries WHERE id = 5")
    (finding,) = service.verify()
    assert "the chain head says the last row is 5" in finding.problem


def test_inserted_row_is_detected(engine, service):
    entries = _fill(service)
    forged = (
        "INSERT INTO audit_entries (id, time, actor, kind, namespace, name, action, result, "  # noqa: S608 - fixed test values
        f"message, prev_hash, hash) VALUES (6, '2026-11-23 13:00:00', 'mallory', "
        f"'ReplicationRule', 'steward', 'raw-to-in2p3', 'rucio.rule.delete', 'success', '', "
        f"'{entries[-1].hash}', '{'f' * 64}')"
    )
    _tamper(engine, forged)
    problems = [(f.entry_id, f.problem) for f in service.verify()]
    assert (6, "row 6 was edited: its content does not match its hash") in problems
    assert any("chain head" in p for _, p in problems)


def test_database_refuses_update_and_delete(engine, service):
    _fill(service, 2)
    for statement in ("UPDATE audit_entries SET actor = 'x'", "DELETE FROM audit_entries"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))


def test_concurrent_writers_never_fork_the_chain(service):
    def write():
        _fill(service, 20)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert service.head()[0] == 60
    assert service.verify() == []


class _GateClock(StepClock):
    """A wall clock whose first call waits for the test: it holds the first transaction open.

    Calls after the first raise ``fail_after`` when set (a transaction that fails).
    """

    def __init__(self, fail_after: Exception | None = None) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self) -> datetime:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(60)
        elif self.fail_after is not None:
            raise self.fail_after
        return super().__call__()


def _in_threads(service, names):
    """Start one thread per name, each recording one row targeting it; their outcomes."""
    outcomes: dict[str, object] = {}

    def write(name):
        try:
            outcomes[name] = service.record(
                AuditRecord(resource=RULE, action="rucio.rule.add", actor="op", target=name)
            )
        except Exception as error:  # noqa: BLE001 - the outcome is what the test asserts
            outcomes[name] = error

    threads = [threading.Thread(target=write, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    return threads, outcomes


def _one_then_two_behind(service, clock):
    """Writer "first" holds a transaction open while "second" and "third" queue behind it."""
    first, outcomes = _in_threads(service, ["first"])
    assert clock.entered.wait(60)
    others, more = _in_threads(service, ["second", "third"])
    until("both writers queued behind the open transaction", lambda: service.queued == 2)
    clock.release.set()
    for thread in first + others:
        thread.join(timeout=60)
    return outcomes, more


def test_writers_arriving_during_a_transaction_share_the_next_one(engine):
    clock = _GateClock()
    service = AuditService(make_sessionmaker(engine), clock=clock)
    outcomes, more = _one_then_two_behind(service, clock)
    outcomes.update(more)
    assert service.transactions == 2
    assert {name: entry.target for name, entry in outcomes.items()} == {
        "first": "first",
        "second": "second",
        "third": "third",
    }
    assert sorted(entry.id for entry in outcomes.values()) == [1, 2, 3]
    assert service.head()[0] == 3
    assert service.verify() == []


def test_a_failed_group_transaction_fails_every_writer_in_it_and_appends_nothing(engine):
    clock = _GateClock(fail_after=RuntimeError("database went away"))
    service = AuditService(make_sessionmaker(engine), clock=clock)
    outcomes, more = _one_then_two_behind(service, clock)
    assert outcomes["first"].target == "first"
    assert [str(more[name]) for name in ("second", "third")] == ["database went away"] * 2
    assert service.head()[0] == 1
    assert service.verify() == []
    clock.fail_after = None
    assert service.record(AuditRecord(resource=RULE, action="x", actor="op")).id == 2


def test_filters(service):
    _fill(service, 2)
    service.record(AuditRecord(resource=RULE, action="rucio.rule.delete", actor="cli"))
    assert len(service.query(AuditFilter(action="rucio.rule.delete"))) == 1
    assert len(service.query(AuditFilter(actor="operator"))) == 2
    since = datetime(2026, 11, 23, 12, 0, 3, tzinfo=UTC)
    assert [e.id for e in service.query(AuditFilter(since=since))] == [3]
    assert len(service.query(AuditFilter(kind="Site"))) == 0


def test_migrations_upgrade_an_old_database(database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    with pytest.raises(ConfigurationError, match="at schema revision 0001, but this Steward"):
        ensure_current(engine)
    old = AuditService(make_sessionmaker(engine), clock=StepClock())
    _fill(old, 3)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    ensure_current(engine)
    assert old.verify() == []
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries"))
    engine.dispose()


def test_the_ledger_migration_goes_up_and_down(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert {
        "ledger_campaigns",
        "ledger_invocations",
        "ledger_attempts",
        "ledger_jobs",
        "ledger_files",
        "ledger_controls",
    } <= tables
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    assert current_revision(engine) == "0003"
    assert not {t for t in inspect(engine).get_table_names() if t.startswith("ledger_")}
    assert {"audit_entries", "audit_checkpoints"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_the_succeeded_at_migration_goes_up_and_down(database_url):
    engine = make_engine(database_url)
    upgrade(engine)

    def columns():
        return {c["name"] for c in inspect(engine).get_columns("ledger_campaigns")}

    assert "succeeded_at" in columns()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert current_revision(engine) == "0004"
    assert "succeeded_at" not in columns()
    assert "staging_released" in columns()
    upgrade(engine)
    assert "succeeded_at" in columns()
    engine.dispose()


def test_the_ledger_sites_migration_keeps_recorded_attempts(database_url):
    """0006 adds the site columns to a ledger holding attempts; down again drops only them."""
    engine = make_engine(database_url)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO ledger_attempts (pod_uid, campaign_uid, step, "index", job, pod, '
                "klass, reason, counted) VALUES ('p1', 'c1', 'isr', 0, 'j', 'pod', "
                "'Succeeded', '', false)"
            )
        )
    upgrade(engine)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT pod_uid, site FROM ledger_attempts")).all() == [
            ("p1", None)
        ]
    columns = {c["name"] for c in inspect(engine).get_columns("ledger_invocations")}
    assert "site" in columns
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert "site" not in {c["name"] for c in inspect(engine).get_columns("ledger_attempts")}
    with engine.begin() as conn:
        assert conn.execute(text("SELECT pod_uid FROM ledger_attempts")).all() == [("p1",)]
    engine.dispose()


def test_empty_database_is_refused(database_url):
    engine = make_engine(database_url)
    with pytest.raises(ConfigurationError, match="revision none"):
        ensure_current(engine)
    engine.dispose()
