"""Small SQL helpers that differ by dialect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_ignore(conn: AsyncConnection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when a row was inserted."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    result = await conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount == 1)


_COUNTER_UPSERTS: dict[tuple[str, str], Any] = {}


async def add_to_counters(
    conn: AsyncConnection,
    table: sa.Table,
    keys: tuple[str, ...],
    measures: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> None:
    """Add each row's ``measures`` to the stored row with the same ``keys`` (inserting it
    if there is none): INSERT … ON CONFLICT DO UPDATE SET m = m + excluded.m, one
    statement for all rows, on both dialects. ``rows`` must not repeat a key; a measure a
    row leaves out adds 0."""
    if not rows:
        return
    name = conn.dialect.name
    statement = _COUNTER_UPSERTS.get((name, table.name))
    if statement is None:
        insert = (postgresql if name == "postgresql" else sqlite).insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={m: table.c[m] + insert.excluded[m] for m in measures},
        )
        _COUNTER_UPSERTS[(name, table.name)] = statement
    zero = dict.fromkeys(measures, 0)
    await conn.execute(statement, [{**zero, **row} for row in rows])


def database_now(conn: AsyncConnection, plus: timedelta | None = None) -> sa.ColumnElement[Any]:
    """The time to compare leases with (``plus`` a while): the database's clock on
    PostgreSQL (replicas on several machines then agree whatever their own clocks say),
    this machine's on SQLite (every process on the file shares this machine's clock)."""
    if conn.dialect.name == "postgresql":
        return sa.func.now() if plus is None else sa.func.now() + plus
    now = datetime.now(UTC)
    return sa.literal(now if plus is None else now + plus, sa.DateTime(timezone=True))
