"""Group commit for the dispatcher: the writes that many deliveries make at about the same
moment (counting an attempt, recording a send) go to the database in one transaction.

A delivery submits its item and waits; one task at a time writes what was submitted
meanwhile as a batch, and what is submitted while a batch commits goes into the next. On
SQLite and on PostgreSQL with ``synchronous_commit`` on, every commit waits for the disk:
a batch of fifty costs one such wait instead of fifty. The batch is all or nothing: if
it fails, each submitter is told so and does its write alone, with its own retries and
log lines (a conflict in one delivery's case, the database away).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Grouped"]


class Grouped(Generic[T, R]):
    """Runs ``write(items)`` (one result per item, in order) for the items submitted while
    the previous batch was written, at most ``limit`` at a time, one batch at a time."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, name: str, limit: int = 100
    ) -> None:
        self._write = write
        self._name = name
        self._limit = limit
        self._queued: list[tuple[T, asyncio.Future[tuple[bool, R | None]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> tuple[bool, R | None]:
        """Write ``item`` in the next batch: ``(True, its result)``, or ``(False, None)`` if
        that batch failed (or the writer was stopped) and the caller is to write it alone."""
        future: asyncio.Future[tuple[bool, R | None]] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name=self._name)
        return await future

    async def stop(self) -> None:
        """Stop writing: a batch being written is rolled back; its submitters and those
        still queued are told to write alone."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_queued(self) -> None:
        batch: list[tuple[T, asyncio.Future[tuple[bool, R | None]]]] = []
        try:
            while self._queued:
                batch = self._queued[: self._limit]
                del self._queued[: self._limit]
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception:
                    _settle(batch, None)
                else:
                    _settle(batch, results)
                batch = []
        finally:  # cancelled: the submitters go on alone
            _settle(batch, None)
            _settle(self._queued, None)
            self._queued.clear()


def _settle(
    batch: Sequence[tuple[object, asyncio.Future[tuple[bool, R | None]]]],
    results: Sequence[R] | None,
) -> None:
    for index, (_, future) in enumerate(batch):
        if future.done():  # its submitter was cancelled meanwhile
            continue
        future.set_result((False, None) if results is None else (True, results[index]))
