"""Local receivers for the three channels: a mailbox, an SMS gateway, a webhook endpoint.

The embedded default (``make up``), the tests and the benchmark have no real SMTP server,
SMS provider or integrator. These stand in for them, speak the real protocols (SMTP;
Tencent Cloud's ``SendSms`` with its TC3 signature; Standard Webhooks) and behave as a
careful receiver would: they check signatures, keep every message, and count a repeat
of the same idempotency key (``Message-ID``, ``SessionContext``, ``webhook-id``) once.
Each can be told to fail or hang for the next N requests, and can write what it got
into a folder (``var/outbox/{email,sms,webhook}/``) for a person to read. The mailbox and
the webhook receiver can also fail the *first* attempt of a chosen share of messages
(``fail_first_attempt_of``): picked by a hash of the idempotency key, so the same
messages are picked on every run, and each picked one is refused once, then taken.

- :class:`Mailbox`: aiosmtpd in its own thread (``Controller``); ``await start()`` /
  ``await stop()`` or ``async with``; ``messages``, ``duplicates``, ``fail_next()``,
  ``fail_first_attempt_of()``.
- :class:`SmsGateway` and :class:`WebhookReceiver`: ASGI apps (Starlette), served by
  uvicorn in the caller's event loop (:func:`serve_asgi`); ``async with`` starts them
  on a free port and sets ``url``.
- :class:`Sandbox`: all three, and the environment that points notify at them;
  ``python -m services.notify.sandbox`` runs it until Ctrl-C.

Nothing here is for production: the SMS gateway's key is a published constant.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import email
import email.policy
import hashlib
import hmac
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import structlog
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from services.notify.channels.email import EmailSettings
from services.notify.channels.sms import ACTION, SERVICE, VERSION, SmsSettings, tc3_authorization
from services.notify.egress import AllowedNetwork
from shared.domain.identity import PHONE, mask_phone

log = structlog.get_logger("caseflow.notify.sandbox")

SANDBOX_SECRET_ID = "AKIDcaseflowSANDBOX0000"  # noqa: S105 - published on purpose
SANDBOX_SECRET_KEY = "caseflow-sandbox-key-not-a-secret"  # noqa: S105 - published on purpose
SANDBOX_SDK_APP_ID = "1400000000"
SANDBOX_SIGN_NAME = "薛峰中心村政务服务站"
SANDBOX_TEMPLATE_ID = "1000001"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S.%fZ")


def _safe(name: str) -> str:
    """A file-name-safe form of an id."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]


def _write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def mask_email(address: str) -> str:
    """``w***@example.cn``."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def picked_for_failure(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``fail_first_attempt_of(fraction, seed)`` picks the message whose
    idempotency key is ``key`` (a ``Message-ID`` as sent, angle brackets included; a
    ``webhook-id``). A hash of seed and key decides: the same keys on every run, about
    ``fraction`` of them, and a sender can count in advance how many first attempts fail."""
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


@dataclasses.dataclass(slots=True)
class _FirstAttempts:
    """Refuse the first arrival of each picked key, take it from then on."""

    fraction: float
    seed: int
    seen: set[str] = dataclasses.field(default_factory=set)
    refused: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ValueError("fraction is a share of messages, from 0 to 1")

    def refuse(self, key: str) -> bool:
        """Whether to refuse this arrival of ``key`` (its first, if it is picked)."""
        if key in self.seen or not picked_for_failure(key, self.fraction, self.seed):
            return False
        self.seen.add(key)
        self.refused += 1
        return True


