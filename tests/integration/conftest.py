"""Fixtures for bus tests: a nats-server per test (streams have fixed names), with the
session's users; connections as notify (a service: it declares the streams and runs the
consumer called ``notify``), as the relay (the only one that publishes events) and as the
operator (reads what the streams hold)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared.adapters.bus.streams import declare_streams
from shared.devtools import servers as devservers
from tests.own_postgres import own_postgres  # noqa: F401  (a fixture for outage tests)
from tests.services import connect_as, session_bus


@pytest.fixture
def nats_port() -> int:
    return devservers.free_port()


@pytest.fixture
def nats_dir(tmp_path: Path) -> Path:
    return tmp_path / "jetstream"


@pytest.fixture
def own_nats(nats_port: int, nats_dir: Path) -> Iterator[str]:
    """A nats-server of this test's own, which the test may stop and start again."""
    with devservers.nats_server(nats_dir, nats_port, config=session_bus().config_path) as url:
        yield url


@pytest.fixture
async def nc(own_nats: str) -> AsyncIterator[NATS]:
    """Notify's connection, the streams declared."""
    client = await connect_as(
        own_nats, "notify", max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    await declare_streams(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
async def relay_nc(own_nats: str, nc: NATS) -> AsyncIterator[NATS]:
    """The relay's connection (after ``nc`` declared the streams)."""
    client = await connect_as(own_nats, "relay", max_reconnect_attempts=-1)
    yield client
    await client.close()


@pytest.fixture
async def operator_nc(own_nats: str, nc: NATS) -> AsyncIterator[NATS]:
    """The operator's connection: reads streams, changes nothing."""
    client = await connect_as(own_nats, "operator")
    yield client
    await client.close()
