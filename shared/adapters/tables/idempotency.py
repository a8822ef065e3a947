"""The senders' Idempotency-Keys, on the log's metadata (migration 0010 creates it).

One row per key a member of staff sent: the key belongs to its sender (organisation and
user), so another sender's identical key is another row, never a replay of this one. The
row is written in the same transaction as what the request recorded, and its primary key
settles a race between two requests with the same key: one inserts, the other answers
what the first one made.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import metadata

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("organisation", sa.String(64), primary_key=True),
    sa.Column("actor_user", sa.String(100), primary_key=True),
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    # What the key was used for: method and route ("POST /cases/{case_id}/actions/{action}")
    # and a SHA-256 over the validated body and path parameters.
    sa.Column("operation", sa.String(200), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # What the request made or acted on: a case, a visit, a webhook subscription.
    sa.Column("resource_id", sa.Uuid(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
