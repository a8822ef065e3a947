"""Fixtures for bus tests: a nats-server per test (streams have fixed names)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from shared import devservers
from shared.bus.streams import declare_streams


@pytest.fixture
def nats_port() -> int:
    return devservers.free_port()


@pytest.fixture
def nats_dir(tmp_path: Path) -> Path:
    return tmp_path / "jetstream"


@pytest.fixture
def own_nats(nats_port: int, nats_dir: Path) -> Iterator[str]:
    """A nats-server of this test's own, which the test may stop and start again."""
    with devservers.nats_server(nats_dir, nats_port) as url:
        yield url


@pytest.fixture
async def nc(own_nats: str) -> AsyncIterator[NATS]:
    client = await nats.connect(own_nats, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await declare_streams(client.jetstream())
    yield client
    await client.close()
