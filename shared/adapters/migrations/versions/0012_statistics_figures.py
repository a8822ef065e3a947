"""Statistics count what the story reports besides: people helped, police cases solved,
acts entered later from paper records and the decisions entered without their moment;
visitors are counted as people too. The statistics are counted again from the log.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_NEW = ("people_helped", "cases_solved", "backfilled", "undated_decisions")


def upgrade() -> None:
    for name in _NEW:
        op.add_column(
            "station_statistics",
            sa.Column(name, sa.Integer(), nullable=False, server_default="0"),
        )
    # Rows counted before hold none of the new figures: empty the table and drop its
    # checkpoint, and the projection runner counts the whole log again on start.
    op.execute("DELETE FROM station_statistics")
    op.execute("DELETE FROM projection_checkpoints WHERE name = 'statistics'")


def downgrade() -> None:
    with op.batch_alter_table("station_statistics") as batch:
        for name in _NEW:
            batch.drop_column(name)
