"""What waits on the bus, for the operator's gauges (issue 16): each durable consumer's
messages not yet delivered or not yet acknowledged, and each consumer's dead letters."""

from __future__ import annotations

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.adapters.bus.durables import CONSUMERS
from shared.adapters.bus.streams import DLQ_STREAM, DLQ_SUBJECTS, dlq_subject


async def consumer_pending(js: JetStreamContext) -> dict[str, int]:
    """Per durable consumer of caseflow's: pending plus unacknowledged messages. A consumer
    not created yet (its service never started) is left out."""
    found: dict[str, int] = {}
    for consumer in CONSUMERS:
        try:
            info = await js.consumer_info(consumer.stream, consumer.name)
        except NotFoundError:  # not created yet (its service never started): no figure
            continue
        found[consumer.name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return found


async def dead_letters(js: JetStreamContext) -> dict[str, int]:
    """Per consumer of caseflow's, the messages in the dead-letter stream."""
    info = await js.stream_info(DLQ_STREAM, subjects_filter=DLQ_SUBJECTS)
    by_subject = info.state.subjects or {}
    return {c.name: int(by_subject.get(dlq_subject(c.name), 0)) for c in CONSUMERS}
