"""Connecting to caseflow's NATS as one of its users: an NKEY seed and the inbox prefix
that user's permissions allow (``shared.adapters.bus.access``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from shared.adapters.bus.access import inbox_prefix

SCHEMES = ("nats://", "tls://")


def server_list(urls: str) -> list[str]:
    """The servers of ``urls``: one URL, or several separated by commas (the nodes of a
    cluster, ``nats://n1:4222,nats://n2:4222``). ValueError on an empty entry or a URL
    that is not ``nats://`` or ``tls://``."""
    servers = [url.strip() for url in urls.split(",")]
    for url in servers:
        if not url.startswith(SCHEMES):
            raise ValueError(f"{url!r}: each server must start with nats:// or tls://")
    return servers


async def connect(url: str | Sequence[str], *, user: str, seed_file: Path, **options: Any) -> NATS:
    """Connect as ``user`` (``intake``, ``relay``, ``operator``…), signing the server's
    challenge with the seed in ``seed_file``; replies arrive below ``_INBOX.<user>``.
    ``url`` is one server, several separated by commas, or a list: nats-py tries them in
    turn and, when the one it is on goes away, reconnects to another (and to the nodes
    the cluster tells it of). ``options`` go to :func:`nats.connect` (name, reconnect
    settings, callbacks)."""
    servers = server_list(url) if isinstance(url, str) else list(url)
    return await nats.connect(
        servers, nkeys_seed=str(seed_file), inbox_prefix=inbox_prefix(user), **options
    )
