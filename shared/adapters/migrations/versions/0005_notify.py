"""Notify's outbox of deliveries (with its dead letters) and webhook subscriptions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_PENDING = "status = 'pending'"


def upgrade() -> None:
    op.create_table(
        "notify_deliveries",
        sa.Column("delivery_id", sa.Uuid(), primary_key=True),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("case_kind", sa.String(64), nullable=False),
        sa.Column("station", sa.String(64)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("audience", sa.String(200), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("masked", sa.String(200), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("template", sa.String(100)),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Uuid()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rounds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True)),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("last_error", sa.Text()),
        sa.Column("provider_message_id", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("failed_at", sa.DateTime(timezone=True)),
        sa.Column("correlation_id", sa.String(100)),
    )
    op.create_index(
        "ix_notify_deliveries_due",
        "notify_deliveries",
        ["channel", "next_attempt_at"],
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )
    op.create_index("ix_notify_deliveries_case", "notify_deliveries", ["case_id"])
    op.create_index("ix_notify_deliveries_status", "notify_deliveries", ["status", "failed_at"])
    op.create_table(
        "webhook_subscriptions",
        sa.Column("subscription_id", sa.Uuid(), primary_key=True),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("event_types", _JSON, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("description", sa.String(500)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_subscriptions_station", "webhook_subscriptions", ["station"])


def downgrade() -> None:
    op.drop_table("webhook_subscriptions")
    op.drop_index("ix_notify_deliveries_status", table_name="notify_deliveries")
    op.drop_index("ix_notify_deliveries_case", table_name="notify_deliveries")
    op.drop_index("ix_notify_deliveries_due", table_name="notify_deliveries")
    op.drop_table("notify_deliveries")
