"""Webhooks signed as Standard Webhooks sign them (the ``standardwebhooks`` package).

Each POST carries ``webhook-id`` (the delivery id: the same on every attempt, so the
receiver can drop repeats), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed
with the subscription's ``whsec_<base64>`` secret).

Answers: 2xx delivered; 408, 429 and 5xx, timeouts and refused connections are worth
trying again; 410 Gone and every other 4xx, and redirects (not followed: the
subscription names the URL to post to), are not. The URL is personal data (it may name
a person's server): texts name only its host.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from services.notify.model import ChannelName, DeliveryError, Outgoing, PermanentDeliveryError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_RECEIPT_KEYS = ("id", "message_id", "messageId", "receipt_id")
_RECEIPT_HEADERS = ("x-message-id", "x-receipt-id", "x-request-id")


def generate_secret(nbytes: int = 32) -> str:
    """A new subscription secret: ``whsec_`` and ``nbytes`` random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def signature_headers(secret: str, msg_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``at``."""
    timestamp = datetime.fromtimestamp(int(at.timestamp()), UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def _receipt(response: httpx.Response) -> str | None:
    """The receiver's own id for the call, if its answer gives one."""
    for header in _RECEIPT_HEADERS:
        if value := response.headers.get(header):
            return str(value)[:200]
    if "json" in response.headers.get("content-type", ""):
        try:
            data = response.json()
        except ValueError:
            return None
        if isinstance(data, dict):
            for key in _RECEIPT_KEYS:
                value = data.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    return str(value)[:200]
    return None


class WebhookChannel:
    """POSTs each event's JSON body to the subscription's URL, signed."""

    name: ChannelName = "webhook"

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        connect_timeout: float | None = None,
        user_agent: str = "caseflow-notify/1",
    ) -> None:
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout or timeout),
            follow_redirects=False,
            headers={"User-Agent": user_agent},
        )

    async def send(self, message: Outgoing) -> str | None:
        """One signed POST; returns the receiver's id for it, if it gives one."""
        host = message.recipient.masked
        if message.body is None or not message.secret:
            raise PermanentDeliveryError("a webhook needs a body and its subscription's secret")
        try:
            headers = signature_headers(
                message.secret, str(message.delivery_id), message.body, datetime.now(UTC)
            )
        except (binascii.Error, ValueError, EmptyWebhookSecretError) as err:
            raise PermanentDeliveryError(f"unusable webhook secret or body: {err}") from None
        headers["content-type"] = "application/json"
        try:
            response = await self._client.post(
                message.recipient.address, content=message.body, headers=headers
            )
        except httpx.TimeoutException as err:
            raise DeliveryError(
                f"{host}: no answer within {self.timeout:g} s ({type(err).__name__})"
            ) from None
        except httpx.UnsupportedProtocol:
            raise PermanentDeliveryError(f"{host}: not an http(s) URL") from None
        except httpx.TransportError as err:
            raise DeliveryError(f"{host} unreachable: {type(err).__name__}") from None
        except (httpx.InvalidURL, ValueError):
            raise PermanentDeliveryError(f"{host}: not a valid URL") from None
        status = response.status_code
        if 200 <= status < 300:
            return _receipt(response)
        if status in (408, 429) or status >= 500:
            raise DeliveryError(f"{host} answered HTTP {status}")
        if status == 410:
            raise PermanentDeliveryError(f"{host} answered 410 Gone: the endpoint is retired")
        raise PermanentDeliveryError(f"{host} answered HTTP {status}")

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
