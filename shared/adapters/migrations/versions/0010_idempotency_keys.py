"""Idempotency-Keys that belong to their sender: (organisation, user, key) → the request.

Until now a key alone named the case (or visit, or subscription) it made, so anyone who
sent another sender's key got that sender's answer. Keys are now recorded per sender,
with the request's operation and fingerprint, beside what it made; ids are random.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("organisation", sa.String(64), primary_key=True),
        sa.Column("actor_user", sa.String(100), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("operation", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