async def _until(condition: Any, count: int, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while condition() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {condition()} of {count} after {within:g} s")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- SMTP


@dataclasses.dataclass(frozen=True, slots=True)
class _SmtpFault:
    code: int
    at: Literal["rcpt", "data"]


_REPLIES = {
    421: "421 4.3.2 Sandbox: service not available, closing channel",
    450: "450 4.2.1 Sandbox: mailbox busy, try again later",
    451: "451 4.3.0 Sandbox: local error, try again later",
    452: "452 4.3.1 Sandbox: insufficient storage, try again later",
    550: "550 5.1.1 Sandbox: mailbox unavailable",
    552: "552 5.3.4 Sandbox: message too big",
    554: "554 5.7.1 Sandbox: transaction failed",
}


def _reply(code: int) -> str:
    return _REPLIES.get(code, f"{code} {code // 100}.0.0 Sandbox failure")


class _Controller(Controller):
    """aiosmtpd's threaded controller, able to listen on a free port (``port=0``): the
    port is read back from the socket before the controller's readiness probe."""

    def _create_server(self) -> Any:
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class Mailbox:
    """An SMTP server on ``host:port`` (``port=0``: a free one) that keeps what it gets.

    ``messages`` holds each distinct message once (by ``Message-ID``, as a mailbox shows
    them); a repeat is accepted (250) and counted in ``duplicates``. ``fail_next(n, code)``
    answers the next ``n`` messages with ``code`` instead, after ``RCPT TO`` or after
    ``DATA``; ``fail_first_attempt_of(fraction)`` answers 451 to the first arrival of
    about ``fraction`` of the ``Message-ID``s (counted in ``first_attempt_failures``)
    and takes each when it comes again. With ``tls_context`` it offers (and requires)
    STARTTLS; with ``credentials`` it requires AUTH (over TLS). The server runs in its
    own thread (aiosmtpd's ``Controller``), so it answers even while the caller's loop is
    busy.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        folder: Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.folder = folder
        self.tls_context = tls_context
        self.credentials = credentials
        self.duplicates = 0
        self.repeated: list[str] = []
        """The key of each repeat (Message-ID, SessionContext, webhook-id), in order."""
        self.attempts = 0
        """Messages answered after DATA or refused, repeats and injected failures included."""
        self._messages: list[EmailMessage] = []
        self._by_id: dict[str, EmailMessage] = {}
        self._faults: collections.deque[_SmtpFault] = collections.deque()
        self._first_attempts: _FirstAttempts | None = None
        self._first_attempt_code = 451
        self._lock = threading.Lock()
        self._controller: _Controller | None = None

    # -- life

    async def start(self) -> None:
        """Listen; ``port`` is the port listened on afterwards."""
        if self._controller is not None:
            raise RuntimeError("the mailbox is already running")
        kwargs: dict[str, Any] = {}
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        if self.credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        controller = _Controller(
            _MailboxHandler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="caseflow-sandbox",  # no getfqdn(): it can wait on DNS
            ready_timeout=10.0,
            **kwargs,
        )
        await asyncio.to_thread(controller.start)
        self.port = controller.port
        self._controller = controller
        log.info("sandbox mailbox listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            await asyncio.to_thread(controller.stop)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.stop()

    def settings(self, **overrides: Any) -> EmailSettings:
        """Settings that make :class:`~services.notify.channels.email.EmailChannel` send here."""
        values: dict[str, Any] = {"host": self.host, "port": self.port, "starttls": False}
        return EmailSettings(**(values | overrides))

    # -- what was received

    @property
    def messages(self) -> list[EmailMessage]:
        """Every distinct message, in arrival order."""
        with self._lock:
            return list(self._messages)

    def by_message_id(self, message_id: str) -> EmailMessage | None:
        """The message with that ``Message-ID`` (angle brackets included), if it came."""
        with self._lock:
            return self._by_id.get(message_id)

    async def wait_for(self, count: int = 1, within: float = 5.0) -> list[EmailMessage]:
        """The messages, once at least ``count`` distinct ones have come."""
        await _until(lambda: len(self._messages), count, within, "mailbox")
        return self.messages

    # -- failures

    def fail_next(
        self, count: int = 1, code: int = 451, *, at: Literal["rcpt", "data"] = "data"
    ) -> None:
        """Refuse the next ``count`` messages with ``code`` (451: try later, 550: no such
        mailbox; any 4xx or 5xx) after ``RCPT TO`` or after ``DATA``."""
        if not 400 <= code < 600:
            raise ValueError("an SMTP failure is a 4xx or 5xx reply")
        with self._lock:
            self._faults.extend([_SmtpFault(code, at)] * count)

    def fail_first_attempt_of(self, fraction: float, seed: int = 0, code: int = 451) -> None:
        """From now on, answer ``code`` after ``DATA`` to the first arrival of each message
        whose ``Message-ID`` is picked (:func:`picked_for_failure`: about ``fraction`` of
        them, the same ones for the same ``seed``), and take it when it comes again; a
        message without a ``Message-ID`` is never picked. ``fraction=0`` stops it. Unlike
        :meth:`fail_next`, which fails whatever comes next, this fails chosen messages once
        each, however the sender interleaves them."""
        if not 400 <= code < 600:
            raise ValueError("an SMTP failure is a 4xx or 5xx reply")
        picker = _FirstAttempts(fraction, seed)  # checks the fraction
        with self._lock:
            self._first_attempts = picker if fraction > 0 else None
            self._first_attempt_code = code

    @property
    def first_attempt_failures(self) -> int:
        """First attempts refused by :meth:`fail_first_attempt_of`."""
        with self._lock:
            return self._first_attempts.refused if self._first_attempts else 0

    def clear(self) -> None:
        """Forget messages, counts and pending failures (``fail_first_attempt_of`` too)."""
        with self._lock:
            self._messages.clear()
            self._by_id.clear()
            self._faults.clear()
            self._first_attempts = None
            self.duplicates = self.attempts = 0
            self.repeated.clear()

    # -- the handler's side (in the server's thread)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, self.credentials[0].encode())
            and hmac.compare_digest(auth_data.password, self.credentials[1].encode())
        )
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    def _fault(self, at: Literal["rcpt", "data"]) -> str | None:
        with self._lock:
            if self._faults and self._faults[0].at == at:
                fault = self._faults.popleft()
                self.attempts += 1
                return _reply(fault.code)
        return None

    def _deliver(self, content: bytes) -> str:
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        given = str(parsed.get("Message-ID", "")).strip()
        message_id = given or f"<{uuid.uuid4()}@sandbox>"
        with self._lock:
            self.attempts += 1
            if given and self._first_attempts is not None and self._first_attempts.refuse(given):
                return _reply(self._first_attempt_code)
            if message_id in self._by_id:
                self.duplicates += 1
                self.repeated.append(message_id)
                return "250 2.0.0 Already delivered (sandbox)"
            self._by_id[message_id] = parsed
            self._messages.append(parsed)
        if self.folder is not None:
            name = f"{_stamp(datetime.now(UTC))}-{_safe(message_id.strip('<>'))}.eml"
            _write(self.folder, name, content)
        log.info(
            "sandbox mailbox received",
            message_id=message_id,
            to=mask_email(str(parsed.get("To", ""))),
        )
        return "250 2.0.0 Message accepted (sandbox)"


class _MailboxHandler:
    """aiosmtpd's handler hooks, handing over to the mailbox."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.mailbox._fault("rcpt")
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.mailbox._fault("data")
        if refusal is not None:
            return refusal
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        return self.mailbox._deliver(content)


# --------------------------------------------------------------------------- HTTP


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, graceful_seconds: int = 1
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop; yields its base URL
    (``http://127.0.0.1:<port>``). ``port=0`` takes a free port (bound before uvicorn
    starts, so no other process can take it in between)."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every answer (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = _QuietServer(
        uvicorn.Config(
            app,
            host=host,
            port=bound,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=graceful_seconds,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError(f"uvicorn did not start on {host}:{bound}")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@dataclasses.dataclass(frozen=True, slots=True)
class _HttpFault:
    status: int | None = None
    hang_seconds: float | None = None
    code: str | None = None


class _HttpReceiver:
    """What the two HTTP receivers share: serving, waiting and injected failures."""

    name = "receiver"

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.url: str | None = None
        self.app: Starlette
        self._faults: collections.deque[_HttpFault] = collections.deque()
        self._released: asyncio.Event | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (``0``: a free port) in this event loop; returns the URL."""
        if self._stack is not None:
            raise RuntimeError(f"the {self.name} is already running")
        self._released = asyncio.Event()
        stack = contextlib.AsyncExitStack()
        self.url = await stack.enter_async_context(serve_asgi(self.app, host=host, port=port))
        self._stack = stack
        log.info(f"sandbox {self.name} listening", url=self.url)
        return self.url

    async def stop(self) -> None:
        """Stop serving (idempotent); requests held by ``hang_next`` are let go first."""
        stack, self._stack = self._stack, None
        if self._released is not None:
            self._released.set()
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.stop()

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` and do nothing else."""
        self._faults.extend([_HttpFault(status=status)] * count)

    def clear_faults(self) -> None:
        """Forget the failures still to come: answer normally again."""
        self._faults.clear()

    def hang_next(self, count: int = 1, seconds: float = 30.0) -> None:
        """Hold the next ``count`` requests ``seconds`` before handling them (a slow
        receiver: a client that gave up meanwhile has its message handled all the same)."""
        self._faults.extend([_HttpFault(hang_seconds=seconds)] * count)

    async def _injected(self) -> Response | None:
        """The injected failure's answer, if the next request is to fail; after a hang,
        None (handle the request) unless the receiver is stopping."""
        if not self._faults:
            return None
        fault = self._faults.popleft()
        if fault.hang_seconds is not None:
            released = self._released or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), fault.hang_seconds)
                return PlainTextResponse("sandbox stopping", status_code=503)
            return None
        if fault.status is not None:
            return PlainTextResponse(f"sandbox failure {fault.status}", status_code=fault.status)
        return None

    async def _keep(self, name: str, data: bytes) -> None:
        if self.folder is not None:
            await asyncio.to_thread(_write, self.folder, name, data)


