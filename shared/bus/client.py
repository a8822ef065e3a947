"""Connecting to caseflow's NATS as one of its users: an NKEY seed and the inbox prefix
that user's permissions allow (``shared.bus.access``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from shared.bus.access import inbox_prefix


async def connect(url: str, *, user: str, seed_file: Path, **options: Any) -> NATS:
    """Connect as ``user`` (``intake``, ``relay``, ``operator``…), signing the server's
    challenge with the seed in ``seed_file``; replies arrive below ``_INBOX.<user>``.
    ``options`` go to :func:`nats.connect` (name, reconnect settings, callbacks)."""
    return await nats.connect(
        url, nkeys_seed=str(seed_file), inbox_prefix=inbox_prefix(user), **options
    )
