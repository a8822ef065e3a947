"""Each projection's checkpoint, on the log's metadata (migration 0007 creates it)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import metadata

projection_checkpoints = sa.Table(
    "projection_checkpoints",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    # The projection's tables hold the log up to and including this LogCursor.
    sa.Column("tx_id", sa.BigInteger(), nullable=False),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("events_applied", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # One writer at a time: a live runner in some replica, or a rebuild (which takes it
    # over and keeps it until it finishes or stops).
    sa.Column("lease_holder", sa.String(100)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    # Set when a rebuild emptied the tables, cleared when it caught up with the log: a
    # rebuild that finds it set continues from the checkpoint instead of starting again.
    sa.Column("rebuild_started_at", sa.DateTime(timezone=True)),
    sa.Column("rebuilt_at", sa.DateTime(timezone=True)),
)
