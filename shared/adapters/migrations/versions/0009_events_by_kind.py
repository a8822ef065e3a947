"""Audit reads: find the delegation register's streams in the log without a full scan.

An auditor's timeline and compliance report read every instrument's stream straight
from ``events`` (``case_kind = 'delegation'``), not from the delegation index, so that
they rest on the hashed log alone; without this index that is a scan of the whole log.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_kind_case_version", "events", ["case_kind", "case_id", "version"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_case_version", table_name="events")
