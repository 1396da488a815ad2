"""The audit trail: record every external action, and verify that nobody rewrote history.

Every row's hash covers its content and the previous row's hash (a hash chain), and row ids
are consecutive, so :meth:`AuditService.verify` can say which row was edited, which was
inserted and where rows are missing (design.md guarantee 4: append-only and tamper-evident).

The chain alone cannot catch someone who deletes the last rows and rewinds the head, or who
rewrites every hash after an edit: that takes signed checkpoints kept outside the database
(`steward.services.checkpoint`), which this service stores and walks the trail against.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from steward.observability import AUDIT_TRANSACTIONS, log_action
from steward.schema.audit import GENESIS_HASH, AuditCheckpoint, AuditEntry
from steward.storage.audit import AuditFilter, AuditStore

__all__ = [
    "AuditRecord",
    "AuditService",
    "ResourceRef",
    "TamperFinding",
    "TrailWalk",
    "entry_hash",
    "utc",
]

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; naive values (SQLite drops the zone) are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ResourceRef:
    """The resource an action was taken for, and the git version it came from."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    git_commit: str | None = None
    git_author: str | None = None
    git_path: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One action to record."""

    resource: ResourceRef
    action: str
    actor: str
    result: str = "success"
    target: str | None = None
    before: Any = None
    after: Any = None
    message: str = ""


@dataclass(frozen=True)
class TamperFinding:
    """Something in the trail that the chain or a checkpoint says should not be there."""

    entry_id: int | None
    """The row the problem shows at (None: a checkpoint's own problem)."""
    problem: str
    checkpoint: int | None = None
    """The checkpoint that shows it, if one does."""

    def __str__(self) -> str:
        where = f"checkpoint {self.checkpoint}" if self.checkpoint is not None else ""
        if self.entry_id is not None:
            where = f"row {self.entry_id}" + (f" ({where})" if where else "")
        return f"{where}: {self.problem}"


@dataclass
class TrailWalk:
    """What one walk along the chain found."""

    findings: list[TamperFinding]
    last_id: int
    """Id of the last row (0 for an empty trail)."""
    last_hash: str
    captured: dict[int, str]
    """Hashes of the rows asked for (checkpoints' sequence numbers), as stored."""


def _json(value: Any) -> str | None:  # noqa: ANN401 - before/after are any JSON value
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(entry: AuditEntry) -> str:
    """Hash of a row's content together with the previous row's hash."""
    content = {
        "id": entry.id,
        "time": utc(entry.time).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "kind": entry.kind,
        "namespace": entry.namespace,
        "name": entry.name,
        "uid": entry.uid,
        "generation": entry.generation,
        "git_commit": entry.git_commit,
        "git_author": entry.git_author,
        "git_path": entry.git_path,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "result": entry.result,
        "message": entry.message,
        "prev_hash": entry.prev_hash,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class AuditService:
    """Appends to and reads the audit trail; owns the transactions."""

    sessions: sessionmaker[Session]
    clock: Clock = field(default=_now)
    listeners: list[Callable[[int], None]] = field(default_factory=list)
    """Called with the new last row id after each append commits (the checkpoint loop)."""
    transactions: int = 0
    """Appending transactions begun (for tests and the benchmark)."""
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _queue: list[_Pending] = field(default_factory=list, repr=False)
    _writing: bool = field(default=False, repr=False)

    @property
    def queued(self) -> int:
        """Callers waiting for the running transaction to end (for tests and the benchmark)."""
        with self._cond:
            return len(self._queue)

    def record(self, record: AuditRecord) -> AuditEntry:
        """Append one row, chained to the previous one, in its own transaction."""
        return self.record_many([record])[0]

    def record_many(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Append rows in one transaction (a batch of rules created by one Rucio call).

        Returns once they are committed, so an intent is in the trail before the action it
        announces is tried. Callers in other threads that append at the same time share
        the transaction (group commit, `_write`): while one transaction runs, the next
        callers gather, and the first of them writes for all of them when it ends. A
        thousand resources arriving at once each append an intent and its outcome; they
        serialise on the chain head anyway, so sharing costs nobody a wait and saves a
        transaction (a lock of the head, a commit, a flush to disk) per caller in the group.

        Each committed row is also logged (`log_action`), so the log pipeline sees every
        external action with its resource and target without reading the database.

        Raises
        ------
        Exception
            Whatever the database raised for the transaction that held these rows (every
            caller of a failed group gets it: none of their rows were appended), or
            whatever made these records unserialisable (only this caller's rows are left
            out then).
        """
        if not records:
            return []
        mine = _Pending(list(records))
        group: list[_Pending] = []
        with self._cond:
            self._queue.append(mine)
            while not mine.done:
                if not self._writing:
                    self._writing, group, self._queue = True, self._queue, []
                    break
                self._cond.wait()
        if group:
            try:
                self._write(group)
            finally:
                with self._cond:
                    self._writing = False
                    for pending in group:
                        if pending.error is None and not pending.entries:
                            pending.error = _Interrupted("the audit transaction did not end")
                        pending.done = True
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.entries

    def _write(self, group: list[_Pending]) -> None:
        """Append the rows of every caller in ``group`` in one transaction; log them."""
        written: list[_Pending] = []
        try:
            with self.sessions.begin() as session:
                self.transactions += 1
                AUDIT_TRANSACTIONS.inc()
                store = AuditStore(session)
                seq, prev_hash = store.lock_head()
                now = utc(self.clock())
                entries: list[AuditEntry] = []
                for pending in group:
                    try:
                        chained = _chain(pending.records, seq, now, prev_hash)
                    except (TypeError, ValueError) as error:  # a value JSON cannot hold
                        pending.error = error
                        continue
                    pending.entries = chained
                    entries += chained
                    written.append(pending)
                    seq, prev_hash = chained[-1].id, chained[-1].hash
                if entries:
                    store.append_all(entries)
        except Exception as error:  # noqa: BLE001 - handed to every caller of the group
            for pending in group:
                if pending.error is None:
                    pending.error, pending.entries = error, []
            return
        if written:
            self._announce([entry for pending in written for entry in pending.entries])

    def _announce(self, entries: Sequence[AuditEntry]) -> None:
        """Log committed rows and tell the listeners the new last row id."""
        for entry in entries:
            log_action(
                kind=entry.kind,
                namespace=entry.namespace,
                name=entry.name,
                action=entry.action,
                target=entry.target,
                result=entry.result,
                audit_id=entry.id,
                generation=entry.generation,
                git_commit=entry.git_commit,
            )
        for listener in self.listeners:
            listener(entries[-1].id)

    def query(self, where: AuditFilter, limit: int | None = None) -> list[AuditEntry]:
        """Rows matching ``where``, oldest first."""
        with self.sessions() as session:
            return AuditStore(session).query(where, limit)

    def latest(self, where: AuditFilter, actions: Collection[str]) -> AuditEntry | None:
        """The newest row matching ``where`` whose action is one of ``actions``.

        The deletion gate asks this to find an intent a stopped operator left open.
        """
        with self.sessions() as session:
            return AuditStore(session).latest(where, actions)

    def query_after(
        self, where: AuditFilter, after_id: int, actions: Sequence[str]
    ) -> list[AuditEntry]:
        """Rows matching ``where`` with one of ``actions``, appended after row ``after_id``."""
        with self.sessions() as session:
            return AuditStore(session).query_after(where, after_id, actions)

    def head(self) -> tuple[int, str]:
        """Return the last row's id and hash (worth recording outside the database)."""
        with self.sessions() as session:
            return AuditStore(session).head()

    def verify(self) -> list[TamperFinding]:
        """Walk the chain and report every row that breaks it; empty means intact."""
        return self.walk().findings

    def walk(self, capture: Collection[int] = ()) -> TrailWalk:
        """Walk the chain, report every row that breaks it, keep the hashes of ``capture``."""
        findings: list[TamperFinding] = []
        captured: dict[int, str] = {}
        wanted = set(capture)
        with self.sessions() as session:
            store = AuditStore(session)
            expected_id, prev_hash = 1, GENESIS_HASH
            for entry in store.iter_all():
                findings.extend(_check(entry, expected_id, prev_hash))
                if entry.id in wanted:
                    captured[entry.id] = entry.hash
                expected_id, prev_hash = entry.id + 1, entry.hash
            head_seq, head_hash = store.head()
        if head_seq != expected_id - 1 or head_hash != prev_hash:
            findings.append(
                TamperFinding(
                    head_seq,
                    f"the chain head says the last row is {head_seq}, but the trail ends at "
                    f"row {expected_id - 1}: rows at the end were deleted or added without it",
                )
            )
        return TrailWalk(findings, expected_id - 1, prev_hash, captured)

    def extend_from(self, seq: int, head: str) -> tuple[int, str, list[TamperFinding]]:
        """Check the trail still passes through (``seq``, ``head``) and chains on from there.

        Returns the last row's id and hash, and what is wrong. Only the rows after ``seq`` are
        read, so a checkpoint costs the rows since the previous one, not the whole trail.
        """
        findings: list[TamperFinding] = []
        with self.sessions() as session:
            store = AuditStore(session)
            if seq > 0:
                anchor = store.entry(seq)
                if anchor is None or anchor.hash != head:
                    what = "is gone" if anchor is None else "no longer has the signed hash"
                    findings.append(TamperFinding(seq, f"row {seq}, the last one signed, {what}"))
                    return seq, head, findings
            expected_id, prev_hash = seq + 1, head
            for entry in store.iter_all(after=seq):
                findings.extend(_check(entry, expected_id, prev_hash))
                expected_id, prev_hash = entry.id + 1, entry.hash
        return expected_id - 1, prev_hash, findings

    def checkpoints(self) -> list[AuditCheckpoint]:
        """The checkpoints stored in the database, oldest first (believe only signed ones)."""
        with self.sessions() as session:
            return AuditStore(session).checkpoints()

    def add_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store one signed checkpoint."""
        with self.sessions.begin() as session:
            AuditStore(session).add_checkpoint(checkpoint)


class _Interrupted(Exception):  # noqa: N818 - says what happened, not that it is an error
    """The thread writing a group's transaction stopped before it ended (an interrupt)."""


@dataclass
class _Pending:
    """One caller's rows waiting for a group's transaction (`AuditService.record_many`)."""

    records: list[AuditRecord]
    done: bool = False
    entries: list[AuditEntry] = field(default_factory=list)
    error: Exception | None = None


def _chain(
    records: Sequence[AuditRecord], seq: int, now: datetime, prev_hash: str
) -> list[AuditEntry]:
    """Rows for ``records``, chained after row ``seq`` whose hash is ``prev_hash``."""
    entries = []
    for record in records:
        seq += 1
        entry = _entry(record, seq, now, prev_hash)
        entries.append(entry)
        prev_hash = entry.hash
    return entries


def _entry(record: AuditRecord, seq: int, now: datetime, prev_hash: str) -> AuditEntry:
    ref = record.resource
    entry = AuditEntry(
        id=seq,
        time=now,
        actor=record.actor,
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        uid=ref.uid,
        generation=ref.generation,
        git_commit=ref.git_commit,
        git_author=ref.git_author,
        git_path=ref.git_path,
        action=record.action,
        target=record.target,
        before=_json(record.before),
        after=_json(record.after),
        result=record.result,
        message=record.message,
        prev_hash=prev_hash,
    )
    entry.hash = entry_hash(entry)
    return entry


def _check(entry: AuditEntry, expected_id: int, prev_hash: str) -> list[TamperFinding]:
    findings = []
    if entry.id != expected_id:
        missing = (
            f"rows {expected_id}-{entry.id - 1}"
            if entry.id - 1 > expected_id
            else f"row {expected_id}"
        )
        if entry.id > expected_id:
            findings.append(TamperFinding(entry.id, f"{missing} deleted before row {entry.id}"))
        else:
            findings.append(TamperFinding(entry.id, f"row {entry.id} is out of sequence"))
    if entry.hash != entry_hash(entry):
        findings.append(
            TamperFinding(
                entry.id, f"row {entry.id} was edited: its content does not match its hash"
            )
        )
    if entry.prev_hash != prev_hash and entry.id == expected_id:
        findings.append(
            TamperFinding(
                entry.id,
                f"row {entry.id} does not chain to the row before it: a row was inserted, "
                "replaced or deleted just before it",
            )
        )
    return findings
