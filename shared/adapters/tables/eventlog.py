"""The log's tables, as SQLAlchemy Core metadata (Alembic migrations create them)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "events",
    metadata,
    # Global position. On SQLite it is the rowid (single writer: commit order).
    sa.Column("position", Position, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Uuid(), nullable=False, unique=True),
    sa.Column("case_id", sa.Uuid(), nullable=False),
    sa.Column("case_kind", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("schema_version", sa.Integer(), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor_user", sa.String(100), nullable=False),
    sa.Column("actor_role", sa.String(50), nullable=False),
    sa.Column("actor_station", sa.String(50)),
    sa.Column("authority", sa.String(64)),
    sa.Column("delegation_id", sa.String(64)),
    sa.Column("delegation_version", sa.Integer()),
    sa.Column("correlation_id", sa.String(100)),
    sa.Column("causation_id", sa.String(100)),
    sa.Column("payload", JSONDoc, nullable=False),
    sa.Column("prev_hash", sa.String(64)),
    sa.Column("hash", sa.String(64), nullable=False),
    # PostgreSQL: the writing transaction's id, for the gap-free read horizon. SQLite: 0.
    sa.Column("tx_id", sa.BigInteger(), nullable=False, server_default="0"),
    sa.UniqueConstraint("case_id", "version", name="uq_events_case_version"),
    sa.Index("ix_events_tx_position", "tx_id", "position"),
    # The audit reads the delegation register's streams by kind (migration 0009).
    sa.Index("ix_events_kind_case_version", "case_kind", "case_id", "version"),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.Uuid(), primary_key=True),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
)

relay_checkpoints = sa.Table(
    "relay_checkpoints",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("tx_id", sa.BigInteger(), nullable=False),
    sa.Column("position", sa.BigInteger(), nullable=False),
    # A lease so that one relay publishes at a time; others stand by (duplicates would be
    # harmless anyway: JetStream drops repeated Nats-Msg-Ids).
    sa.Column("lease_holder", sa.String(100)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
)
