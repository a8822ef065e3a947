"""Only the relay publishes events, and only a process holding the relay's seed runs one.

Intake alone, first without the relay's seed: it takes a case (the log has it) but nothing
reaches the event stream, and it says why; a second intake with the seed relays it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx

from shared.adapters.bus.credentials import new_seed
from shared.adapters.bus.streams import EVENTS_STREAM
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.devtools.waiting import exited, wait_until
from tests.services import (
    CLERK,
    VALID_APPLICATION,
    bus_server,
    connect_as,
    seed_delegations,
    service_env,
    start_process,
    wait_ready,
)


async def events_on_the_bus(url: str) -> int:
    operator = await connect_as(url, "operator")
    try:
        info = await operator.jetstream().stream_info(
            EVENTS_STREAM, subjects_filter="caseflow.events.application.>"
        )
        return sum((info.state.subjects or {}).values())
    finally:
        await operator.close()


def test_a_process_without_the_relay_seed_relays_nothing(sqlite_url: str, tmp_path: Path) -> None:
    seed_delegations(sqlite_url)
    with bus_server(tmp_path) as bus:
        port = devservers.free_port()
        env = service_env("intake", sqlite_url, bus.url, port, NATS_RELAY_SEED_FILE="")
        argv = [sys.executable, "-m", "shared.cli.main", "serve", "intake"]
        intake = start_process("intake", argv, env, port, tmp_path)
        try:
            wait_ready(intake)
            response = httpcalls.post(
                f"{intake.base_url}/cases",
                json=VALID_APPLICATION,
                headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            time.sleep(2.5)  # more than two of a relay's polls
            assert asyncio.run(events_on_the_bus(bus.url)) == 0
            assert "this process relays nothing" in intake.logs()
        finally:
            intake.terminate()

        port = devservers.free_port()
        env = service_env("intake", sqlite_url, bus.url, port)
        relaying = start_process("intake-relay", argv, env, port, tmp_path)
        try:
            wait_ready(relaying)
            wait_until(  # CaseReceived, CaseAccepted
                lambda: asyncio.run(events_on_the_bus(bus.url)) >= 2,
                what="the two events relayed to the bus",
                timeout=20,
                interval=0.2,
                detail=lambda: relaying.logs()[-2000:],
            )
        finally:
            relaying.terminate()


GRACE = 60.0
"""The service's shutdown grace in the test of a refused seed."""


def test_a_service_with_a_seed_the_server_does_not_know_is_not_ready(
    sqlite_url: str, nats_url: str, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger.nk"
    stranger.write_text(new_seed() + "\n", encoding="ascii")
    port = devservers.free_port()
    # A long grace: a service that is still connecting has nothing in flight and must
    # stop at once, not wait out its grace (it did, 10 s by default).
    env = service_env(
        "intake",
        sqlite_url,
        nats_url,
        port,
        NATS_SEED_FILE=str(stranger),
        SHUTDOWN_GRACE_SECONDS=str(GRACE),
    )
    argv = [sys.executable, "-m", "shared.cli.main", "serve", "intake"]
    intake = start_process("intake", argv, env, port, tmp_path)
    stopped = False
    try:

        def refused() -> httpx.Response | None:
            ready = httpcalls.get(f"{intake.base_url}/readyz", timeout=2)
            violation = "authorization violation" in ready.json()["checks"]["nats"].lower()
            return ready if violation else None

        ready = wait_until(
            refused,
            what="/readyz to tell of the server's refusal",
            timeout=30,
            interval=0.2,
            ignoring=(httpx.HTTPError,),
            give_up=exited(intake.proc, "intake"),
            detail=lambda: intake.logs()[-2000:],
        )
        nats = ready.json()["checks"]["nats"]
        assert ready.status_code == 503
        assert nats.startswith("unreachable: intake:"), nats
        # uvicorn raises SIGTERM again once it has shut down gracefully.
        stopped_with = intake.terminate(timeout=GRACE / 2)
        assert stopped_with in (0, -signal.SIGTERM), intake.logs()[-2000:]
        stopped = True
    finally:
        if not stopped:
            intake.terminate()
