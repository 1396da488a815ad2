"""Remember when a campaign succeeded, so its staging rules can be released after a grace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``ledger_campaigns.succeeded_at`` (nullable: unfinished campaigns have none)."""
    with op.batch_alter_table("ledger_campaigns") as batch:
        batch.add_column(sa.Column("succeeded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop ``ledger_campaigns.succeeded_at``."""
    with op.batch_alter_table("ledger_campaigns") as batch:
        batch.drop_column("succeeded_at")
