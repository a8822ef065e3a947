"""Reading what the bus holds as the operator does: stream messages by sequence.

The operator's credential may inspect streams and read stored events and dead letters
(``$JS.API.STREAM.MSG.GET``), but create no consumer; tests read the bus the same way."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import RawStreamMsg


async def stored_messages(
    operator: NATS, stream: str, count: int, *, subject: str | None = None, timeout: float = 10.0
) -> list[RawStreamMsg]:
    """The first ``count`` messages of ``stream`` (on ``subject``, if given), once it holds
    that many; AssertionError if it does not in time."""
    js = operator.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    found: list[RawStreamMsg] = []
    seq = 0
    while len(found) < count:
        info = await js.stream_info(stream)
        while seq < info.state.last_seq and len(found) < count:
            seq += 1
            try:
                msg = await js.get_msg(stream, seq)
            except Exception:
                continue
            if subject is None or msg.subject == subject:
                found.append(msg)
        if len(found) < count:
            assert asyncio.get_running_loop().time() < deadline, (
                f"{stream} holds {len(found)} of {count} messages"
            )
            await asyncio.sleep(0.05)
    return found


def headers(msg: RawStreamMsg) -> dict[str, Any]:
    """A stored message's headers (empty if it has none)."""
    return dict(msg.headers or {})


def body(msg: RawStreamMsg) -> bytes:
    """A stored message's body."""
    return msg.data or b""
