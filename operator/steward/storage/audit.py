"""Rows of the audit trail and its checkpoints: lock the head, append, read back. Never commits."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from steward.exceptions import TransientError
from steward.schema.audit import AuditCheckpoint, AuditEntry, AuditHead, Base

__all__ = ["AuditFilter", "AuditStore"]

_HEAD = Base.metadata.tables[AuditHead.__tablename__]
_ENTRIES = Base.metadata.tables[AuditEntry.__tablename__]
_LOCK_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq)
"""Takes the writer's lock (`AuditStore.lock_head`); built once, as the statements below."""
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
_MOVE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
_INSERT_ENTRY = insert(_ENTRIES)
_COLUMNS = tuple(column.key for column in _ENTRIES.columns)


def _row(entry: AuditEntry) -> dict[str, Any]:
    """The values of one entry, by column, as `AuditStore.append_all` inserts them."""
    return {key: getattr(entry, key) for key in _COLUMNS}


@dataclass(frozen=True)
class AuditFilter:
    """Which rows to read; every field narrows, None means any."""

    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    actor: str | None = None
    action: str | None = None
    result: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditStore:
    """Audit rows through one session; the calling service owns the transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def lock_head(self) -> tuple[int, str]:
        """Take the writer's lock on the chain head and return (last seq, last hash).

        The UPDATE comes first on purpose: it takes the row lock (PostgreSQL) or the write
        lock (SQLite) before anything is read, so concurrent writers serialise here.
        """
        connection = self._session.connection()
        connection.execute(_LOCK_HEAD)
        seq, last = connection.execute(_READ_HEAD).one()
        return int(seq), str(last)

    def append_all(self, entries: Sequence[AuditEntry]) -> None:
        """Insert ``entries`` (already chained) and move the head to the last one.

        Call after :meth:`lock_head`, in the same transaction. The rows go in as one
        executemany of a statement built once, not through the ORM's unit of work: every
        value is already on the entry, and the ORM's bookkeeping (identity map, flush
        plan, a statement compiled per call) was most of a transaction's CPU in a burst of
        a thousand new resources (docs/replication.md, "The burst, measured"). The entries
        stay plain objects the caller reads; the rows hold the same values the ORM wrote.
        """
        connection = self._session.connection()
        connection.execute(_INSERT_ENTRY, [_row(entry) for entry in entries])
        last = entries[-1]
        connection.execute(_MOVE_HEAD, {"new_seq": last.id, "new_hash": last.hash})

    def head(self) -> tuple[int, str]:
        """Return (last seq, last hash) without locking."""
        head = self._session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        return head.seq, head.hash

    def iter_all(self, batch: int = 1000, after: int = 0) -> Iterator[AuditEntry]:
        """Rows after id ``after`` in chain order, in batches so a long trail fits in memory."""
        statement = (
            select(AuditEntry)
            .where(AuditEntry.id > after)
            .order_by(AuditEntry.id)
            .execution_options(yield_per=batch)
        )
        yield from self._session.execute(statement).scalars()

    def entry(self, seq: int) -> AuditEntry | None:
        """The row with id ``seq``, if there is one."""
        return self._session.get(AuditEntry, seq)

    def add_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store a checkpoint (already signed).

        Raises
        ------
        TransientError
            Another process stored a checkpoint with this number first (a standby that also
            signs): the caller tries again later, with the next number.
        """
        self._session.add(checkpoint)
        try:
            self._session.flush()
        except IntegrityError:
            msg = f"audit checkpoint {checkpoint.number} was stored by another process first"
            raise TransientError(msg) from None

    def checkpoints(self) -> list[AuditCheckpoint]:
        """Every stored checkpoint, oldest first."""
        statement = select(AuditCheckpoint).order_by(AuditCheckpoint.number)
        return list(self._session.execute(statement).scalars())

    def query(self, where: AuditFilter, limit: int | None = None) -> list[AuditEntry]:
        """Rows matching ``where``, oldest first."""
        return list(self._session.execute(self._select(where, limit)).scalars())

    def query_after(
        self, where: AuditFilter, after_id: int, actions: Sequence[str]
    ) -> list[AuditEntry]:
        """Rows matching ``where`` with one of ``actions``, appended after row ``after_id``.

        A reader that remembers the last row it saw reads only what is new (the trail is
        append-only, so nothing it read before can have changed).
        """
        statement = self._select(where, None).where(
            AuditEntry.id > after_id, AuditEntry.action.in_(actions)
        )
        return list(self._session.execute(statement).scalars())

    def _select(self, where: AuditFilter, limit: int | None) -> Select[AuditEntry]:
        statement: Select[AuditEntry] = select(AuditEntry).order_by(AuditEntry.id)
        statement = self._filtered(statement, where)
        if limit is not None:
            statement = statement.limit(limit)
        return statement

    def latest(self, where: AuditFilter, actions: Collection[str]) -> AuditEntry | None:
        """The newest row matching ``where`` whose action is one of ``actions``."""
        statement: Select[AuditEntry] = select(AuditEntry)
        statement = self._filtered(statement, where).where(AuditEntry.action.in_(list(actions)))
        statement = statement.order_by(AuditEntry.id.desc()).limit(1)
        return self._session.execute(statement).scalars().first()

    @staticmethod
    def _filtered(statement: Select[AuditEntry], where: AuditFilter) -> Select[AuditEntry]:
        for column, value in (
            (AuditEntry.kind, where.kind),
            (AuditEntry.namespace, where.namespace),
            (AuditEntry.name, where.name),
            (AuditEntry.uid, where.uid),
            (AuditEntry.actor, where.actor),
            (AuditEntry.action, where.action),
            (AuditEntry.result, where.result),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if where.since is not None:
            statement = statement.where(AuditEntry.time >= where.since)
        if where.until is not None:
            statement = statement.where(AuditEntry.time < where.until)
        return statement
