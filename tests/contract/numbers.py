"""Case numbers on both backends: gap-free per station prefix and year, whatever runs at
once, and a rolled-back opening gives its number back."""

from __future__ import annotations

import asyncio

from shared.adapters import numbers
from shared.adapters.eventlog import EventLog


class _Refused(Exception):
    """The opening failed after its number was drawn."""


async def _draw(log: EventLog, prefix: str, year: int, keep: bool) -> str | None:
    try:
        async with log.writer.begin() as conn:
            number = await numbers.allocate(conn, prefix, year)
            await asyncio.sleep(0)  # let the others queue on the counter
            if not keep:
                raise _Refused
    except _Refused:
        return None
    return number


async def test_numbers_are_gap_free_per_prefix_and_year(log: EventLog) -> None:
    async with log.writer.begin() as conn:
        assert await numbers.allocate(conn, "XF", 2026) == "XF-2026-000001"
        assert await numbers.allocate(conn, "XF", 2026) == "XF-2026-000002"
        assert await numbers.allocate(conn, "XF", 2027) == "XF-2027-000001"
        assert await numbers.allocate(conn, "LM", 2026) == "LM-2026-000001"
    # 30 openings at once, every third rolled back after drawing its number
    drawn = await asyncio.gather(*(_draw(log, "XF", 2026, n % 3 != 0) for n in range(30)))
    kept = sorted(n for n in drawn if n is not None)
    assert kept == [f"XF-2026-{n:06d}" for n in range(3, 3 + 20)]
    async with log.writer.begin() as conn:
        assert await numbers.allocate(conn, "XF", 2026) == "XF-2026-000023"
        assert await numbers.allocate(conn, "LM", 2026) == "LM-2026-000002"
