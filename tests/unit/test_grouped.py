"""Group commit (``services.notify.grouped``): what is submitted while a batch is written
goes into the next batch, each submitter gets its own result, and a failed or stopped
batch tells its submitters to write alone."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from services.notify.grouped import Grouped


class Writes:
    """A write that records each batch and waits until the test lets it finish."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.fail = fail or set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.started.set()
        await self.release.wait()
        if self.fail & set(items):
            raise RuntimeError("the database is away")
        return [item * 10 for item in items]


async def test_items_submitted_during_a_write_go_together_into_the_next() -> None:
    writes = Writes()
    grouped = Grouped(writes, name="test")
    first = asyncio.create_task(grouped.submit(1))
    await writes.started.wait()
    later = [asyncio.create_task(grouped.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    writes.release.set()
    results = await asyncio.gather(first, *later)
    assert writes.batches == [[1], [2, 3, 4]]
    assert results == [(True, 10), (True, 20), (True, 30), (True, 40)]


async def test_a_batch_is_at_most_the_limit() -> None:
    writes = Writes()
    writes.release.set()
    grouped = Grouped(writes, name="test", limit=2)
    results = await asyncio.gather(*(grouped.submit(n) for n in range(5)))
    assert writes.batches == [[0, 1], [2, 3], [4]]
    assert [r for _, r in results] == [0, 10, 20, 30, 40]


async def test_a_failed_batch_tells_its_submitters_and_the_next_is_still_written() -> None:
    writes = Writes(fail={2})
    grouped = Grouped(writes, name="test")
    first = asyncio.create_task(grouped.submit(1))
    await writes.started.wait()
    failing = [asyncio.create_task(grouped.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    writes.release.set()
    assert await first == (True, 10)
    assert await asyncio.gather(*failing) == [(False, None), (False, None)]
    assert await grouped.submit(5) == (True, 50)  # a new writer after the failure
    assert writes.batches == [[1], [2, 3], [5]]


async def test_stopping_tells_the_batch_being_written_and_the_queued_ones() -> None:
    writes = Writes()
    grouped = Grouped(writes, name="test")
    first = asyncio.create_task(grouped.submit(1))
    await writes.started.wait()
    queued = asyncio.create_task(grouped.submit(2))
    await asyncio.sleep(0)
    await grouped.stop()
    assert await first == (False, None)
    assert await queued == (False, None)
    assert writes.batches == [[1]]  # the queued one was never written


async def test_a_cancelled_submitter_leaves_the_others_their_results() -> None:
    writes = Writes()
    grouped = Grouped(writes, name="test")
    first = asyncio.create_task(grouped.submit(1))
    await writes.started.wait()
    gone, stays = asyncio.create_task(grouped.submit(2)), asyncio.create_task(grouped.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    writes.release.set()
    assert await first == (True, 10)
    assert await stays == (True, 30)
    assert gone.cancelled()
    assert writes.batches == [[1], [3]]  # nobody waits for 2 any more: left out


async def test_stopping_before_the_first_batch_starts_tells_the_submitters() -> None:
    writes = Writes()
    writes.release.set()
    grouped = Grouped(writes, name="test")
    waiting = asyncio.create_task(grouped.submit(1))
    await asyncio.sleep(0)  # submitted; the batch task has not had its first step yet
    await grouped.stop()
    assert await asyncio.wait_for(waiting, 5) == (False, None)
    assert writes.batches == []
    assert await grouped.submit(2) == (True, 20)  # and batches start again afterwards
    assert writes.batches == [[2]]


async def test_a_failed_batch_is_said_once_and_a_wrong_count_is_a_failure() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]  # one result missing

    grouped = Grouped(short, name="short")
    with capture_logs() as logs:
        results = await asyncio.gather(grouped.submit(1), grouped.submit(2))
    assert list(results) == [(False, None), (False, None)]
    failed = [e for e in logs if e["event"] == "a batch failed; each of its items goes alone"]
    assert [(e["batch"], e["items"], e["error"]) for e in failed] == [("short", 2, "RuntimeError")]
