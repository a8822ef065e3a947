"""Notify's handlers: tell the applicant, then record ``NotificationSent``."""

from __future__ import annotations

import hashlib
import uuid

from services.notify.channels.log import Channel, LogChannel
from services.notify.messages import render
from shared.bus.consumer import ConsumerSpec, UnitOfWork
from shared.events import NewEvent, StoredEvent
from shared.identity import mask_phone
from shared.messages import CaseReceived, NotificationSent

_NAMESPACE = uuid.UUID("a3d2b1c0-5e4f-4a3b-9c8d-7e6f5a4b3c2d")


def make_handler(channel: Channel) -> ConsumerSpec:
    """The notify consumer, delivering through ``channel``."""

    async def on_case_decided(event: StoredEvent, uow: UnitOfWork) -> None:
        history = await uow.read_case(event.case_id)
        event_id = uuid.uuid5(_NAMESPACE, f"sent:{event.event_id}:{channel.name}")
        if any(e.event_id == event_id for e in history):
            return
        applicant = CaseReceived.model_validate(history[0].payload).applicant
        message = render(event.event_type, event.payload, applicant)
        await channel.deliver(applicant.phone, message)
        sent = NotificationSent(
            channel=channel.name,
            recipient=mask_phone(applicant.phone),
            language=message.language,
            subject=message.subject,
            body_sha256=hashlib.sha256(message.body.encode()).hexdigest(),
            about_event_type=event.event_type,
        )
        await uow.append(
            event.case_id,
            history[-1].version,
            [
                NewEvent(
                    event_id=event_id,
                    event_type="NotificationSent",
                    correlation_id=event.correlation_id,
                    causation_id=str(event.event_id),
                    payload=sent.model_dump(),
                )
            ],
            case_kind=event.case_kind,
        )

    return ConsumerSpec(
        name="notify",
        subjects=(
            "caseflow.events.application.CaseAccepted",
            "caseflow.events.application.CorrectionRequested",
        ),
        handler=on_case_decided,
    )


CONSUMERS = (make_handler(LogChannel()),)
