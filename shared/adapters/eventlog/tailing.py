"""Tailing the log: rounds of reading what was committed, woken by commits.

The relay and the projection runners both follow the log this way: a round reads and
handles the next batch; a full batch starts the next round at once; otherwise the loop
waits for a commit (in this process: the log's append hook; in another process: LISTEN on
PostgreSQL, or a wake-up handed in from the bus) or the poll interval. A commit that was
signalled but not yet visible (an older transaction still holds the read horizon back)
is looked for again soon — 10 ms, doubling — rather than at the next poll. Woken again
within :data:`LINGER` of the last round's start, the loop waits out the rest of it: under
load, commits arrive every millisecond or two, and a round for each read and wrote a
handful of events at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

FIRST_RETRY = 0.01
"""Seconds before looking again for a commit that was signalled but not found."""
LINGER = 0.005
"""Seconds between the starts of two rounds woken by commits, at least: the commits of
that while are handled in one round."""


async def tail(
    round_: Callable[[], Awaitable[int]],
    *,
    engine: AsyncEngine,
    wakeup: asyncio.Event,
    stop: asyncio.Event,
    batch_size: int,
    poll_interval: float,
    leading: Callable[[], bool],
    failed: Callable[[], None],
    linger: float = LINGER,
) -> None:
    """Run ``round_`` (it answers how many events it handled) until ``stop`` is set.

    ``leading`` says whether this process writes (a stand-by finding nothing is not a
    sign of a held-back commit); ``failed`` is called inside the ``except`` of a round
    that raised (to log it), after which the loop waits a poll interval and goes on.
    """
    retry: float | None = None
    loop = asyncio.get_running_loop()
    began = -linger
    handled = 0
    async with listen_for_commits(engine, wakeup.set):
        while not stop.is_set():
            woken = wakeup.is_set()
            behind = handled >= batch_size  # a backlog: no waiting
            if woken and not behind and (rest := began + linger - loop.time()) > 0:
                await asyncio.sleep(rest)  # the commits of the next few ms in this round too
            # Cleared before the round: a commit signalled during the round (after our
            # read) starts another round at once instead of waiting for the next poll.
            wakeup.clear()
            began = loop.time()
            try:
                handled = await round_()
            except Exception:
                failed()
                handled = 0
                await asyncio.sleep(poll_interval)
            if handled >= batch_size:
                continue
            if handled == 0 and leading() and (woken or retry is not None):
                retry = FIRST_RETRY if woken or retry is None else retry * 2
                if retry >= poll_interval:
                    retry = None
            else:
                retry = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(wakeup, stop), retry or poll_interval)


async def _either(wakeup: asyncio.Event, stop: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@contextlib.asynccontextmanager
async def listen_for_commits(
    engine: AsyncEngine, on_commit: Callable[[], None]
) -> AsyncIterator[None]:
    """While open, call ``on_commit`` whenever any process commits events (PostgreSQL's
    LISTEN on ``caseflow_events``, notified by a statement trigger); a no-op on SQLite."""
    if engine.dialect.name != "postgresql":
        yield
        return
    conn = await engine.connect()
    try:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None

        def _notified(*_: object) -> None:
            on_commit()

        await driver.add_listener("caseflow_events", _notified)
        yield
        with contextlib.suppress(Exception):
            await driver.remove_listener("caseflow_events", _notified)
    finally:
        await conn.close()
