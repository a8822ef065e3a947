"""Projections: each read model's own checkpoint in the log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No rows: a projection without one starts from the beginning of the log, and the
    # case lists it finds written by the old consumer are rewritten case by case.
    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("tx_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("events_applied", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("lease_holder", sa.String(100)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("rebuild_started_at", sa.DateTime(timezone=True)),
        sa.Column("rebuilt_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("projection_checkpoints")
