"""What notify plans and sends: recipients, rendered notices, outgoing messages. Pure.

A *delivery* is one (event, recipient, channel). Its id is derived from those three, so
planning the same event twice (NATS redelivers, notify restarts) plans the same
delivery, and the id is the idempotency key every channel hands to the receiver: the
SMTP ``Message-ID``, the SMS gateway's request key, the webhook's ``webhook-id``.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Literal

ChannelName = Literal["email", "sms", "webhook"]
CHANNELS: tuple[ChannelName, ...] = ("email", "sms", "webhook")

_NAMESPACE = uuid.UUID("6f1c2a8e-3d4b-4e5f-9a7b-1c2d3e4f5a6b")


@dataclasses.dataclass(frozen=True, slots=True)
class Recipient:
    """Who is told, and where."""

    audience: str
    """``applicant``, ``staff:<org>:<role>`` or ``webhook:<subscription id>``."""
    address: str
    """Email address, mobile number or URL: personal data, never logged."""
    masked: str
    """What the record and the logs show: ``w***@example.cn``, ``138****5678``, a URL's host."""
    language: str = "zh-CN"


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """A rendered notice. The subject never carries personal data."""

    subject: str
    body: str
    language: str = "zh-CN"


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedNotice:
    """What the rules decided for one event: tell this recipient this over this channel."""

    channel: ChannelName
    recipient: Recipient
    template: str
    """The template's key, e.g. ``case_accepted`` (file ``case_accepted.email.zh-CN.j2``)."""
    notice: Notice


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to one recipient over one channel: what a channel sends."""

    delivery_id: uuid.UUID
    """The idempotency key: the same on every attempt and after a restart."""
    channel: ChannelName
    recipient: Recipient
    event_type: str
    notice: Notice | None = None
    """Email and SMS: the rendered text."""
    body: bytes | None = None
    """Webhook: the JSON body to post (and sign)."""
    secret: str | None = None
    """Webhook: the subscription's signing secret."""
    attempt: int = 1


class DeliveryError(Exception):
    """The channel could not deliver now; trying again later may work (timeouts, 5xx,
    refused connections, 4xx SMTP replies).

    The message is what the delivery's record shows (station heads read it: for a
    webhook, the class of failure only); ``detail`` is for the operator's log alone."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class PermanentDeliveryError(DeliveryError):
    """Trying again can't help (the receiver refused the address or the request: 4xx HTTP
    other than 408/429, 5xx SMTP replies)."""


class ReceiverGone(PermanentDeliveryError):
    """A webhook receiver answered 410 Gone: its subscription is paused until resumed."""


def delivery_id(event_id: uuid.UUID, channel: str, recipient: Recipient) -> uuid.UUID:
    """The delivery's id, the same however often the event is planned."""
    return uuid.uuid5(_NAMESPACE, f"{event_id}:{channel}:{recipient.audience}:{recipient.address}")
