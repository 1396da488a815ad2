"""Tables of the audit store: append-only rows chained by hashes, the chain's head, checkpoints.

Modelled on Rucio's ``insert_rule_history``: history is rows that are never updated or
deleted. Each row carries the hash of the previous row, so an edited, inserted or deleted row
breaks the chain where it happened (design.md guarantee 4). The one-row ``audit_head`` table
serialises writers: a writer first updates the head (a row lock on PostgreSQL, the write lock
on SQLite), so two processes can never chain onto the same predecessor.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["GENESIS_HASH", "AuditCheckpoint", "AuditEntry", "AuditHead", "Base"]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first row."""


class Base(DeclarativeBase):
    """Declarative base of Steward's tables."""


class AuditHead(Base):
    """The end of the chain: last sequence number and hash. Exactly one row, id 1."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditEntry(Base):
    """One external action (or one apply) and everything an auditor needs to judge it."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    namespace: Mapped[str | None] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253), nullable=False)
    uid: Mapped[str | None] = mapped_column(String(64))
    generation: Mapped[int | None] = mapped_column(Integer)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_author: Mapped[str | None] = mapped_column(String(255))
    git_path: Mapped[str | None] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str | None] = mapped_column(String(255))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(32), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (
        Index("ix_audit_entries_resource", "kind", "namespace", "name"),
        Index("ix_audit_entries_time", "time"),
    )


class AuditCheckpoint(Base):
    """A signed statement "the trail had ``seq`` rows ending in ``head`` at ``time``".

    A copy for convenience only: whoever can write this table can delete rows from it, so the
    checkpoints that count are the ones kept outside the database (a ConfigMap, an auditor's
    export), and a row here is believed only when its signature verifies.
    """

    __tablename__ = "audit_checkpoints"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    head: Mapped[str] = mapped_column(String(64), nullable=False)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    prev: Mapped[str] = mapped_column(String(64), nullable=False)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)