# --------------------------------------------------------------------------- SMS

_TC3 = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?P<service>[a-z0-9-]+)/tc3_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_TENCENT_MESSAGES = {
    "AuthFailure.InvalidAuthorization": "Authorization header is invalid.",
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please check it.",
    "AuthFailure.SignatureExpire": "Signature expired. Timestamp and server time cannot "
    "differ by more than 5 minutes.",
    "AuthFailure.SignatureFailure": "The provided credentials could not be validated. "
    "Please check your signature is correct.",
    "InvalidAction": "The action requested is invalid.",
    "NoSuchVersion": "The requested version does not exist.",
    "InvalidParameter": "The request body is not valid SendSms JSON.",
    "InvalidParameterValue.SdkAppIdNotExist": "SdkAppId does not exist.",
    "InvalidParameterValue.IncorrectPhoneNumber": "incorrect number format.",
}


def check_tc3(
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, str],
    *,
    service: str = SERVICE,
    now: float | None = None,
    max_skew_seconds: float = 300.0,
) -> str | None:
    """Check a TencentCloud API 3.0 request's signature as the API does. None if it is
    signed by a key in ``credentials`` (SecretId → SecretKey), else the error code.
    ``headers`` must look names up case-insensitively (Starlette's, httpx's)."""
    found = _TC3.match(headers.get("authorization", ""))
    if found is None or found["service"] != service:
        return "AuthFailure.InvalidAuthorization"
    key = credentials.get(found["id"])
    if key is None:
        return "AuthFailure.SecretIdNotFound"
    signed = found["signed"].split(";")
    if "content-type" not in signed or "host" not in signed:
        return "AuthFailure.InvalidAuthorization"
    try:
        timestamp = int(headers["x-tc-timestamp"])
        values = {name: headers[name] for name in signed}
    except (KeyError, ValueError):
        return "AuthFailure.InvalidAuthorization"
    if abs((time.time() if now is None else now) - timestamp) > max_skew_seconds:
        return "AuthFailure.SignatureExpire"
    expected = tc3_authorization(
        secret_id=found["id"],
        secret_key=key,
        service=service,
        timestamp=timestamp,
        headers=values,
        payload=body,
    )
    if not hmac.compare_digest(expected, headers["authorization"]):
        return "AuthFailure.SignatureFailure"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedSms:
    """One SMS the gateway would have sent."""

    phone: str
    """``+8613812345678``."""
    text: str
    session_context: str
    serial_no: str
    sign_name: str
    template_id: str
    received_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class SmsCall:
    """One signed ``SendSms`` request the gateway accepted, repeats included."""

    session_context: str
    delivery_id_header: str | None
    phones: tuple[str, ...]
    duplicate: bool


