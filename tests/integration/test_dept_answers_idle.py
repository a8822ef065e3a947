"""A quiet department-answers consumer keeps its one pull subscription.

nats-py ends an idle fetch with the built-in ``TimeoutError`` (asyncio's) as well as its
own subclass of it; taking the first for a broken subscription tore the subscription down
and made it again on every idle fetch (issue 12: 147 warnings in 4 quiet minutes).
"""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from services.processing.dept import ANSWERS_CONSUMER, AnswerListener
from shared.adapters.bus.streams import DEPT_STREAM
from shared.adapters.eventlog import EventLog
from shared.application.workflow.wiring import case_service
from shared.devtools.waiting import eventually
from shared.domain.workflow.reference import load_reference
from tests.services import connect_as

IDLE_FETCHES = 8
"""Idle fetches (0.5 s each) the listener sits through."""


async def _fetching(nc: NATS) -> bool:
    """The listener's pull request waits on the server (it subscribed and fetches)."""
    try:
        info = await nc.jetstream().consumer_info(DEPT_STREAM, ANSWERS_CONSUMER)
    except nats.js.errors.NotFoundError:
        return False
    return bool(info.num_waiting)


@pytest.mark.parametrize("fetch_timeout", [0.5, 0.003], ids=["usual", "short"])
async def test_a_quiet_answers_consumer_keeps_one_subscription(
    log: EventLog, own_nats: str, nc: NATS, operator_nc: NATS, fetch_timeout: float
) -> None:
    # A short fetch ends in nats-py's paths that raise asyncio's TimeoutError.
    processing = await connect_as(own_nats, "processing")
    service = case_service(log, load_reference())
    listener = AnswerListener(service, processing, fetch_timeout=fetch_timeout)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(listener.run(stop))
        await eventually(lambda: _fetching(operator_nc), what="the listener to fetch", timeout=30)
        loop = asyncio.get_running_loop()
        subscribed = processing._sid
        # Several idle fetches (a loaded machine makes them fewer, never a failure more).
        started = loop.time()
        while loop.time() - started < IDLE_FETCHES * 0.5:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)
    await processing.close()
    warnings = [entry for entry in logs if entry["log_level"] in ("warning", "error")]
    assert warnings == []
    assert processing._sid == subscribed, "the subscription was made again"
