"""Ports for the local servers are picked below the kernel's ephemeral range, where no
outgoing connection can take them between the pick and the server's bind."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

import pytest

from shared.devtools import servers
from shared.devtools.servers import RANDOM_PORTS_FROM, free_port, lowest_ephemeral_port


@pytest.fixture(autouse=True)
def fresh_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "_PICKED", set())


def test_ports_are_below_the_ephemeral_range_free_and_never_given_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if lowest_ephemeral_port() > RANDOM_PORTS_FROM + 1000:
        assert all(RANDOM_PORTS_FROM <= p < lowest_ephemeral_port() for p in ports), ports
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: nothing else holds it


@pytest.fixture
def listening() -> Iterator[int]:
    """A port below the ephemeral range that a server of this test listens on."""
    sock = socket.socket()
    for port in range(RANDOM_PORTS_FROM + 500, RANDOM_PORTS_FROM + 900):
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    sock.listen()
    yield int(sock.getsockname()[1])
    sock.close()


def test_a_random_pick_that_something_listens_on_is_skipped(
    listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks = iter([listening - RANDOM_PORTS_FROM, 7, 8])
    monkeypatch.setattr(secrets, "randbelow", lambda _n: next(picks))
    monkeypatch.setattr(servers, "lowest_ephemeral_port", lambda: 32768)
    port = free_port()
    assert port != listening
    assert port in (RANDOM_PORTS_FROM + 7, RANDOM_PORTS_FROM + 8)


def test_a_wide_ephemeral_range_leaves_the_pick_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(servers, "lowest_ephemeral_port", lambda: 1024)
    monkeypatch.setattr(secrets, "randbelow", lambda _n: pytest.fail("picked at random"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
