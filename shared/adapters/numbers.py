"""Human-readable case numbers: ``<station prefix>-<year>-<six digits>``, gap-free per
station and year, drawn inside the transaction that opens the case."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.sql import insert_ignore
from shared.adapters.tables.workflow import case_numbers


def format_number(prefix: str, year: int, number: int) -> str:
    """``XF-2026-000123``."""
    return f"{prefix}-{year}-{number:06d}"


async def allocate(conn: AsyncConnection, prefix: str, year: int) -> str:
    """The next number for ``prefix`` and ``year``. The counter row stays locked until the
    caller's transaction ends, so a rolled-back case gives its number back."""
    await insert_ignore(conn, case_numbers, {"prefix": prefix, "year": year, "last_number": 0})
    row = await conn.execute(
        sa.update(case_numbers)
        .where(case_numbers.c.prefix == prefix, case_numbers.c.year == year)
        .values(last_number=case_numbers.c.last_number + 1)
        .returning(case_numbers.c.last_number)
    )
    return format_number(prefix, year, int(row.scalar_one()))
