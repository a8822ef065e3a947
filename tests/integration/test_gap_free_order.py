"""On PostgreSQL, concurrent writers and a tailing reader: nothing skipped, nothing twice."""

from __future__ import annotations

import asyncio
import random
import uuid

from shared.adapters.db import create_engine
from shared.adapters.eventlog import START, EventLog, LogCursor, append_in
from shared.domain.events import NewEvent

WRITERS = 12
APPENDS_PER_WRITER = 40


async def test_tailing_reader_sees_every_event_exactly_once(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=WRITERS + 2)
    log = EventLog(engine)
    written: set[uuid.UUID] = set()
    done = asyncio.Event()

    async def writer(n: int) -> None:
        rng = random.Random(n)
        for _ in range(APPENDS_PER_WRITER):
            events = [NewEvent(event_type="CaseReceived") for _ in range(rng.randint(1, 3))]
            # Hold some transactions open so that later positions commit first.
            async with log.writer.begin() as conn:
                await append_in(conn, uuid.uuid4(), 0, events, case_kind="pension")
                await asyncio.sleep(rng.random() * 0.01)
            written.update(e.event_id for e in events)

    async def reader() -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        cursor = START
        while True:
            finished = done.is_set()
            page = await log.read_all(cursor, limit=50)
            seen.extend(e.event_id for e in page)
            if page:
                cursor = LogCursor.after(page[-1])
            elif finished:
                return seen
            else:
                await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    done.set()
    seen = await reading
    await engine.dispose()

    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == written, f"{len(written - set(seen))} events were skipped"
