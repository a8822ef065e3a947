"""Delivery channels, each behind :class:`Channel`."""

from __future__ import annotations

from typing import Protocol

from services.notify.model import ChannelName, Outgoing


class Channel(Protocol):
    """Delivers one message to one recipient, once per call.

    ``send`` either returns (delivered: the receiver accepted it; the return value is the
    receiver's own message id, if it gave one) or raises
    :class:`~services.notify.model.DeliveryError` (retry later) or
    :class:`~services.notify.model.PermanentDeliveryError` (do not retry). Every attempt
    carries ``message.delivery_id`` as the idempotency key the receiver sees. The caller
    bounds each call with a timeout and a per-channel concurrency limit; a channel still
    sets its own connect and read timeouts.
    """

    name: ChannelName

    async def send(self, message: Outgoing) -> str | None:
        """Deliver or raise."""
        ...

    async def aclose(self) -> None:
        """Release connections (HTTP clients)."""
        ...
