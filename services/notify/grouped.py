"""Group commit for the dispatcher: the database work that many deliveries do at about the
same moment (counting an attempt, recording a send, reading a subscription) goes to the
database as one batch, one transaction.

A delivery submits its item and waits; one task at a time runs what was submitted
meanwhile as a batch, and what is submitted while a batch runs goes into the next. On
SQLite and on PostgreSQL with ``synchronous_commit`` on, every commit waits for the disk:
a batch of fifty costs one such wait instead of fifty. A batch is all or nothing: if it
fails (a conflict in one delivery's case, the database away), one line says so and each
submitter is told to do its work alone, with the retries and log lines it has for that.
An item whose submitter stopped waiting (cancelled) is left out of the batch.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from shared.adapters.outages import unavailable_dependency

log = structlog.get_logger("caseflow.notify.grouped")

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Grouped"]


class Grouped(Generic[T, R]):
    """Runs ``write(items)`` (one result per item, in order) for the items submitted while
    the previous batch ran, at most ``limit`` at a time, one batch at a time."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, name: str, limit: int = 100
    ) -> None:
        self._write = write
        self._name = name
        self._limit = limit
        self._queued: list[tuple[T, asyncio.Future[tuple[bool, R | None]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> tuple[bool, R | None]:
        """Run ``item`` in the next batch: ``(True, its result)``, or ``(False, None)`` if
        that batch failed (or :meth:`stop` came first) and the caller is to do it alone."""
        future: asyncio.Future[tuple[bool, R | None]] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        if self._writer is None or self._writer.done():
            # A context of its own: not the first submitter's (its bound log fields).
            self._writer = asyncio.create_task(
                self._write_queued(), name=self._name, context=contextvars.Context()
            )
        return await future

    async def stop(self) -> None:
        """Cancel the batch running (its transaction rolls back, unless it was committing)
        and tell its submitters and those queued to do their work alone. A later
        :meth:`submit` starts batches again."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        # A writer cancelled before its first step never ran its own ``finally``.
        _settle(self._queued, None)
        self._queued.clear()

    async def _write_queued(self) -> None:
        batch: list[tuple[T, asyncio.Future[tuple[bool, R | None]]]] = []
        try:
            while self._queued:
                batch = [(item, f) for item, f in self._queued[: self._limit] if not f.done()]
                del self._queued[: self._limit]
                if not batch:
                    continue
                try:
                    results = await self._write([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                except Exception as err:
                    down = unavailable_dependency(err)
                    log.info(
                        "a batch failed; each of its items goes alone",
                        batch=self._name,
                        items=len(batch),
                        error=type(err).__name__ if down is None else f"{down[0]} unavailable",
                    )
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
