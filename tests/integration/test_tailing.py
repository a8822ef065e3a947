"""The tailing loop gathers the commits of a few milliseconds into one round, and catches
up with a backlog without waiting."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.eventlog.tailing import tail


async def _run(engine: AsyncEngine, *, linger: float, batch: int, handles: int) -> int:
    """Rounds that ``tail`` ran while commits were signalled every millisecond for a
    quarter of a second (each round answering ``handles`` events)."""
    wakeup, stop = asyncio.Event(), asyncio.Event()
    rounds = 0

    async def round_() -> int:
        nonlocal rounds
        rounds += 1
        await asyncio.sleep(0)  # a real round waits for the database
        return handles

    async def commits() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.25
        while loop.time() < end:
            wakeup.set()
            await asyncio.sleep(0.001)
        stop.set()
        wakeup.set()

    await asyncio.gather(
        tail(
            round_,
            engine=engine,
            wakeup=wakeup,
            stop=stop,
            batch_size=batch,
            poll_interval=1.0,
            leading=lambda: True,
            failed=lambda: None,
            linger=linger,
        ),
        commits(),
    )
    return rounds


async def test_commits_close_together_are_handled_in_one_round(engine: AsyncEngine) -> None:
    # a round at most every 50 ms: at most 6 in 0.25 s (and the one the stop wakes)
    gathered = await _run(engine, linger=0.05, batch=100, handles=3)
    assert 2 <= gathered <= 7, gathered
    # without lingering, a round for nearly every commit
    assert await _run(engine, linger=0.0, batch=100, handles=3) > 3 * gathered


async def test_a_backlog_is_read_without_lingering(engine: AsyncEngine) -> None:
    # every round a full batch: the next one at once, however long the linger
    assert await _run(engine, linger=0.05, batch=100, handles=100) > 20
