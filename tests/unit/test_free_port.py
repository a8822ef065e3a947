"""Ports for the local servers are picked below the kernel's ephemeral range, where no
outgoing connection can take them between the pick and the server's bind."""

from __future__ import annotations

import socket

from shared.devtools.servers import free_port, lowest_ephemeral_port


def test_ports_are_below_the_ephemeral_range_free_and_never_given_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(15000 <= port < max(lowest_ephemeral_port(), 16384) for port in ports), ports
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: nothing else holds it


def test_a_port_something_listens_on_is_not_given() -> None:
    held = []
    try:
        for _ in range(50):
            sock = socket.socket()
            port = free_port()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(200)}
    finally:
        for sock in held:
            sock.close()
