"""Delegation index: finds each instrument's event stream by code, delegator and delegate.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delegation_index",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("delegator", sa.String(64), nullable=False),
        sa.Column("delegate", sa.String(64), nullable=False),
    )
    op.create_index("ix_delegation_index_delegate", "delegation_index", ["delegate"])
    op.create_index("ix_delegation_index_delegator", "delegation_index", ["delegator"])


def downgrade() -> None:
    op.drop_index("ix_delegation_index_delegator", table_name="delegation_index")
    op.drop_index("ix_delegation_index_delegate", table_name="delegation_index")
    op.drop_table("delegation_index")
