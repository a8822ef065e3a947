"""Dead letters: listing them and asking for them to be handled again.

A consumer moves a message it can't handle to ``caseflow.dlq.<consumer>`` in
``CASEFLOW_DLQ`` with the reason (``shared.adapters.bus.consumer``). This module reads them as the
operator does, and re-drives them: a request naming a dead letter by its sequence goes
to ``caseflow.redrive.<consumer>``; the consumer reads that dead letter, handles the
event it names as the log holds it (whatever its age) and deletes the dead letter once
handled. A request is only a pointer: the letter itself comes from the dead-letter
stream, which only services write, so re-driving adds nothing anybody could forge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

import orjson
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.adapters.bus.durables import CONSUMERS
from shared.adapters.bus.headers import (
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
    MSG_ID_HEADER,
)
from shared.adapters.bus.streams import DLQ_STREAM, DLQ_SUBJECTS, redrive_subject


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead letter: where it was, who gave up on it and why, which event it names
    (ids only: the message is a masked view, and nothing personal is shown)."""

    sequence: int
    consumer: str
    subject: str
    reason: str
    dead_since: datetime | None
    event_id: str | None
    case_id: str | None

    @property
    def redrivable(self) -> bool:
        """Whether its consumer handles dead letters again."""
        return any(c.name == self.consumer and c.redrive for c in CONSUMERS)

    def as_json(self) -> dict[str, object]:
        fields = dataclasses.asdict(self)
        fields["dead_since"] = self.dead_since.isoformat() if self.dead_since else None
        fields["redrivable"] = self.redrivable
        return fields


def _ids(data: bytes | None) -> tuple[str | None, str | None]:
    """The event and case ids a message names, if it names them."""
    try:
        envelope = orjson.loads(data or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(envelope, dict):
        return None, None
    event_id, case_id = envelope.get("event_id"), envelope.get("case_id")
    return (
        event_id if isinstance(event_id, str) else None,
        case_id if isinstance(case_id, str) else None,
    )


async def dead_letters(js: JetStreamContext, consumer: str | None = None) -> list[DeadLetter]:
    """Every dead letter in ``CASEFLOW_DLQ`` (of ``consumer``, if given), oldest first."""
    subject = DLQ_SUBJECTS if consumer is None else f"caseflow.dlq.{consumer}"
    found: list[DeadLetter] = []
    sequence = 1
    while True:
        try:
            msg = await js.get_msg(DLQ_STREAM, sequence, subject=subject, next=True)
        except NotFoundError:
            return found
        headers = msg.headers or {}
        event_id, case_id = _ids(msg.data)
        found.append(
            DeadLetter(
                sequence=msg.seq or sequence,
                consumer=headers.get(DLQ_CONSUMER_HEADER)
                or (msg.subject or "").removeprefix("caseflow.dlq."),
                subject=headers.get(DLQ_SUBJECT_HEADER, ""),
                reason=headers.get(DLQ_REASON_HEADER, ""),
                dead_since=msg.time,
                event_id=event_id,
                case_id=case_id,
            )
        )
        sequence = (msg.seq or sequence) + 1


@dataclasses.dataclass(frozen=True)
class Asked:
    """What a redrive asked for."""

    asked: list[DeadLetter]
    """Letters whose consumers were asked to handle them again."""
    pending: list[DeadLetter]
    """Letters asked for already within JetStream's duplicate window (10 minutes): that
    request stands; this one was dropped as its duplicate."""


async def redrive(js: JetStreamContext, letters: Sequence[DeadLetter]) -> Asked:
    """Ask each letter's consumer to handle it again (letters whose consumer handles dead
    letters again; the others are left out). Asking twice within JetStream's duplicate
    window is asking once."""
    asked: list[DeadLetter] = []
    pending: list[DeadLetter] = []
    for letter in letters:
        if not letter.redrivable:
            continue
        ack = await js.publish(
            redrive_subject(letter.consumer),
            orjson.dumps({"dead_letter": letter.sequence}),
            headers={MSG_ID_HEADER: f"redrive:{letter.sequence}"},
        )
        (pending if ack.duplicate else asked).append(letter)
    return Asked(asked, pending)
