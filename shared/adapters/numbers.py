"""Human-readable case numbers: ``<station prefix>-<year>-<six digits>``, gap-free per
station and year, drawn inside the transaction that opens the case."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.tables.workflow import case_numbers


def format_number(prefix: str, year: int, number: int) -> str:
    """``XF-2026-000123``."""
    return f"{prefix}-{year}-{number:06d}"


async def allocate(conn: AsyncConnection, prefix: str, year: int) -> str:
    """The next number for ``prefix`` and ``year``, in one statement (an upsert that
    starts the year's counter at 1 or adds 1 to it). The counter row stays locked until
    the caller's transaction ends, so a rolled-back case gives its number back."""
    insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(case_numbers)
    row = await conn.execute(
        insert.values(prefix=prefix, year=year, last_number=1)
        .on_conflict_do_update(
            index_elements=[case_numbers.c.prefix, case_numbers.c.year],
            set_={"last_number": case_numbers.c.last_number + 1},
        )
        .returning(case_numbers.c.last_number)
    )
    return format_number(prefix, year, int(row.scalar_one()))
