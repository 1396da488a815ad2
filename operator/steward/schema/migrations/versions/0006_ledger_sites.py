"""Record the site that ran each attempt (and each invocation's last one) in the ledger.

A multi-site campaign's Jobs run wherever MultiKueue dispatches them; the ledger says where.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = ("ledger_attempts", "ledger_invocations")


def upgrade() -> None:
    """Add the nullable ``site`` columns (rows recorded before stay None)."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("site", sa.String(63), nullable=True))


def downgrade() -> None:
    """Drop the ``site`` columns."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("site")
