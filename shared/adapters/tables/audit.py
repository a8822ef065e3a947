"""The signed checkpoints' table, on the log's metadata (migration 0006 creates it)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import Position, metadata

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    # 1, 2, 3, …: the primary key is what keeps two writers from forking the chain (the
    # second insert of the same number fails).
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    # The range of global positions covered: after_position < position <= upto_position.
    sa.Column("after_position", Position, nullable=False),
    sa.Column("upto_position", Position, nullable=False, unique=True),
    sa.Column("event_count", sa.Integer(), nullable=False),
    # The signed leaf list: (position, event id, case id, event hash) of every event in
    # the range, encoded by shared.application.audit.checkpoint.encode_leaves.
    sa.Column("leaves", sa.LargeBinary(), nullable=False),
    sa.Column("prev_digest", sa.String(64)),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
