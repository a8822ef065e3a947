"""Worklists that update while open: ``GET /worklist/changes``, server-sent events.

The projection runner (on whichever replica holds its lease) marks a change after each
batch it commits to the read models; this replica then publishes one content-free
message on ``caseflow.internal.worklists.changed`` (at most four a second), and every
processing replica passes it to the pages it streams to, which then read their worklist
again through the API — after the change, so never from a read model behind it. The
message says nothing about whose lists changed: a page reads only what its member may
see, and a station's pages re-reading a little too often costs less than telling the bus
who works where. Without NATS a replica still tells its own pages of its own batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from shared.adapters.bus.streams import WORKLISTS_CHANGED
from shared.web.auth import StaffDep

log = structlog.get_logger()

COALESCE_SECONDS = 0.25
KEEP_ALIVE_SECONDS = 15.0

router = APIRouter(tags=["worklists"])


class WorklistChanges:
    """This replica's open streams, and the runner's changes to tell them of."""

    def __init__(self) -> None:
        self.streams: set[asyncio.Queue[None]] = set()
        self.dirty = asyncio.Event()

    def mark(self) -> None:
        """The read models moved on (the projection runner's callback)."""
        self.dirty.set()
        self.tell_streams()

    def tell_streams(self) -> None:
        for queue in list(self.streams):
            with contextlib.suppress(asyncio.QueueFull):  # one pending is enough
                queue.put_nowait(None)

    async def share(self, nc: NATS, stop: asyncio.Event) -> None:
        """Publish this replica's changes and hear the others' (a runtime worker)."""

        async def heard(_msg: Msg) -> None:
            self.tell_streams()

        await nc.subscribe(WORKLISTS_CHANGED, cb=heard)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), timeout=1.0)
            if not self.dirty.is_set():
                continue
            self.dirty.clear()
            with contextlib.suppress(Exception):  # NATS away: local pages were told already
                await nc.publish(WORKLISTS_CHANGED, b"")
            await asyncio.sleep(COALESCE_SECONDS)

    async def stream(self, request: Request) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self.streams.add(queue)
        try:
            yield b"retry: 5000\n\n"
            while not await request.is_disconnected():
                try:
                    await asyncio.wait_for(queue.get(), timeout=KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield b"event: changed\ndata: {}\n\n"
        finally:
            self.streams.discard(queue)


@router.get(
    "/worklist/changes",
    summary="Server-sent events: your worklist changed (read it again)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def worklist_changes(request: Request, staff: StaffDep) -> StreamingResponse:
    """A stream of ``changed`` events, one (or a few) after each change to the read models
    behind the worklists, and a comment every 15 s to keep proxies from closing it. The
    event carries nothing: read ``GET /worklist`` again."""
    changes: WorklistChanges = request.app.state.worklist_changes
    return StreamingResponse(
        changes.stream(request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
