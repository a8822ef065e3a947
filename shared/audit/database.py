"""Verifying a live database: its rows and checkpoints through the pure verifier."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.audit.source import stream_rows
from shared.audit.verify import Report, Verifier
from shared.audit.writer import load_checkpoints


async def verify_database(
    engine: AsyncEngine,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Verify every event and checkpoint of the log behind ``engine``."""
    async with engine.connect() as conn:
        checkpoints = await load_checkpoints(conn)
        await conn.rollback()
    verifier = Verifier(checkpoints, keys)
    with collector_paused():
        async for rows in stream_rows(engine):
            verifier.feed(rows)
            if progress is not None:
                progress(len(rows))
    return verifier.finish()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: a verification allocates millions of short
    lived rows without cycles, and each collection would walk every live one (it halves
    the throughput). Reference counting still frees them at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
