"""Statistics: the station statistics and delegation usage read models.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_STATISTICS_MEASURES = (
    "received",
    "accepted",
    "corrections",
    "not_accepted",
    "withdrawn",
    "forwarded",
    "completed_at_station",
    "completed_upstream",
    "approved",
    "rejected",
    "delivered",
    "timed",
    "on_time_committed",
    "on_time_legal",
    "working_days",
    "ratings",
    "rating_sum",
    "poor_ratings",
)


def _counters(*names: str) -> list[sa.Column[int]]:
    return [sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in names]


def upgrade() -> None:
    op.create_table(
        "station_statistics",
        sa.Column("station", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("case_kind", sa.String(64), primary_key=True),
        sa.Column("item", sa.String(64), primary_key=True),
        *_counters(*_STATISTICS_MEASURES),
    )
    op.create_index("ix_station_statistics_day", "station_statistics", ["day"])
    op.create_table(
        "delegation_usage",
        sa.Column("delegation_id", sa.String(64), primary_key=True),
        sa.Column("delegation_version", sa.Integer(), primary_key=True),
        sa.Column("station", sa.String(64), primary_key=True),
        sa.Column("item", sa.String(64), primary_key=True),
        sa.Column("power", sa.String(16), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        *_counters("actions", "refused"),
    )
    op.create_index("ix_delegation_usage_station_day", "delegation_usage", ["station", "day"])


def downgrade() -> None:
    op.drop_table("delegation_usage")
    op.drop_table("station_statistics")
