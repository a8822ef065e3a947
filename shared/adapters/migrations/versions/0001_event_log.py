"""The event log, the consumers' inbox and the relay checkpoint.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PG_TRIGGERS = [
    # Each row records the writing transaction's id; readers stay below the oldest
    # running transaction so a late commit is never skipped (see eventlog.store).
    "ALTER TABLE events ALTER COLUMN tx_id SET DEFAULT (pg_current_xact_id()::text::bigint)",
    """
    CREATE FUNCTION caseflow_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'caseflow events are append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION caseflow_refuse_change()
    """,
    """
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION caseflow_refuse_change()
    """,
    """
    CREATE FUNCTION caseflow_notify_append() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('caseflow_events', '');
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION caseflow_notify_append()
    """,
]

_SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'caseflow events are append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'caseflow events are append-only: DELETE refused'); END
    """,
]


_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _create_tables() -> None:
    op.create_table(
        "events",
        sa.Column("position", _POSITION, primary_key=True, autoincrement=True),
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
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("tx_id", sa.BigInteger(), nullable=False, server_default="0"),
        sa.UniqueConstraint("case_id", "version", name="uq_events_case_version"),
    )
    op.create_index("ix_events_tx_position", "events", ["tx_id", "position"])
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "relay_checkpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("tx_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("lease_holder", sa.String(100)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
    )


def upgrade() -> None:
    bind = op.get_bind()
    _create_tables()
    statements = _PG_TRIGGERS if bind.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_append_only ON events")
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    for table in ("relay_checkpoints", "inbox", "events"):
        op.drop_table(table)
