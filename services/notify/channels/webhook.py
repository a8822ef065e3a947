"""Webhooks signed as Standard Webhooks sign them (the ``standardwebhooks`` package).

Each POST carries ``webhook-id`` (the delivery id: the same on every attempt, so the
receiver can drop repeats), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed
with the subscription's ``whsec_<base64>`` secret).

The call goes only where the egress policy allows (``services/notify/egress.py``): the
host is resolved once per connection, every address checked, and the connection made to
a checked address (``channels/pinned.py``), with TLS and ``Host`` for the name.
Redirects are not followed (the subscription names the URL to post to). Each call is
bounded: one deadline for all of it, and at most ``max_answer_bytes`` of the answer read.

Answers: 2xx delivered; 408, 429 and 5xx, timeouts, refused connections and failed
lookups are worth trying again; an address not allowed, 3xx, and every other 4xx are
not; 410 Gone is :class:`~services.notify.model.ReceiverGone` (the dispatcher pauses the
subscription). What a station head sees of a failure is its *class* (connection refused,
timed out, TLS error, HTTP 5xx, …), never what the target answered: no body, banner,
header or exact status; the exact status and the exception go to the operator's log as
the error's ``detail``. The URL may name a person's server: texts name only its host.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import functools
import re
import secrets
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime

import httpcore
import httpx
import orjson
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from services.notify.channels.pinned import PinnedBackend
from services.notify.egress import (
    AddressRefused,
    EgressPolicy,
    LookupFailed,
    Resolver,
    TargetInvalid,
    parse_target,
    system_resolver,
)
from services.notify.model import (
    ChannelName,
    DeliveryError,
    Outgoing,
    PermanentDeliveryError,
    ReceiverGone,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_RECEIPT_KEYS = ("id", "message_id", "messageId", "receipt_id")
_RECEIPT_HEADERS = (b"x-message-id", b"x-receipt-id", b"x-request-id")
_RECEIPT = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
"""A receiver's id for the call is kept (and recorded in the case) only if it looks like
an id: a receiver can't write sentences into the case's history."""

# What a station head reads of a failure: its class, in English and Chinese.
NOT_ALLOWED = "address not allowed (目标地址不允许)"
DNS_FAILED = "DNS lookup failed (域名解析失败)"
REFUSED = "connection refused (连接被拒绝)"
UNREACHABLE = "host unreachable (主机不可达)"
NO_CONNECTION = "could not connect (无法连接)"
TIMED_OUT = "timed out (超时)"
TLS_ERROR = "TLS error: the certificate was not accepted or the handshake failed (TLS错误)"
DROPPED = "connection closed before a complete answer (连接中断)"
NOT_HTTP = "the answer was not valid HTTP (应答不是有效的HTTP)"
REDIRECT = "redirect not followed (HTTP 3xx) (不跟随重定向)"
BUSY = "the receiver asked to try later (HTTP 408/429) (接收端繁忙)"
SERVER_ERROR = "HTTP 5xx from the receiver (接收端服务器错误)"
GONE = "HTTP 410 Gone from the receiver: the subscription is paused (接收端已停用，订阅已暂停)"
CLIENT_ERROR = "HTTP 4xx from the receiver: the call was refused (接收端拒绝)"
UNEXPECTED = "unexpected HTTP answer (意外的应答)"
BAD_URL = "not a usable web address (网址无效)"


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


def _id_like(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if _RECEIPT.match(text) else None


def receipt(headers: list[tuple[bytes, bytes]], body: bytes) -> str | None:
    """The receiver's own id for the call, if its answer gives one that looks like one."""
    by_name = {name.lower(): value for name, value in headers}
    for header in _RECEIPT_HEADERS:
        if header in by_name and (found := _id_like(by_name[header].decode("latin-1"))):
            return found
    if b"json" in by_name.get(b"content-type", b""):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(data, dict):
            for key in _RECEIPT_KEYS:
                if found := _id_like(data.get(key)):
                    return found
    return None


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it was raised from, through exception groups too."""
    seen: set[int] = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def connect_failure(err: BaseException) -> str:
    """The class of a failed connection: refused, unreachable, TLS, timed out."""
    causes = list(_causes(err))
    if any(isinstance(c, ssl.SSLError | ssl.CertificateError) for c in causes):
        return TLS_ERROR
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return REFUSED
    if any(isinstance(c, TimeoutError | httpcore.ConnectTimeout) for c in causes):
        return TIMED_OUT
    unreachable = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
    if any(isinstance(c, OSError) and c.errno in unreachable for c in causes):
        return UNREACHABLE
    return NO_CONNECTION


def _status_failure(status: int, host: str) -> DeliveryError:
    detail = f"{host} answered HTTP {status}"
    if 300 <= status < 400:
        return PermanentDeliveryError(f"{host}: {REDIRECT}", detail=detail)
    if status in (408, 429):
        return DeliveryError(f"{host}: {BUSY}", detail=detail)
    if status == 410:
        return ReceiverGone(f"{host}: {GONE}", detail=detail)
    if 400 <= status < 500:
        return PermanentDeliveryError(f"{host}: {CLIENT_ERROR}", detail=detail)
    if 500 <= status < 600:
        return DeliveryError(f"{host}: {SERVER_ERROR}", detail=detail)
    return PermanentDeliveryError(f"{host}: {UNEXPECTED}", detail=detail)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """The certificate authorities httpx trusts, loaded once per process (~25 ms of CPU
    each time): every channel's connection pool may share one context."""
    return httpx.create_ssl_context()