class SmsGateway(_HttpReceiver):
    """A Tencent Cloud SMS ``SendSms`` endpoint (API 2021-01-11) that sends nothing.

    It checks the TC3-HMAC-SHA256 signature against ``credentials`` (SecretId →
    SecretKey; by default the sandbox's published pair) and answers a bad one with
    ``AuthFailure.SignatureFailure`` as Tencent does (HTTP 200, ``Response.Error``).
    Accepted messages are in ``received``; a repeat of a ``SessionContext`` for the same
    number is acknowledged with the first answer's ``SerialNo``, not sent again, and
    counted in ``duplicates``. ``calls`` lists every accepted request, ``refusals`` the
    error codes answered. Failures: ``fail_next`` (HTTP status), ``hang_next``,
    ``refuse_next`` (a Tencent error code).
    """

    name = "SMS gateway"

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        sdk_app_id: str | None = SANDBOX_SDK_APP_ID,
        folder: Path | None = None,
    ) -> None:
        super().__init__(folder)
        self.credentials = dict(credentials or {SANDBOX_SECRET_ID: SANDBOX_SECRET_KEY})
        self.sdk_app_id = sdk_app_id
        self.received: list[ReceivedSms] = []
        self.calls: list[SmsCall] = []
        self.refusals: list[str] = []
        self.duplicates = 0
        self.repeated: list[str] = []
        """The key of each repeat (Message-ID, SessionContext, webhook-id), in order."""
        self._sent: dict[tuple[str, str], ReceivedSms] = {}
        self._serial = 0
        self.app = Starlette(routes=[Route("/", self._endpoint, methods=["POST"])])

    def settings(self, **overrides: Any) -> SmsSettings:
        """Settings that make :class:`~services.notify.channels.sms.SmsChannel` send here."""
        if self.url is None:
            raise RuntimeError("start the gateway first")
        secret_id, secret_key = next(iter(self.credentials.items()))
        values: dict[str, Any] = {
            "endpoint": self.url,
            "secret_id": secret_id,
            "secret_key": secret_key,
            "sdk_app_id": self.sdk_app_id or SANDBOX_SDK_APP_ID,
            "sign_name": SANDBOX_SIGN_NAME,
            "template_id": SANDBOX_TEMPLATE_ID,
        }
        return SmsSettings(**(values | overrides))

    def refuse_next(
        self, count: int = 1, code: str = "LimitExceeded.PhoneNumberDailyLimit"
    ) -> None:
        """Answer the next ``count`` requests with Tencent's error ``code``."""
        self._faults.extend([_HttpFault(code=code)] * count)

    async def wait_for(self, count: int = 1, within: float = 5.0) -> list[ReceivedSms]:
        """The messages, once at least ``count`` distinct ones have come."""
        await _until(lambda: len(self.received), count, within, "SMS gateway")
        return list(self.received)

    def _error(self, code: str, request_id: str) -> JSONResponse:
        self.refusals.append(code)
        message = _TENCENT_MESSAGES.get(code, "Sandbox failure.")
        return JSONResponse(
            {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}
        )

    async def _endpoint(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        body = await request.body()
        injected = await self._injected_sms(request_id)
        if injected is not None:
            return injected
        problem = check_tc3(request.headers, body, self.credentials)
        if problem is not None:
            return self._error(problem, request_id)
        if request.headers.get("x-tc-action") != ACTION:
            return self._error("InvalidAction", request_id)
        if request.headers.get("x-tc-version") != VERSION:
            return self._error("NoSuchVersion", request_id)
        try:
            params = json.loads(body)
            phones = [str(p) for p in params["PhoneNumberSet"]]
            text = "".join(str(p) for p in params.get("TemplateParamSet") or [])
            app_id = str(params["SmsSdkAppId"])
            context = str(params.get("SessionContext", ""))
            sign_name = str(params.get("SignName", ""))
            template_id = str(params["TemplateId"])
        except (ValueError, KeyError, TypeError):
            return self._error("InvalidParameter", request_id)
        if not phones:
            return self._error("InvalidParameter", request_id)
        if self.sdk_app_id is not None and app_id != self.sdk_app_id:
            return self._error("InvalidParameterValue.SdkAppIdNotExist", request_id)
        statuses = []
        repeat = False
        for phone in phones:
            first = self._sent.get((context, phone)) if context else None
            if first is not None:
                repeat = True
                self.duplicates += 1
                self.repeated.append(context)
                statuses.append(self._status(first.serial_no, phone, context, "Ok"))
                continue
            if not _plausible(phone):
                code = "InvalidParameterValue.IncorrectPhoneNumber"
                statuses.append(self._status("", phone, context, code))
                continue
            self._serial += 1
            sms = ReceivedSms(
                phone=phone,
                text=text,
                session_context=context,
                serial_no=f"2433:{self._serial:010d}{uuid.uuid4().int % 10**10:010d}",
                sign_name=sign_name,
                template_id=template_id,
                received_at=datetime.now(UTC),
            )
            self.received.append(sms)
            if context:
                self._sent[(context, phone)] = sms
            statuses.append(self._status(sms.serial_no, phone, context, "Ok"))
            await self._keep_sms(sms)
        self.calls.append(
            SmsCall(
                session_context=context,
                delivery_id_header=request.headers.get("x-caseflow-delivery-id"),
                phones=tuple(phones),
                duplicate=repeat,
            )
        )
        return JSONResponse({"Response": {"SendStatusSet": statuses, "RequestId": request_id}})

    async def _injected_sms(self, request_id: str) -> Response | None:
        if self._faults and self._faults[0].code is not None:
            return self._error(str(self._faults.popleft().code), request_id)
        return await self._injected()

    @staticmethod
    def _status(serial: str, phone: str, context: str, code: str) -> dict[str, Any]:
        ok = code == "Ok"
        return {
            "SerialNo": serial,
            "PhoneNumber": phone,
            "Fee": 1 if ok else 0,
            "SessionContext": context,
            "Code": code,
            "Message": "send success" if ok else _TENCENT_MESSAGES.get(code, code),
            "IsoCode": "CN" if phone.startswith("+86") else "",
        }

    async def _keep_sms(self, sms: ReceivedSms) -> None:
        log.info("sandbox SMS gateway received", to=mask_phone(sms.phone.removeprefix("+86")))
        record = dataclasses.asdict(sms) | {"received_at": sms.received_at.isoformat()}
        data = json.dumps(record, ensure_ascii=False, indent=2).encode()
        name = f"{_stamp(sms.received_at)}-{_safe(sms.session_context or sms.serial_no)}.json"
        await self._keep(name, data)


def _plausible(phone: str) -> bool:
    if phone.startswith("+86"):
        return PHONE.match(phone[3:]) is not None
    return re.fullmatch(r"\+[1-9]\d{6,14}", phone) is not None


# --------------------------------------------------------------------------- webhooks


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One webhook call the receiver accepted."""

    webhook_id: str
    timestamp: int
    path: str
    body: bytes
    signature: str
    """The ``webhook-signature`` header as sent."""
    receipt: str
    """The id the receiver answered with (``{"id": ...}``)."""
    verified: bool
    """Whether the signature was checked (a receiver without secrets checks none)."""
    received_at: datetime

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


class WebhookReceiver(_HttpReceiver):
    """An integrator's endpoint: any path takes POSTs signed as Standard Webhooks sign them.

    With ``secret`` (one or several, for rotation) a call whose signature matches none is
    answered 401 and counted in ``rejected``; without, nothing is checked. ``received``
    keeps the first call of each ``webhook-id``; a repeat is answered 200 with the same
    receipt and counted in ``duplicates``; ``calls`` lists every accepted call. The
    answer is ``{"id": "<receipt>"}``. Failures: ``fail_next`` (e.g. 500 or 410),
    ``hang_next``, and ``fail_first_attempt_of`` (the first call of about a given share
    of the ``webhook-id``s answered 500, counted in ``first_attempt_failures``).
    """

    name = "webhook receiver"

    def __init__(
        self, secret: str | Sequence[str] | None = None, *, folder: Path | None = None
    ) -> None:
        super().__init__(folder)
        secrets = [secret] if isinstance(secret, str) else list(secret or [])
        self._verifiers = [Webhook(s) for s in secrets]
        self.received: list[ReceivedWebhook] = []
        self.calls: list[ReceivedWebhook] = []
        self.duplicates = 0
        self.repeated: list[str] = []
        """The key of each repeat (Message-ID, SessionContext, webhook-id), in order."""
        self.rejected = 0
        self._by_id: dict[str, ReceivedWebhook] = {}
        self._first_attempts: _FirstAttempts | None = None
        self._first_attempt_status = 500
        self.app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=["POST"])])

    def endpoint(self, path: str = "/hooks") -> str:
        """The URL of ``path`` on this receiver (for a subscription)."""
        if self.url is None:
            raise RuntimeError("start the receiver first")
        return f"{self.url}{path}"

    def allowed_network(self) -> AllowedNetwork:
        """The entry of ``CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS`` that lets notify's
        webhooks reach this receiver (its address and port only)."""
        if self.url is None:
            raise RuntimeError("start the receiver first")
        return AllowedNetwork.endpoint(self.url)

    def fail_first_attempt_of(self, fraction: float, seed: int = 0, status: int = 500) -> None:
        """From now on, answer HTTP ``status`` to the first call of each ``webhook-id``
        that is picked (:func:`picked_for_failure`: about ``fraction`` of them, the same
        ones for the same ``seed``), before any check, and handle it normally when it
        comes again. ``fraction=0`` stops it. Unlike :meth:`fail_next`, which fails
        whatever comes next, this fails chosen deliveries once each."""
        if not 400 <= status < 600:
            raise ValueError("a failure is a 4xx or 5xx answer")
        picker = _FirstAttempts(fraction, seed)  # checks the fraction
        self._first_attempts = picker if fraction > 0 else None
        self._first_attempt_status = status

    @property
    def first_attempt_failures(self) -> int:
        """First calls refused by :meth:`fail_first_attempt_of`."""
        return self._first_attempts.refused if self._first_attempts else 0

    def add_secret(self, secret: str) -> None:
        """Accept calls signed with ``secret`` too."""
        self._verifiers.append(Webhook(secret))

    async def wait_for(self, count: int = 1, within: float = 5.0) -> list[ReceivedWebhook]:
        """The calls, once at least ``count`` distinct ones have come."""
        await _until(lambda: len(self.received), count, within, "webhook receiver")
        return list(self.received)

    def _verified(self, body: bytes, headers: dict[str, str]) -> bool:
        for verifier in self._verifiers:
            try:
                verifier.verify(body, headers, json_parse=False)
            except Exception:  # noqa: S112 - any malformed header is a mismatch
                continue
            return True
        return False

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        injected = await self._injected()
        if injected is not None:
            return injected
        headers = dict(request.headers)
        webhook_id = headers.get("webhook-id", "")
        if webhook_id and self._first_attempts and self._first_attempts.refuse(webhook_id):
            status = self._first_attempt_status
            return PlainTextResponse(f"sandbox failure {status} (first attempt)", status)
        if not webhook_id:
            self.rejected += 1
            return PlainTextResponse("missing webhook-id", status_code=400)
        if self._verifiers and not self._verified(body, headers):
            self.rejected += 1
            return PlainTextResponse("signature mismatch", status_code=401)
        first = self._by_id.get(webhook_id)
        call = ReceivedWebhook(
            webhook_id=webhook_id,
            timestamp=_int(headers.get("webhook-timestamp")),
            path=request.url.path,
            body=body,
            signature=headers.get("webhook-signature", ""),
            receipt=first.receipt if first else f"rcpt_{uuid.uuid4().hex[:16]}",
            verified=bool(self._verifiers),
            received_at=datetime.now(UTC),
        )
        self.calls.append(call)
        if first is not None:
            self.duplicates += 1
            self.repeated.append(webhook_id)
        else:
            self._by_id[webhook_id] = call
            self.received.append(call)
            log.info("sandbox webhook received", webhook_id=webhook_id, path=call.path)
            record = {
                "webhook-id": webhook_id,
                "webhook-timestamp": call.timestamp,
                "path": call.path,
                "verified": call.verified,
                "body": body.decode(errors="replace"),
            }
            name = f"{_stamp(call.received_at)}-{_safe(webhook_id)}.json"
            await self._keep(name, json.dumps(record, ensure_ascii=False).encode())
        return JSONResponse({"id": call.receipt})


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


# --------------------------------------------------------------------------- together


class Sandbox:
    """The three receivers together, for ``caseflow up`` and benchmarks.

    With ``folder`` each writes what it gets under ``folder/email`` (``.eml``),
    ``folder/sms`` and ``folder/webhook`` (JSON). :meth:`environment` gives the
    ``CASEFLOW_NOTIFY_*`` variables that point notify's email and SMS channels here;
    webhooks go wherever a subscription says, e.g. ``sandbox.webhooks.endpoint()``.
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        host: str = "127.0.0.1",
        smtp_port: int = 0,
        sms_port: int = 0,
        webhook_port: int = 0,
        webhook_secrets: Sequence[str] = (),
    ) -> None:
        self.host = host
        self._ports = (sms_port, webhook_port)
        self.mailbox = Mailbox(host=host, port=smtp_port, folder=folder and folder / "email")
        self.sms = SmsGateway(folder=folder and folder / "sms")
        self.webhooks = WebhookReceiver(list(webhook_secrets), folder=folder and folder / "webhook")

    async def start(self) -> None:
        """Start all three."""
        await self.mailbox.start()
        await self.sms.start(host=self.host, port=self._ports[0])
        await self.webhooks.start(host=self.host, port=self._ports[1])

    async def stop(self) -> None:
        """Stop all three."""
        await self.webhooks.stop()
        await self.sms.stop()
        await self.mailbox.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.stop()

    def environment(self) -> dict[str, str]:
        """Environment variables for notify's settings (``NotifySettings``): its email and
        SMS channels pointed here, and webhooks allowed to reach this webhook receiver (its
        address and port, nothing else on the machine)."""
        sms = self.sms.settings()
        return {
            "CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS": str(self.webhooks.allowed_network()),
            "CASEFLOW_NOTIFY_SMTP__HOST": self.mailbox.host,
            "CASEFLOW_NOTIFY_SMTP__PORT": str(self.mailbox.port),
            "CASEFLOW_NOTIFY_SMTP__STARTTLS": "false",
            "CASEFLOW_NOTIFY_SMS__ENDPOINT": str(sms.endpoint),
            "CASEFLOW_NOTIFY_SMS__SECRET_ID": sms.secret_id,
            "CASEFLOW_NOTIFY_SMS__SECRET_KEY": sms.secret_key.get_secret_value(),
            "CASEFLOW_NOTIFY_SMS__SDK_APP_ID": sms.sdk_app_id,
            "CASEFLOW_NOTIFY_SMS__SIGN_NAME": sms.sign_name,
            "CASEFLOW_NOTIFY_SMS__TEMPLATE_ID": sms.template_id,
        }


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sandbox = Sandbox(
        args.folder,
        smtp_port=args.smtp_port,
        sms_port=args.sms_port,
        webhook_port=args.webhook_port,
        webhook_secrets=args.webhook_secret,
    )
    async with sandbox:
        for name, value in sandbox.environment().items():
            print(f"{name}={value}", flush=True)
        print(f"# webhook endpoint: {sandbox.webhooks.endpoint()}", flush=True)
        await stop.wait()


