"""Nothing a station did can be dated before it opened (issue 17): Xuefeng station opened
on 2021-11-14; a paper record dated earlier, though inside the working calendar, is
refused with that reason, and nothing is stored."""

from __future__ import annotations

import uuid

import httpx
import sqlalchemy as sa

from shared.adapters.db import create_engine
from shared.adapters.tables.eventlog import events
from tests.services import build_app, staff_headers

CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")


async def stored(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(events)) or 0)
    finally:
        await engine.dispose()


async def test_a_visit_before_the_station_opened_is_refused_with_the_opening_date(
    sqlite_url: str,
) -> None:
    app = build_app("intake", sqlite_url)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:

        async def visit(occurred_at: str) -> httpx.Response:
            return await client.post(
                "/reception",
                json={"visitor_name": "薛老汉", "purpose": "enquiry", "occurred_at": occurred_at},
                headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
            )

        before = await stored(sqlite_url)
        refused = await visit("2021-11-12T10:00:00+08:00")  # in the calendar (2021), not yet open
        assert refused.status_code == 422, refused.text
        assert "before the station opened on 2021-11-14" in refused.json()["detail"]
        assert "早于服务站设立日期" in refused.json()["detail"]
        assert await stored(sqlite_url) == before
        taken = await visit("2021-11-15T10:00:00+08:00")  # its second day, a Monday
        assert taken.status_code == 201, taken.text
        assert await stored(sqlite_url) == before + 1
