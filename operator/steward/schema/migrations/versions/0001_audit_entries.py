"""Create the audit trail: hash-chained entries and the chain head.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create audit_entries and audit_head (with its single row)."""
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(253)),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(64)),
        sa.Column("generation", sa.Integer),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_author", sa.String(255)),
        sa.Column("git_path", sa.String(1024)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("before", sa.Text),
        sa.Column("after", sa.Text),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_entries_resource", "audit_entries", ["kind", "namespace", "name"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])


def downgrade() -> None:
    """Drop the audit tables."""
    op.drop_table("audit_head")
    op.drop_index("ix_audit_entries_resource", "audit_entries")
    op.drop_table("audit_entries")
