"""The durable timers' table, on the log's metadata (migration 0002 creates it)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import JSONDoc, metadata

_PENDING = "fired_at IS NULL AND cancelled_at IS NULL"

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("timer_id", sa.Uuid(), primary_key=True),
    sa.Column("case_id", sa.Uuid(), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    # Aware UTC on PostgreSQL; on SQLite UTC text, which compares in time order.
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", JSONDoc, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("fired_at", sa.DateTime(timezone=True)),
    # A cancelled timer stays as a tombstone, so scheduling the same id again is refused.
    sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text()),
    sa.Column("correlation_id", sa.String(100)),
    # Only pending timers are looked up by due time: a partial index stays small.
    sa.Index(
        "ix_timers_pending_due",
        "due_at",
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    ),
)