def spawn(
    folder: Path, *, smtp_port: int = 0, sms_port: int = 0, webhook_port: int = 0
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Run the sandbox as a child process (its own session: Ctrl-C reaches only the
    parent); the process and the ``CASEFLOW_NOTIFY_*`` variables that point notify at it.
    The caller stops the process (SIGTERM)."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "services.notify.sandbox",
            f"--folder={folder}",
            f"--smtp-port={smtp_port}",
            f"--sms-port={sms_port}",
            f"--webhook-port={webhook_port}",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    env: dict[str, str] = {}
    for raw in proc.stdout:
        line = raw.decode().strip()
        if line.startswith("#"):
            break
        name, _, value = line.partition("=")
        if name.startswith("CASEFLOW_NOTIFY_"):
            env[name] = value
    # The sandbox logs what it takes to stdout: keep the pipe from filling up.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    if not env:
        proc.terminate()
        raise RuntimeError(f"the notification sandbox did not start (exit {proc.poll()})")
    return proc, env


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m services.notify.sandbox``: run the receivers until Ctrl-C and print
    the environment that points notify at them."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--folder", type=Path, default=Path("var/outbox"))
    parser.add_argument("--smtp-port", type=int, default=0)
    parser.add_argument("--sms-port", type=int, default=0)
    parser.add_argument("--webhook-port", type=int, default=0)
    parser.add_argument("--webhook-secret", action="append", default=[])
    asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
