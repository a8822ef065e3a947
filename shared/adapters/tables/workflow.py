"""The workflow's tables, on the log's metadata (migration 0004 creates them).

``case_numbers`` hands out the human-readable case numbers (``XF-2026-000123``) inside
the transaction that opens the case. ``case_index`` and ``tasks`` are read models —
projections of the log that processing keeps and that can be dropped and rebuilt.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import JSONDoc, metadata

case_numbers = sa.Table(
    "case_numbers",
    metadata,
    sa.Column("prefix", sa.String(8), primary_key=True),
    sa.Column("year", sa.Integer(), primary_key=True),
    sa.Column("last_number", sa.Integer(), nullable=False),
)

case_index = sa.Table(
    "case_index",
    metadata,
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
    sa.Column("summary", JSONDoc, nullable=False),
    sa.Index("ix_case_index_station_status", "station", "status"),
    sa.Index("ix_case_index_forward_to", "forward_to"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("case_id", sa.Uuid(), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("org", sa.String(64), nullable=False),
    sa.Column("claimed_by", sa.String(100)),
    sa.Column("case_number", sa.String(32)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("warning", sa.String(16)),
    sa.Column("opened_at", sa.DateTime(timezone=True)),
    sa.Index("ix_tasks_org_role", "org", "role"),
)
