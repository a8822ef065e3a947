"""The delegation index, on the log's metadata (migration 0003 creates it).

The instruments themselves live in the event log (one stream each); this table only
finds their streams by code and by the two bodies. It is written in the same
transaction as an instrument's publication, and never changes afterwards: an amendment
can't change the delegator or the delegate.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import metadata

delegation_index = sa.Table(
    "delegation_index",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("case_id", sa.Uuid(), nullable=False, unique=True),
    sa.Column("delegator", sa.String(64), nullable=False),
    sa.Column("delegate", sa.String(64), nullable=False),
    sa.Index("ix_delegation_index_delegate", "delegate"),
    sa.Index("ix_delegation_index_delegator", "delegator"),
)
