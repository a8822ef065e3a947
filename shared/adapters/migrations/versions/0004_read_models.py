"""Case numbers and the workflow's read models (case index, tasks).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "case_numbers",
        sa.Column("prefix", sa.String(8), primary_key=True),
        sa.Column("year", sa.Integer(), primary_key=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
    )
    op.create_table(
        "case_index",
        sa.Column("case_id", sa.Uuid(), primary_key=True),
        sa.Column("case_number", sa.String(32), unique=True),
        sa.Column("case_kind", sa.String(64), nullable=False),
        sa.Column("station", sa.String(64)),
        sa.Column("authority", sa.String(64)),
        sa.Column("forward_to", sa.String(64)),
        sa.Column("item_code", sa.String(64)),
        sa.Column("item_version", sa.Integer()),
        sa.Column("workflow", sa.String(64)),
        sa.Column("workflow_version", sa.Integer()),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("applicant_name", sa.String(100)),
        sa.Column("warning", sa.String(16)),
        sa.Column("opened_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("summary", _JSON, nullable=False),
    )
    op.create_index("ix_case_index_station_status", "case_index", ["station", "status"])
    op.create_index("ix_case_index_forward_to", "case_index", ["forward_to"])
    op.create_table(
        "tasks",
        sa.Column("case_id", sa.Uuid(), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("claimed_by", sa.String(100)),
        sa.Column("case_number", sa.String(32)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("warning", sa.String(16)),
        sa.Column("opened_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_tasks_org_role", "tasks", ["org", "role"])


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("case_index")
    op.drop_table("case_numbers")
