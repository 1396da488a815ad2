"""Run inside the Rucio *server's* virtual environment: bootstrap, and one-pass daemons.

This file is executed as a script by the server venv's interpreter (``python
rucio_daemon_runner.py bootstrap|serve``), never imported by Steward: it needs the ``rucio``
server package, which the product venv does not have (it has ``rucio-clients`` only). It
therefore imports nothing from Steward, only the standard library and Rucio.

``bootstrap``
    Build the schema and the root account with Rucio's own functions (what Rucio's
    ``tools/bootstrap.py`` does), then switch SQLite to WAL: without WAL, a rule over a few
    hundred DIDs deadlocks on "database is locked" between the server's two workers.

``serve``
    Import the daemons once, then answer one JSON request per line on stdin with one JSON line
    on stdout: ``{"daemon": "judge-evaluator", "options": {...}}`` runs one pass of that daemon
    (``once=True``, no partition wait) and answers ``{"ok": true, "seconds": ...}``. A pass
    takes 0.02-0.3 s, against ~10 s for a daemon's own command line, which sleeps while it
    waits for peers. ``converge`` repeats the judge and conveyor passes until a whole round
    changes nothing in the database. Rucio's own logging goes to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import IO, Any

_CONVERGE_DAEMONS = (
    "judge-injector",
    "judge-evaluator",
    "conveyor-submitter",
    "conveyor-poller",
    "conveyor-finisher",
)
"""One round of ``converge``: new rules injected, DIDs re-evaluated, transfers done."""

_MOCK_TRANSFERTOOL = "mock"
_REPAIRER_LIMIT = 100
"""Rules one ``repairer.run_once`` takes (hard-coded in Rucio's judge-repairer)."""


def bootstrap() -> dict[str, Any]:
    """Create the schema, the base VO and the root account; WAL for SQLite."""
    from rucio.common.config import config_get  # noqa: PLC0415 - needs RUCIO_CONFIG first
    from rucio.db.sqla.util import (  # noqa: PLC0415
        build_database,
        create_base_vo,
        create_root_account,
    )

    start = time.monotonic()
    build_database()
    create_base_vo()
    create_root_account()
    url = config_get("database", "default", check_config_table=False)
    if url.startswith("sqlite"):
        import sqlite3  # noqa: PLC0415

        path = url.split(":///", 1)[1].split("?", 1)[0]
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    return {"seconds": time.monotonic() - start}


def _workqueue(name: str, run_once: Callable[..., Any], **kwargs: Any) -> None:  # noqa: ANN401
    """Run one pass of a daemon's ``run_once`` with a heartbeat and no partition wait.

    The judge daemons and the transmogrifier hard-code a one-second partition wait in their
    main functions; going through ``db_workqueue`` directly keeps the heartbeat bookkeeping
    without it.
    """
    from rucio.daemons.common import db_workqueue  # noqa: PLC0415

    daemon = db_workqueue(
        once=True,
        graceful_stop=threading.Event(),
        executable=name,
        partition_wait_time=0,
        sleep_time=60,
    )(functools.partial(run_once, **kwargs))
    for _ in daemon():
        pass


@functools.cache
def _daemons() -> dict[str, Callable[..., None]]:
    """Import the daemons once and return one-pass callables by daemon name."""
    from rucio.daemons.conveyor import finisher, poller, submitter  # noqa: PLC0415
    from rucio.daemons.judge import cleaner, evaluator, injector, repairer  # noqa: PLC0415
    from rucio.daemons.reaper import reaper  # noqa: PLC0415
    from rucio.daemons.transmogrifier import transmogrifier  # noqa: PLC0415
    from rucio.daemons.undertaker import undertaker  # noqa: PLC0415

    def judge_evaluator(did_limit: int = 1000) -> None:
        _workqueue("judge-evaluator", evaluator.run_once, paused_dids={}, did_limit=did_limit)

    def judge_repairer(delta: int = 0) -> None:
        # One pass of Rucio's repairer takes the 100 least recently updated STUCK rules and
        # moves each to the back of that order; repeat until every rule STUCK at the start
        # had its turn, so a pass means "all stuck rules", whatever the server holds.
        for _ in range(max(1, -(-_count_stuck_rules() // _REPAIRER_LIMIT))):
            _workqueue("judge-repairer", repairer.run_once, paused_rules={}, delta=delta)

    def undertaker_pass(chunk_size: int = 100) -> None:
        _workqueue("undertaker", undertaker.run_once, paused_dids={}, chunk_size=chunk_size)

    def reaper_pass(rses: list[str] | None = None, chunk_size: int = 1000) -> None:
        reaper.reaper(
            rses=rses or [],
            include_rses=None,
            exclude_rses=None,
            once=True,
            greedy=True,
            chunk_size=chunk_size,
        )

    return {
        "judge-evaluator": judge_evaluator,
        "judge-cleaner": lambda: _workqueue("judge-cleaner", cleaner.run_once, paused_rules={}),
        "judge-injector": lambda: _workqueue("judge-injector", injector.run_once, paused_rules={}),
        "judge-repairer": judge_repairer,
        "transmogrifier": lambda bulk=1000: _workqueue(
            "transmogrifier", transmogrifier.run_once, bulk=bulk
        ),
        "undertaker": undertaker_pass,
        "reaper": reaper_pass,
        "conveyor-submitter": lambda: submitter.submitter(
            once=True, partition_wait_time=0, transfertools=[_MOCK_TRANSFERTOOL], bulk=5000
        ),
        "conveyor-poller": lambda: poller.poller(once=True, older_than=0, partition_wait_time=0),
        "conveyor-finisher": lambda: finisher.finisher(
            once=True, partition_wait_time=0, bulk=5000, db_bulk=5000
        ),
    }


@contextlib.contextmanager
def _session() -> Iterator[Any]:
    """A session on Rucio's database, closed afterwards."""
    from rucio.db.sqla.session import get_session  # noqa: PLC0415 - needs RUCIO_CONFIG first

    session = get_session()()
    try:
        yield session
    finally:
        session.close()


def _count_stuck_rules() -> int:
    """How many replication rules are STUCK now."""
    from rucio.db.sqla import models  # noqa: PLC0415
    from rucio.db.sqla.constants import RuleState  # noqa: PLC0415
    from sqlalchemy import func, select  # noqa: PLC0415

    query = select(func.count()).where(models.ReplicationRule.state == RuleState.STUCK)
    with _session() as session:
        return int(session.execute(query).scalar_one())


def fingerprint(scope: str | None = None) -> dict[str, Any]:
    """Return counts that change whenever a daemon does work (rules, locks, requests...).

    With ``scope``, only that scope's rows count: a test that owns a scope asks whether its
    own data is quiet, whatever other tests left on the shared server.
    """
    from rucio.common.types import InternalScope  # noqa: PLC0415
    from rucio.db.sqla import models  # noqa: PLC0415
    from sqlalchemy import func, select  # noqa: PLC0415

    grouped = {
        "rules": (models.ReplicationRule, models.ReplicationRule.state),
        "locks": (models.ReplicaLock, models.ReplicaLock.state),
        "requests": (models.Request, models.Request.state),
        "replicas": (models.RSEFileAssociation, models.RSEFileAssociation.state),
    }
    owned = InternalScope(scope) if scope is not None else None

    def narrowed(statement: Any, model: Any) -> Any:  # noqa: ANN401 - SQLAlchemy statements
        return statement if owned is None else statement.where(model.scope == owned)

    with _session() as session:
        counts: dict[str, Any] = {
            "updated_dids": session.execute(
                narrowed(select(func.count()).select_from(models.UpdatedDID), models.UpdatedDID)
            ).scalar_one(),
        }
        for key, (model, column) in grouped.items():
            statement = narrowed(select(column, func.count()), model).group_by(column)
            rows = session.execute(statement).all()
            counts[key] = {str(getattr(state, "name", state)): count for state, count in rows}
    return counts


def age_locks(rule_id: str, seconds: float) -> dict[str, Any]:
    """Move a rule's lock timestamps ``seconds`` into the past; return how many moved.

    Rucio's repairer retries a STUCK lock only hours after its last update; tests step over
    that wait this way instead of sleeping, as they inject clocks elsewhere.
    """
    from datetime import timedelta  # noqa: PLC0415

    from rucio.db.sqla import models  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415

    shift = timedelta(seconds=seconds)
    query = select(models.ReplicaLock).where(models.ReplicaLock.rule_id == rule_id)
    with _session() as session:
        locks = session.execute(query).scalars().all()
        for lock in locks:  # in Python: SQLite has no datetime arithmetic SQLAlchemy can use
            lock.created_at -= shift
            lock.updated_at -= shift
        session.commit()
    return {"locks": len(locks)}


def age_rule(rule_id: str, seconds: float) -> dict[str, Any]:
    """Move a rule's times (created, updated, expiry) ``seconds`` into the past.

    For that rule this is Rucio's clock moving forward: a rule with a 30-day lifetime aged by
    31 days has expired, and the next judge-cleaner pass removes it, as it would a month
    later. Tests move Steward's clock by the same amount (it is injected).
    """
    from datetime import timedelta  # noqa: PLC0415

    from rucio.db.sqla import models  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415

    shift = timedelta(seconds=seconds)
    query = select(models.ReplicationRule).where(models.ReplicationRule.id == rule_id)
    with _session() as session:
        rules = session.execute(query).scalars().all()
        for rule in rules:
            rule.created_at -= shift
            rule.updated_at -= shift
            if rule.expires_at is not None:
                rule.expires_at -= shift
        session.commit()
    return {"rules": len(rules)}


def converge(max_rounds: int = 30, scope: str | None = None) -> dict[str, Any]:
    """Run judge and conveyor rounds until one changes nothing; return rounds and state.

    The passes work on the whole server; with ``scope`` only that scope must be quiet.
    """
    daemons = _daemons()
    before = fingerprint(scope)
    for rounds in range(1, max_rounds + 1):
        for name in _CONVERGE_DAEMONS:
            daemons[name]()
        after = fingerprint(scope)
        if after == before:
            return {"rounds": rounds, "quiet": True, "state": after}
        before = after
    return {"rounds": max_rounds, "quiet": False, "state": before}


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request; every failure becomes ``ok: false`` with the traceback."""
    start = time.monotonic()
    name = request.get("daemon", "")
    options = request.get("options") or {}
    try:
        requests: dict[str, Callable[..., Any]] = {
            **_daemons(),
            "age-locks": age_locks,
            "age-rule": age_rule,
            "converge": converge,
            "fingerprint": fingerprint,
        }
        if name not in requests:
            known = ", ".join(sorted(requests))
            return {"ok": False, "error": f"unknown daemon {name!r}; known: {known}"}
        result = requests[name](**options)
    except Exception:  # noqa: BLE001 - the caller gets the traceback, the runner lives on
        return {"ok": False, "error": traceback.format_exc()}
    return {"ok": True, "seconds": time.monotonic() - start, "result": result}


def serve(replies: IO[str]) -> None:
    """Answer requests from stdin until it closes."""
    _daemons()
    replies.write(json.dumps({"ok": True, "ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(_handle(json.loads(line)), default=str) + "\n")
            replies.flush()


def main() -> int:
    """Dispatch ``bootstrap`` or ``serve``; stdout carries only the JSON protocol."""
    # Daemons and Rucio's own code may print: keep the protocol on a private copy of stdout.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(
        level=os.environ.get("STEWARD_RUCIO_DAEMON_LOGLEVEL", "WARNING"),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "bootstrap":
        replies.write(json.dumps(bootstrap()) + "\n")
    elif command == "serve":
        serve(replies)
    else:
        sys.stderr.write("usage: rucio_daemon_runner.py bootstrap|serve\n")
        return 2
    replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
