"""Create the campaign ledger: campaigns, invocations, attempts, Jobs, files and controls.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the ledger tables and their indexes."""
    op.create_table(
        "ledger_campaigns",
        sa.Column("uid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("output_scope", sa.String(255), nullable=False),
        sa.Column("invocations", sa.Integer, nullable=False),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("shard_size", sa.Integer, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("finished_at", _TIME),
        sa.Column("review", sa.String(32)),
        sa.Column("staging_released", sa.Boolean, nullable=False),
    )
    op.create_index("ix_ledger_campaigns_name", "ledger_campaigns", ["namespace", "name"])
    op.create_table(
        "ledger_invocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_uid", sa.String(64), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("data_id", sa.Text, nullable=False),
        sa.Column("data_id_hash", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job", sa.String(63)),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_job", sa.String(63)),
        sa.Column("last_class", sa.String(32)),
        sa.Column("exit_code", sa.Integer),
        sa.Column("node", sa.String(253)),
        sa.Column("started_at", _TIME),
        sa.Column("ended_at", _TIME),
        sa.UniqueConstraint("campaign_uid", "step", "index", name="uq_ledger_invocations_index"),
    )
    op.create_index("ix_ledger_invocations_data_id", "ledger_invocations", ["data_id_hash"])
    op.create_table(
        "ledger_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pod_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("campaign_uid", sa.String(64), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("job", sa.String(63), nullable=False),
        sa.Column("pod", sa.String(253), nullable=False),
        sa.Column("node", sa.String(253)),
        sa.Column("klass", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("counted", sa.Boolean, nullable=False),
        sa.Column("memory", sa.BigInteger),
        sa.Column("started_at", _TIME),
        sa.Column("ended_at", _TIME),
    )
    op.create_index(
        "ix_ledger_attempts_invocation", "ledger_attempts", ["campaign_uid", "step", "index"]
    )
    op.create_table(
        "ledger_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_uid", sa.String(64), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("shard", sa.Integer),
        sa.Column("invocations", sa.Text, nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("created", sa.Boolean, nullable=False),
        sa.Column("planned_at", _TIME, nullable=False),
        sa.UniqueConstraint("campaign_uid", "name", name="uq_ledger_jobs_name"),
    )
    op.create_table(
        "ledger_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("did", sa.String(512), nullable=False),
        sa.Column("campaign_uid", sa.String(64), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("adler32", sa.String(8)),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.UniqueConstraint(
            "campaign_uid", "step", "index", "role", "did", name="uq_ledger_files_row"
        ),
    )
    op.create_index("ix_ledger_files_did", "ledger_files", ["did"])
    op.create_index(
        "ix_ledger_files_campaign", "ledger_files", ["campaign_uid", "role", "registered"]
    )
    op.create_table(
        "ledger_controls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_uid", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("request_id", sa.String(63), nullable=False),
        sa.Column("invocations", sa.Text, nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.UniqueConstraint(
            "campaign_uid", "type", "step", "request_id", name="uq_ledger_controls_request"
        ),
    )


def downgrade() -> None:
    """Drop the ledger tables."""
    for table in (
        "ledger_controls",
        "ledger_files",
        "ledger_jobs",
        "ledger_attempts",
        "ledger_invocations",
        "ledger_campaigns",
    ):
        op.drop_table(table)