class WebhookChannel:
    """POSTs each event's JSON body to the subscription's URL, signed, where allowed."""

    name: ChannelName = "webhook"

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        connect_timeout: float | None = None,
        user_agent: str = "caseflow-notify/1",
        policy: EgressPolicy | None = None,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        max_answer_bytes: int = 64 * 1024,
        max_connections: int = 100,
    ) -> None:
        self.timeout = timeout
        self.policy = policy or EgressPolicy()
        self.user_agent = user_agent
        self.max_answer_bytes = max_answer_bytes
        connect = connect_timeout or timeout
        self._timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
        # httpcore, not httpx: its network backend is where the address is pinned, and
        # no proxy from the environment can take the connection elsewhere.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or _default_ssl_context(),
            max_connections=max_connections,
            keepalive_expiry=5.0,
            retries=0,
            network_backend=PinnedBackend(self.policy, resolver, lookup_timeout=connect),
        )

    async def send(self, message: Outgoing) -> str | None:
        """One signed POST; returns the receiver's id for it, if it gives one."""
        host = message.recipient.masked
        if message.body is None or not message.secret:
            raise PermanentDeliveryError("a webhook needs a body and its subscription's secret")
        try:
            target = parse_target(message.recipient.address)
        except TargetInvalid as err:
            raise PermanentDeliveryError(f"{host}: {BAD_URL}", detail=str(err)) from None
        try:
            headers = signature_headers(
                message.secret, str(message.delivery_id), message.body, datetime.now(UTC)
            )
        except (binascii.Error, ValueError, EmptyWebhookSecretError) as err:
            raise PermanentDeliveryError(f"unusable webhook secret or body: {err}") from None
        headers["content-type"] = "application/json"
        headers["user-agent"] = self.user_agent
        url = target.url
        request_url = httpcore.URL(
            scheme=url.raw_scheme,
            host=url.raw_host,
            port=url.port,
            target=url.raw_path,
        )
        try:
            async with asyncio.timeout(self.timeout):
                status, answer_headers, body = await self._post(request_url, headers, message)
        except AddressRefused as err:
            raise PermanentDeliveryError(f"{host}: {NOT_ALLOWED}", detail=err.detail) from None
        except LookupFailed as err:
            raise DeliveryError(f"{host}: {DNS_FAILED}", detail=f"lookup: {err}") from None
        except (TimeoutError, httpcore.TimeoutException) as err:
            raise DeliveryError(f"{host}: {TIMED_OUT}", detail=type(err).__name__) from None
        except httpcore.ConnectError as err:
            kind = connect_failure(err)
            raise DeliveryError(f"{host}: {kind}", detail=_detail(err)) from None
        except (httpcore.RemoteProtocolError, httpcore.LocalProtocolError) as err:
            # h11's and httpcore's own words tell a cut-off answer from one that is no
            # HTTP; their text may quote the receiver's bytes, so only the class goes on.
            words = str(err)
            kind = DROPPED if "closed" in words or "disconnected" in words else NOT_HTTP
            raise DeliveryError(f"{host}: {kind}", detail=type(err).__name__) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as err:
            raise DeliveryError(f"{host}: {DROPPED}", detail=type(err).__name__) from None
        except httpcore.UnsupportedProtocol:
            raise PermanentDeliveryError(f"{host}: {BAD_URL}") from None
        if 200 <= status < 300:
            return receipt(answer_headers, body)
        raise _status_failure(status, host)

    async def _post(
        self, url: httpcore.URL, headers: dict[str, str], message: Outgoing
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer's status, headers and at most ``max_answer_bytes`` of its body."""
        assert message.body is not None
        async with self._pool.stream(
            "POST",
            url,
            headers=list(headers.items()),
            content=message.body,
            extensions={"timeout": self._timeouts},
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_stream():
                body.extend(chunk)
                if len(body) >= self.max_answer_bytes:
                    break  # enough to find a receipt; the connection is dropped
            return response.status, list(response.headers), bytes(body[: self.max_answer_bytes])

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._pool.aclose()


def _detail(err: BaseException) -> str:
    """For the operator's log: the exception types and error numbers, no message texts
    (a TLS error's text can quote the receiver's certificate)."""
    parts: list[str] = []
    for cause in _causes(err):
        part = type(cause).__name__
        if isinstance(cause, OSError) and cause.errno:
            part += f"[{errno.errorcode.get(cause.errno, cause.errno)}]"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            part += f"[{cause.reason}]"
        parts.append(part)
    return " <- ".join(dict.fromkeys(parts))
