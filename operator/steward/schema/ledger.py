"""Tables of the campaign ledger: every invocation, every attempt, every file, every Job.

The ledger, not ``Job.status``, is the truth about a campaign's progress (design.md, Campaign):
a Job turns Failed when one index fails, forgets the memory an index was given, and is gone
once deleted, while the production operator needs to know per invocation what ran where, why
each attempt ended, what it read and wrote (use cases 8-11, 16) long after the pods are gone.
It lives in the audit store's database (SQLite by default, PostgreSQL in production) and is
migrated with it.

Rows are keyed by the Campaign's UID, so a campaign re-created under the same name is a new
campaign; namespace and name are kept beside it for queries by name.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from steward.schema.audit import Base

__all__ = [
    "LedgerAttempt",
    "LedgerCampaign",
    "LedgerControl",
    "LedgerFile",
    "LedgerInvocation",
    "LedgerJob",
]


class LedgerCampaign(Base):
    """One campaign: its coverage set frozen at start, and how it ended."""

    __tablename__ = "ledger_campaigns"

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253), nullable=False)
    name: Mapped[str] = mapped_column(String(253), nullable=False)
    site: Mapped[str] = mapped_column(String(63), nullable=False)
    output_scope: Mapped[str] = mapped_column(String(255), nullable=False)
    invocations: Mapped[int] = mapped_column(Integer, nullable=False)
    """Size of the coverage set (invocations per step)."""
    steps: Mapped[str] = mapped_column(Text, nullable=False)
    """JSON list of the steps (name, dependsOn), in the spec's order."""
    shard_size: Mapped[int] = mapped_column(Integer, nullable=False)
    """Invocations per shard Job, fixed when the coverage set was enumerated."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    outcome: Mapped[str | None] = mapped_column(String(32))
    """None while unfinished; Succeeded, Failed, Terminated, ClosedOut or Deleted."""
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review: Mapped[str | None] = mapped_column(String(32))
    """``pending`` while a terminated campaign's outputs wait for the failure review."""
    staging_released: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When every invocation of every step succeeded (or was accepted), while that holds:
    ``inputs.releaseAfter`` counts from here."""

    __table_args__ = (Index("ix_ledger_campaigns_name", "namespace", "name"),)


class LedgerInvocation(Base):
    """One invocation of one step: its data id, state and the memory it is given."""

    __tablename__ = "ledger_invocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    step: Mapped[str] = mapped_column(String(63), nullable=False)
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    shard: Mapped[int] = mapped_column(Integer, nullable=False)
    data_id: Mapped[str] = mapped_column(Text, nullable=False)
    """The data id as canonical JSON."""
    data_id_hash: Mapped[str] = mapped_column(String(16), nullable=False)
    """Hash of the data id: finds every invocation over one DID (``{"did": DID}``) at once."""
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    """waiting, queued, succeeded, failed, accepted or cancelled."""
    job: Mapped[str | None] = mapped_column(String(63))
    """The Job in charge of running it now (or last)."""
    memory: Mapped[int] = mapped_column(BigInteger, nullable=False)
    """Bytes of memory its next (or last) attempt asks for; raised after an OOM kill."""
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    """Attempts charged to the retry budget (application and infrastructure failures)."""
    last_job: Mapped[str | None] = mapped_column(String(63))
    """The Job of the last recorded attempt."""
    last_class: Mapped[str | None] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(253))
    site: Mapped[str | None] = mapped_column(String(63))
    """The Site whose cluster ran the last recorded attempt (a multi-site campaign's shards
    run where MultiKueue sends them)."""
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("campaign_uid", "step", "index", name="uq_ledger_invocations_index"),
        Index("ix_ledger_invocations_data_id", "data_id_hash"),
    )


class LedgerAttempt(Base):
    """One pod that ran an invocation, and why it ended (`steward.services.attempts`)."""

    __tablename__ = "ledger_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pod_uid: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    campaign_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    step: Mapped[str] = mapped_column(String(63), nullable=False)
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    job: Mapped[str] = mapped_column(String(63), nullable=False)
    pod: Mapped[str] = mapped_column(String(253), nullable=False)
    node: Mapped[str | None] = mapped_column(String(253))
    site: Mapped[str | None] = mapped_column(String(63))
    """The Site whose cluster ran the pod (None: recorded before sites were recorded)."""
    klass: Mapped[str] = mapped_column(String(32), nullable=False)
    """Succeeded, Evicted, OOMKilled, ExitCode or Infrastructure."""
    reason: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    counted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    """Whether it was charged to the invocation's retry budget."""
    memory: Mapped[int | None] = mapped_column(BigInteger)
    """Bytes of memory the pod asked for."""
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_ledger_attempts_invocation", "campaign_uid", "step", "index"),)


class LedgerJob(Base):
    """A Kubernetes Job Steward decided to create: a shard of a step, or a rescue.

    The row is written before the Job is created, so a crash in between is repaired by
    creating it (same name) on the next pass, never by planning a second one.
    """

    __tablename__ = "ledger_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    step: Mapped[str] = mapped_column(String(63), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    """``shard`` or ``rescue``."""
    shard: Mapped[int | None] = mapped_column(Integer)
    invocations: Mapped[str] = mapped_column(Text, nullable=False)
    """Invocation indexes by completion index, as ranges (``0-99`` or ``3,7,12-14``)."""
    memory: Mapped[int] = mapped_column(BigInteger, nullable=False)
    retries: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    created: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """Whether the Job object was created (or found) in the cluster."""
    planned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (UniqueConstraint("campaign_uid", "name", name="uq_ledger_jobs_name"),)


class LedgerFile(Base):
    """A file an invocation read (``input``) or wrote (``output``)."""

    __tablename__ = "ledger_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    did: Mapped[str] = mapped_column(String(512), nullable=False)
    campaign_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    step: Mapped[str] = mapped_column(String(63), nullable=False)
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(8), nullable=False)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    adler32: Mapped[str | None] = mapped_column(String(8))
    registered: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """Outputs: whether Rucio has the file, its replica and its dataset attachment."""

    __table_args__ = (
        UniqueConstraint(
            "campaign_uid", "step", "index", "role", "did", name="uq_ledger_files_row"
        ),
        Index("ix_ledger_files_did", "did"),
        Index("ix_ledger_files_campaign", "campaign_uid", "role", "registered"),
    )


class LedgerControl(Base):
    """An operator control (retry, rescue, accept, approve) Steward has acted on, once."""

    __tablename__ = "ledger_controls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    step: Mapped[str] = mapped_column(String(63), nullable=False)
    request_id: Mapped[str] = mapped_column(String(63), nullable=False, default="")
    invocations: Mapped[str] = mapped_column(Text, nullable=False, default="")
    """Indexes it concerned, as ranges (the accepted failures, the rerun invocations)."""
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint(
            "campaign_uid", "type", "step", "request_id", name="uq_ledger_controls_request"
        ),
    )
