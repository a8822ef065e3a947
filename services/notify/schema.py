"""Notify's tables, on the log's metadata (migration 0005 creates them).

``notify_deliveries`` is notify's outbox: one row per (event, recipient, channel), written
in the same transaction that marks the event handled, so a delivery exists exactly when
the event was planned, and planning it again (a redelivery) adds nothing. A row is
``pending`` until it is ``sent`` or ``failed``; a failed row is a dead letter until an
operator re-drives it. Rows are kept: they are notify's own record of every attempt.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import JSONDoc, metadata

_PENDING = "status = 'pending'"

deliveries = sa.Table(
    "notify_deliveries",
    metadata,
    sa.Column("delivery_id", sa.Uuid(), primary_key=True),
    sa.Column("event_id", sa.Uuid(), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("case_id", sa.Uuid(), nullable=False),
    sa.Column("case_kind", sa.String(64), nullable=False),
    sa.Column("station", sa.String(64)),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("audience", sa.String(200), nullable=False),
    # Personal data (an email address, a mobile number): never logged, never in an event.
    sa.Column("address", sa.Text(), nullable=False),
    sa.Column("masked", sa.String(200), nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("template", sa.String(100)),
    sa.Column("subject", sa.Text(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("subscription_id", sa.Uuid()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    # How many times the delivery was given up on and re-driven.
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
    sa.Index(
        "ix_notify_deliveries_due",
        "channel",
        "next_attempt_at",
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    ),
    sa.Index("ix_notify_deliveries_case", "case_id"),
    sa.Index("ix_notify_deliveries_status", "status", "failed_at"),
)

subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("subscription_id", sa.Uuid(), primary_key=True),
    sa.Column("station", sa.String(64), nullable=False),
    sa.Column("event_types", JSONDoc, nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("description", sa.String(500)),
    sa.Column("status", sa.String(16), nullable=False),
    # Why notify paused it (a receiver's 410 Gone); none when a person set the status
    # (migration 0011).
    sa.Column("status_reason", sa.String(500)),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_webhook_subscriptions_station", "station"),
)
