"""Delivery channels. The log channel writes the notice to the service log (real SMTP,
SMS and webhook channels come with the notifications issue)."""

from __future__ import annotations

from typing import Protocol

import structlog

from services.notify.messages import Message

log = structlog.get_logger("caseflow.notify.channel")


class Channel(Protocol):
    """Delivers one message to one recipient."""

    name: str

    async def deliver(self, recipient: str, message: Message) -> None:
        """Deliver or raise."""


class LogChannel:
    """Writes the notice as a log line (personal data is masked by the log pipeline)."""

    name = "log"

    async def deliver(self, recipient: str, message: Message) -> None:
        log.info(
            "notice delivered",
            channel=self.name,
            recipient=recipient,
            subject=message.subject,
            body=message.body,
        )
