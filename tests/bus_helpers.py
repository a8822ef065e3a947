"""Reading what the bus holds as the operator does: stream messages by sequence.

The operator's credential may inspect streams and read stored events and dead letters
(``$JS.API.STREAM.MSG.GET``), but create no consumer; tests read the bus the same way."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import RawStreamMsg

from shared.devtools.waiting import eventually


async def stored_messages(
    operator: NATS, stream: str, count: int, *, subject: str | None = None, timeout: float = 10.0
) -> list[RawStreamMsg]:
    """The first ``count`` messages of ``stream`` (on ``subject``, if given), once it holds
    that many; AssertionError if it does not in time."""
    js = operator.jetstream()
    found: list[RawStreamMsg] = []
    seq = 0

    async def collected() -> bool:
        """Reads the messages added since the last try; whether there are enough now."""
        nonlocal seq
        info = await js.stream_info(stream)
        while seq < info.state.last_seq and len(found) < count:
            seq += 1
            try:
                msg = await js.get_msg(stream, seq)
            except Exception:
                continue
            if subject is None or msg.subject == subject:
                found.append(msg)
        return len(found) >= count

    await eventually(
        collected,
        what=f"{count} messages in {stream}" + (f" on {subject}" if subject else ""),
        timeout=timeout,
        detail=lambda: f"{stream} holds {len(found)} of {count} messages",
    )
    return found


def headers(msg: RawStreamMsg) -> dict[str, Any]:
    """A stored message's headers (empty if it has none)."""
    return dict(msg.headers or {})


def body(msg: RawStreamMsg) -> bytes:
    """A stored message's body."""
    return msg.data or b""
