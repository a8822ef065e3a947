"""Reading the log for an audit: every row in position order, in the portable row form.

PostgreSQL is read with asyncpg directly (a server-side cursor in one read-only snapshot,
times and UUIDs turned into their canonical text by the server, the next batch fetched
while the current one is checked): the verifier's throughput depends on it. SQLite is read through
the same engine, converting its stored text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.application.audit.rows import COLUMNS, EventRow, hyphenated, sqlite_time

BATCH = 20_000
_TIME = """to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_PG_SELECT = f"""
SELECT position, event_id::text, case_id::text, case_kind, version, event_type,
       schema_version, {_TIME.format(col="occurred_at")}, {_TIME.format(col="recorded_at")},
       actor_user, actor_role, actor_station, authority, delegation_id, delegation_version,
       correlation_id, causation_id, payload::text, prev_hash, hash, tx_id
FROM events WHERE position > $1 AND position <= $2 ORDER BY position
"""
_SQLITE_SELECT = sa.text(
    f"SELECT {', '.join(COLUMNS)} FROM events "
    "WHERE position > :after AND position <= :upto ORDER BY position LIMIT :limit"
)
_PAYLOAD = COLUMNS.index("payload")
MAX_POSITION = 2**63 - 1


def _pg_row(record: Any) -> EventRow:
    # Not strict: the query's columns are checked against COLUMNS once a page.
    row = dict(zip(COLUMNS, record, strict=False))
    row["payload"] = orjson.loads(row["payload"])
    return row


def _sqlite_row(record: Any) -> EventRow:
    row = dict(zip(COLUMNS, record, strict=True))
    row["event_id"] = hyphenated(row["event_id"])
    row["case_id"] = hyphenated(row["case_id"])
    row["occurred_at"] = sqlite_time(row["occurred_at"])
    row["recorded_at"] = sqlite_time(row["recorded_at"])
    payload = row["payload"]
    row["payload"] = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
    return row


async def stream_rows(
    engine: AsyncEngine,
    *,
    after: int = 0,
    upto: int = MAX_POSITION,
    batch: int = BATCH,
    cases: Collection[str] | None = None,
) -> AsyncIterator[list[EventRow]]:
    """Batches of rows with ``after < position <= upto``, in position order.

    ``cases``: only rows of these case ids (text form), still read in position order.
    """
    pages = _pg_pages if engine.dialect.name == "postgresql" else _sqlite_pages
    async for rows in pages(engine, after, upto, batch):
        yield rows if cases is None else [r for r in rows if r["case_id"] in cases]


async def _pg_pages(
    engine: AsyncEngine, after: int, upto: int, batch: int
) -> AsyncIterator[list[EventRow]]:
    """One server-side cursor over the range in one read-only snapshot."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        apg = raw.driver_connection
        assert apg is not None
        async with apg.transaction(isolation="repeatable_read", readonly=True):
            async for rows in pg_cursor_pages(apg, after, upto, batch):
                yield rows
        await conn.rollback()


async def pg_cursor_pages(
    apg: Any, after: int, upto: int = MAX_POSITION, batch: int = BATCH
) -> AsyncIterator[list[EventRow]]:
    """Batches of rows with ``after < position <= upto`` through an asyncpg connection
    already in a transaction: one server-side cursor (one plan, an index scan in position
    order); the next page is fetched while the caller checks the current one."""
    cursor = await apg.cursor(_PG_SELECT, after, upto)
    pending: asyncio.Task[list[Any]] | None = asyncio.create_task(cursor.fetch(batch))
    try:
        while pending is not None:
            records = await pending
            pending = None
            if len(records) == batch:
                pending = asyncio.create_task(cursor.fetch(batch))
            if records:
                if len(records[0]) != len(COLUMNS):
                    raise RuntimeError("the events query and COLUMNS disagree")
                yield [_pg_row(r) for r in records]
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


async def _sqlite_pages(
    engine: AsyncEngine, after: int, upto: int, batch: int
) -> AsyncIterator[list[EventRow]]:
    async with engine.connect() as conn:
        while True:
            records = (
                await conn.execute(_SQLITE_SELECT, {"after": after, "upto": upto, "limit": batch})
            ).all()
            if records:
                yield [_sqlite_row(r) for r in records]
            if len(records) < batch:
                break
            after = records[-1][0]
        await conn.rollback()
