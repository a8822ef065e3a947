"""Webhooks can't be turned inward, over real connections: real servers on loopback
(allowed by the setting, or not), names resolved by an injected resolver at the
channel's boundary (DNS rebinding) and by the system (``localhost``), redirects, TLS with
SNI and certificate checked for the name while the connection goes to the checked
address, and receivers that answer secrets (a banner, a body, headers, a reason phrase)
that no text a station head reads may repeat.

The delivery's record reaches heads in four places: the case's deliveries, the dead
letters (API and ``caseflow notify dead-letters``) and ``NotificationFailed`` in the case
history; each is checked, on both backends, with the real dispatcher and API.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from bench.notify import CLERK, STATION, case_payload
from services.notify import outbox, subscriptions
from services.notify.app import create_app
from services.notify.channels.webhook import (
    CLIENT_ERROR,
    DNS_FAILED,
    DROPPED,
    GONE,
    NOT_ALLOWED,
    NOT_HTTP,
    REDIRECT,
    SERVER_ERROR,
    TIMED_OUT,
    TLS_ERROR,
    WebhookChannel,
    generate_secret,
)
from services.notify.dispatcher import ChannelLimits, Dispatcher, DispatchSettings
from services.notify.egress import AllowedNetwork, EgressPolicy, LookupFailed, Resolver
from services.notify.model import (
    DeliveryError,
    Outgoing,
    PermanentDeliveryError,
    ReceiverGone,
    Recipient,
    delivery_id,
)
from services.notify.planning import webhook_body
from services.notify.sandbox import WebhookReceiver
from services.notify.settings import NotifySettings
from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.domain.events import NewEvent
from tests.services import NOT_LISTENING, session_keys, staff_headers

SECRET = generate_secret()
LEAK = "SECRET-7f3a"
"""What receivers answer in bodies, banners, headers and reason phrases: never shown."""
HEAD = staff_headers("zhao.head", "station_head", STATION)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Peer"], Awaitable[None]]


# --------------------------------------------------------------------------- real peers


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP request's head and body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return head + body


def answer(status: str, body: bytes = b"", *headers: str) -> Handler:
    """Read the request, answer ``HTTP/1.1 {status}`` with ``headers`` and ``body``."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        peer.requests.append(await read_request(reader))
        head = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "Connection: close"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return handle


class Peer:
    """A real TCP (or TLS) server on 127.0.0.1 that runs ``handler`` per connection and
    keeps what it was sent."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.written = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, host: str = "127.0.0.1", path: str = "/hooks", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def allowed(self) -> EgressPolicy:
        """What an operator sets to let webhooks reach exactly this peer."""
        return EgressPolicy((AllowedNetwork(ipaddress.ip_network("127.0.0.1/32"), self.port),))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def hook(url: str, delivery: uuid.UUID | None = None) -> Outgoing:
    body = json.dumps({"type": "CaseAccepted", "case_number": "XF-2026-000123"}).encode()
    return Outgoing(
        delivery_id=delivery or uuid.uuid4(),
        channel="webhook",
        recipient=Recipient("webhook:sub-1", url, httpx.URL(url).host),
        event_type="CaseAccepted",
        body=body,
        secret=SECRET,
    )


def fixed(answers: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A resolver answering from ``answers`` (and counting its lookups in ``calls``)."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise LookupFailed("NXDOMAIN")
        return answers[host]

    return resolve


@contextlib.asynccontextmanager
async def channel(
    policy: EgressPolicy | None = None, *, timeout: float = 3.0, **kwargs: Any
) -> AsyncIterator[WebhookChannel]:
    webhook = WebhookChannel(timeout=timeout, policy=policy, **kwargs)
    try:
        yield webhook
    finally:
        await webhook.aclose()


async def failure(webhook: WebhookChannel, url: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as err:
        await webhook.send(hook(url))
    return err.value


# --------------------------------------------------------------------------- where it goes


async def test_loopback_receiver_reached_only_when_the_operator_allows_it() -> None:
    async with WebhookReceiver(SECRET) as receiver:
        assert receiver.url is not None
        async with channel() as closed:
            err = await failure(closed, receiver.endpoint())
        assert type(err) is PermanentDeliveryError and str(err).endswith(NOT_ALLOWED)
        assert err.detail and "loopback" in err.detail
        # The same network on another port is not the receiver.
        other = EgressPolicy((AllowedNetwork.endpoint(f"http://127.0.0.1:{_other(receiver)}"),))
        async with channel(other) as elsewhere:
            err = await failure(elsewhere, receiver.endpoint())
        assert str(err).endswith(NOT_ALLOWED) and "not this port" in (err.detail or "")
        assert receiver.calls == []
        allowed = EgressPolicy((AllowedNetwork.endpoint(receiver.url),))
        async with channel(allowed) as opened:
            message = hook(receiver.endpoint("/caseflow"))
            assert await opened.send(message)
        (got,) = receiver.received
        assert got.verified and got.webhook_id == str(message.delivery_id)


def _other(receiver: WebhookReceiver) -> int:
    assert receiver.url is not None
    port = httpx.URL(receiver.url).port
    assert port is not None
    return port + 1 if port < 65535 else port - 1


async def test_name_that_resolves_inside_at_delivery_is_refused() -> None:
    """DNS rebinding: public when registered, loopback when delivered."""
    async with Peer(answer("200 OK", b'{"id": "r-1"}', "Content-Type: application/json")) as peer:
        calls: list[str] = []
        answers = {"hooks.rebind.test": ["93.184.216.34"]}
        resolver = fixed(answers, calls)
        from services.notify.egress import check_url

        url = peer.url("hooks.rebind.test")
        await check_url(url, EgressPolicy(), resolver)  # registration: fine
        answers["hooks.rebind.test"] = ["127.0.0.1"]  # the name now points inside
        async with channel(resolver=resolver) as webhook:
            err = await failure(webhook, url)
        assert type(err) is PermanentDeliveryError and str(err).endswith(NOT_ALLOWED)
        assert "127.0.0.1" not in str(err)  # where the name pointed is not the head's to know
        assert peer.connections == 0
        # Several records, one inside: refused whole, nothing connected.
        answers["hooks.rebind.test"] = ["127.0.0.1", "10.0.0.7"]
        async with channel(peer.allowed, resolver=resolver) as webhook:
            err = await failure(webhook, url)
        assert str(err).endswith(NOT_ALLOWED) and peer.connections == 0
        assert calls == ["hooks.rebind.test"] * 3  # once per check, once per connection


async def test_connection_goes_to_the_checked_address_with_the_name_as_host() -> None:
    async with Peer(
        answer("200 OK", b'{"id": "rcpt-9"}', "Content-Type: application/json")
    ) as peer:
        calls: list[str] = []
        # The system can't resolve this name: only the checked address can be reached.
        resolver = fixed({"pinned.example.test": ["127.0.0.1"]}, calls)
        async with channel(peer.allowed, resolver=resolver) as webhook:
            assert await webhook.send(hook(peer.url("pinned.example.test"))) == "rcpt-9"
        assert calls == ["pinned.example.test"]
        (request,) = peer.requests
        assert f"Host: pinned.example.test:{peer.port}".encode() in request
        assert b"webhook-signature: v1," in request


async def test_localhost_is_resolved_by_the_system_and_refused() -> None:
    async with Peer(answer("200 OK")) as peer, channel() as webhook:
        err = await failure(webhook, peer.url("localhost"))
        assert str(err).endswith(NOT_ALLOWED) and peer.connections == 0
    async with channel() as webhook:
        err = await failure(webhook, "http://no-such-host.invalid/hooks")
    assert type(err) is DeliveryError and str(err).endswith(DNS_FAILED)  # worth a retry


async def test_redirect_to_the_inside_is_not_followed() -> None:
    async with Peer(answer("200 OK")) as inside:
        steal = inside.url(path="/latest/meta-data")
        redirect = answer("302 Found", b"", f"Location: {steal}")
        async with Peer(redirect) as outside:
            both = EgressPolicy(outside.allowed.allowed + inside.allowed.allowed)
            async with channel(both) as webhook:
                err = await failure(webhook, outside.url())
        assert type(err) is PermanentDeliveryError and str(err).endswith(REDIRECT)
        assert str(inside.port) not in str(err)
        assert outside.connections == 1 and inside.connections == 0


# --------------------------------------------------------------------------- what a head reads


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    writer.write(f"SSH-2.0-OpenSSH_9.6 {LEAK}\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.2)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    peer.requests.append(await read_request(reader))
    writer.write(f"+OK {LEAK} redis_version:7.2\r\n\r\n".encode())
    await writer.drain()


async def _half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    peer.requests.append(await read_request(reader))
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{LEAK}".encode())
    await writer.drain()


SECRET_ANSWERS: list[tuple[str, Handler, type[DeliveryError], str]] = [
    ("banner", _banner, DeliveryError, DROPPED),  # a banner, then the line is closed
    ("not http", _garbage, DeliveryError, NOT_HTTP),
    ("cut short", _half, DeliveryError, DROPPED),
    (
        "500",
        answer(f"500 {LEAK}", f"<pre>{LEAK} Traceback</pre>".encode(), f"X-Debug: {LEAK}"),
        DeliveryError,
        SERVER_ERROR,
    ),
    ("503", answer(f"503 {LEAK}", LEAK.encode(), f"Server: {LEAK}"), DeliveryError, SERVER_ERROR),
    ("404", answer(f"404 {LEAK}", LEAK.encode()), PermanentDeliveryError, CLIENT_ERROR),
    ("401", answer("401 Unauthorized", LEAK.encode()), PermanentDeliveryError, CLIENT_ERROR),
    ("410", answer(f"410 {LEAK}", LEAK.encode()), ReceiverGone, GONE),
    (
        "302",
        answer("302 Found", LEAK.encode(), f"Location: http://10.0.0.1/{LEAK}"),
        PermanentDeliveryError,
        REDIRECT,
    ),
]


@pytest.mark.parametrize(
    ("handler", "kind", "said"),
    [pytest.param(h, k, s, id=name) for name, h, k, s in SECRET_ANSWERS],
)
async def test_errors_say_the_class_never_what_answered(
    handler: Handler, kind: type[DeliveryError], said: str
) -> None:
    async with Peer(handler) as peer, channel(peer.allowed) as webhook:
        err = await failure(webhook, peer.url())
    assert type(err) is kind
    assert str(err) == f"127.0.0.1: {said}"
    assert LEAK not in (err.detail or "")  # the operator's log gets no body either


async def test_a_receipt_that_is_no_id_is_not_kept() -> None:
    sentence = answer("200 OK", b"{}", f"X-Request-Id: {LEAK} please read this")
    async with Peer(sentence) as peer, channel(peer.allowed) as webhook:
        assert await webhook.send(hook(peer.url())) is None
    ident = answer(
        "200 OK", json.dumps({"id": "evt_123"}).encode(), "Content-Type: application/json"
    )
    async with Peer(ident) as peer, channel(peer.allowed) as webhook:
        assert await webhook.send(hook(peer.url())) == "evt_123"


# --------------------------------------------------------------------------- bounded


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    peer.requests.append(await read_request(reader))
    await asyncio.sleep(30)


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    peer.requests.append(await read_request(reader))
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(600):  # a byte each 50 ms: every read is quick, the whole is not
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    peer.requests.append(await read_request(reader))
    size = 200 * 1024 * 1024
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b"x" * 65536
    while peer.written < size:
        writer.write(chunk)
        await writer.drain()
        peer.written += len(chunk)


@pytest.mark.parametrize("handler", [_silent, _drip], ids=["silent", "drip"])
async def test_a_slow_receiver_is_bounded(handler: Handler) -> None:
    async with Peer(handler) as peer, channel(peer.allowed, timeout=1.0) as webhook:
        started = time.monotonic()
        err = await failure(webhook, peer.url())
        assert time.monotonic() - started < 5
    assert type(err) is DeliveryError and str(err).endswith(TIMED_OUT)


async def test_a_huge_answer_is_not_read_whole() -> None:
    async with Peer(_flood) as peer, channel(peer.allowed, timeout=20) as webhook:
        assert await webhook.send(hook(peer.url())) is None
        await asyncio.sleep(0.2)
    assert peer.written < 50 * 1024 * 1024, peer.written


# --------------------------------------------------------------------------- TLS


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``hooks.tls.test`` only (no IP address)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caseflow test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.tls.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.tls.test")]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_tls_checks_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    ca, cert, key = _certificates(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)
    trusting = ssl.create_default_context(cafile=str(ca))
    resolver = fixed({"hooks.tls.test": ["127.0.0.1"]})
    async with Peer(
        answer("200 OK", b'{"id": "tls-1"}', "Content-Type: application/json"), tls=server
    ) as peer:
        url = peer.url("hooks.tls.test", scheme="https")
        async with channel(peer.allowed, resolver=resolver, ssl_context=trusting) as webhook:
            assert await webhook.send(hook(url)) == "tls-1"
            assert names == ["hooks.tls.test"]
            (request,) = peer.requests
            assert f"Host: hooks.tls.test:{peer.port}".encode() in request
            # The certificate names hooks.tls.test, not the address: by address it fails.
            err = await failure(webhook, peer.url(scheme="https"))
            assert type(err) is DeliveryError and str(err).endswith(TLS_ERROR)
        # Not trusted at all: a TLS error, and nothing of the certificate in the text.
        async with channel(peer.allowed, resolver=resolver) as webhook:
            err = await failure(webhook, url)
        assert str(err) == f"hooks.tls.test: {TLS_ERROR}"
        assert "CERTIFICATE_VERIFY_FAILED" in (err.detail or "")
        assert len(peer.requests) == 1


# --------------------------------------------------------------------------- the whole way


FAST = DispatchSettings(
    max_attempts=2,
    wait_initial_seconds=0.01,
    wait_max_seconds=0.05,
    wait_jitter_seconds=0.0,
    poll_seconds=0.05,
    paused_retry_seconds=3600,
    # One at a time: what a 410 holds is then exactly what was not yet in flight.
    webhook=ChannelLimits(concurrency=1, timeout_seconds=5.0),
)


class Station:
    """Notify in this process on one database: its API (no background work) and a
    dispatcher with the same egress policy, sending over real connections."""

    def __init__(self, database_url: str, policy: EgressPolicy, resolver: Resolver) -> None:
        settings = NotifySettings(
            database_url=database_url,
            jwt_public_key_file=session_keys().public_path,
            nats_url=NOT_LISTENING,
            webhook_allow_networks=policy.allowed,
        )
        self.app = create_app(settings)
        self.app.state.egress_resolver = resolver
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://notify"
        )
        self.engine = create_engine(database_url)
        self.log = EventLog(self.engine)
        self.channel = WebhookChannel(timeout=3, policy=policy, resolver=resolver)
        self.dispatcher = Dispatcher(self.log, {"webhook": self.channel}, FAST)

    async def close(self) -> None:
        await self.api.aclose()
        await self.channel.aclose()
        await self.engine.dispose()

    async def subscribe(self, url: str) -> dict[str, Any]:
        response = await self.api.post(
            "/webhooks",
            json={"url": url, "event_types": ["*"]},
            headers={**HEAD, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def case_with_deliveries(self, subscription: dict[str, Any], n: int = 1) -> uuid.UUID:
        """A received case and ``n`` of its events planned for the subscription."""
        case_id = uuid.uuid4()
        events = [
            NewEvent(
                event_type="CaseReceived",
                schema_version=2,
                actor=CLERK,
                payload=case_payload(i, "egress"),
            )
            for i in range(n)
        ]
        result = await self.log.append(case_id, 0, events, case_kind="application")
        sid = uuid.UUID(subscription["subscription_id"])
        url = subscription["url"]
        recipient = Recipient(f"webhook:{sid}", url, httpx.URL(url).host)
        async with self.log.writer.begin() as conn:
            for stored in result.events:
                await outbox.plan(
                    conn,
                    delivery_id=delivery_id(stored.event_id, "webhook", recipient),
                    event_id=stored.event_id,
                    event_type=stored.event_type,
                    case_id=case_id,
                    case_kind="application",
                    station=STATION,
                    channel="webhook",
                    recipient=recipient,
                    subject=stored.event_type,
                    body=webhook_body(stored).decode(),
                    subscription_id=sid,
                )
        return case_id

    async def drain(self) -> None:
        async with asyncio.timeout(60):
            await self.dispatcher.drain()

    async def get(self, path: str) -> Any:
        response = await self.api.get(path, headers=HEAD)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.asynccontextmanager
async def station(
    database_url: str, policy: EgressPolicy, resolver: Resolver
) -> AsyncIterator[Station]:
    running = Station(database_url, policy, resolver)
    try:
        yield running
    finally:
        await running.close()


def dead_letters_cli(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "notify", "dead-letters", *args],
        env={"CASEFLOW_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


async def test_heads_read_the_class_everywhere_and_operators_the_status(db_url: str) -> None:
    tell_all = answer(f"500 {LEAK}", f"{LEAK} stack trace".encode(), f"X-Internal: {LEAK}")
    async with Peer(tell_all) as peer:
        # The name is public when registered, and points inside when delivered.
        answers = {"hooks.station.test": ["127.0.0.1"], "rebind.station.test": ["93.184.216.34"]}
        async with station(db_url, peer.allowed, fixed(answers)) as notify:
            failing = await notify.subscribe(peer.url("hooks.station.test"))
            rebound = await notify.subscribe(f"https://rebind.station.test:{peer.port}/hooks")
            answers["rebind.station.test"] = ["169.254.169.254"]
            first = await notify.case_with_deliveries(failing)
            second = await notify.case_with_deliveries(rebound)
            with capture_logs() as logs:
                await notify.drain()

            seen = []
            for case_id, said in ((first, SERVER_ERROR), (second, NOT_ALLOWED)):
                (delivery,) = (await notify.get(f"/cases/{case_id}/deliveries"))["deliveries"]
                assert delivery["status"] == "failed" and delivery["last_error"].endswith(said)
                seen.append(delivery["last_error"])
                history = await notify.log.read_case(case_id)
                (failed,) = [e for e in history if e.event_type == "NotificationFailed"]
                assert failed.payload["reason"] == delivery["last_error"]
            assert seen[0].startswith("gave up after 2 attempts:")
            assert seen[1].startswith("refused:")
            dead = (await notify.get("/dead-letters"))["dead_letters"]
            assert sorted(d["last_error"] for d in dead) == sorted(seen)
            cli_json = dead_letters_cli(db_url, "--json")
            assert sorted(d["last_error"] for d in json.loads(cli_json)) == sorted(seen)
            table = dead_letters_cli(db_url)
            assert "HTTP 5xx" in table and "address not allowed" in table
            for text in (*seen, json.dumps(dead), cli_json, table):
                assert LEAK not in text and "169.254" not in text
            # The operator's log: the exact status and where the name pointed; no body.
            details = " ".join(str(e.get("detail")) for e in logs)
            assert "answered HTTP 500" in details and "169.254.169.254 (link-local)" in details
            assert LEAK not in json.dumps(logs, default=str)
        assert len(peer.requests) == 2  # the failing one, tried twice; never the rebound


async def test_410_pauses_the_subscription_and_holds_its_deliveries(db_url: str) -> None:
    gone = True

    async def receiver(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        handler = answer("410 Gone", LEAK.encode()) if gone else answer("200 OK")
        await handler(reader, writer, peer)

    async with Peer(receiver) as peer, station(db_url, peer.allowed, fixed({})) as notify:
        sub = await notify.subscribe(peer.url())
        sid = sub["subscription_id"]
        case_id = await notify.case_with_deliveries(sub, n=3)
        await notify.drain()
        assert len(peer.requests) == 1  # the first 410 paused it: the others waited
        shown = await notify.get(f"/webhooks/{sid}")
        assert shown["status"] == "paused"
        assert GONE in shown["status_reason"] and LEAK not in shown["status_reason"]
        deliveries = (await notify.get(f"/cases/{case_id}/deliveries"))["deliveries"]
        assert [d["status"] for d in deliveries] == ["pending"] * 3
        assert sum(GONE in (d["last_error"] or "") for d in deliveries) == 1
        history = await notify.log.read_case(case_id)
        assert not [e for e in history if e.event_type.startswith("Notification")]
        # Nothing is sent while paused, however often the dispatcher looks.
        await notify.drain()
        assert len(peer.requests) == 1
        # The receiver is back; the head resumes: the reason goes, everything is sent.
        gone = False
        resumed = await notify.api.patch(
            f"/webhooks/{sid}", json={"status": "active"}, headers=HEAD
        )
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "active" and resumed.json()["status_reason"] is None
        await notify.drain()
        deliveries = (await notify.get(f"/cases/{case_id}/deliveries"))["deliveries"]
        assert [d["status"] for d in deliveries] == ["sent"] * 3
        assert len(peer.requests) == 4
        assert await subscriptions.get(notify.log, uuid.UUID(sid)) is not None


REFUSED_AT_REGISTRATION = [
    "http://127.0.0.1:{port}/hooks",
    "http://localhost:{port}/hooks",
    "http://[::1]:{port}/hooks",
    "http://0.0.0.0:{port}/hooks",
    "http://0:{port}/hooks",
    "http://2130706433:{port}/hooks",
    "http://127.1:{port}/hooks",
    "http://0x7f.0.0.1:{port}/hooks",
    "http://017700000001:{port}/hooks",
    "http://[::ffff:127.0.0.1]:{port}/hooks",
    "http://[::ffff:7f00:1]:{port}/hooks",
    "http://[64:ff9b::7f00:1]:{port}/hooks",
    "http://127.0.0.1.:{port}/hooks",
    "http://LOCALHOST.:{port}/hooks",
    "http://evil@127.0.0.1:{port}/hooks",
    "http://127.0.0.1:{port}@example.com/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://10.0.0.8/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://224.0.0.251/",
    "http://240.0.0.1/",
    "http://[fd00::1]/",
    "http://inside.station.test/",
    "http://nowhere.station.test/",
]


async def test_every_spelling_of_the_inside_refused_at_registration(sqlite_url: str) -> None:
    resolver = fixed({"inside.station.test": ["93.184.216.34", "10.9.8.7"]})
    async with (
        Peer(answer("200 OK")) as peer,
        station(sqlite_url, EgressPolicy(), resolver) as notify,
    ):
        for template in REFUSED_AT_REGISTRATION:
            url = template.format(port=peer.port)
            response = await notify.api.post(
                "/webhooks",
                json={"url": url, "event_types": ["CaseAccepted"]},
                headers={**HEAD, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert response.status_code == 422, (url, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert [e["field"] for e in problem["errors"]] == ["url"], problem
            message = problem["errors"][0]["message"]
            assert any("\u4e00" <= c <= "\u9fff" for c in message), message  # Chinese too
            assert "10.9.8.7" not in message
        assert (await notify.get("/webhooks"))["subscriptions"] == []
        assert peer.connections == 0


async def test_caseflow_up_allows_its_sandbox_receiver_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.notify.sandbox import Sandbox
    from shared.cli.supervisor import Stack

    monkeypatch.delenv("CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS", raising=False)
    stack = Stack(
        data_dir=tmp_path,
        database_url=None,
        nats_url=None,
        host="127.0.0.1",
        ports={"notify": 3},
        nats_port=4,
    )
    stack.ensure_nats_credentials()  # as `caseflow up` does before it starts a service
    async with Sandbox() as sandbox:
        stack.notify_env = sandbox.environment()  # what `caseflow up` reads from its sandbox
        receiver = httpx.URL(sandbox.webhooks.endpoint())
        sms = httpx.URL(str(sandbox.sms.settings().endpoint))
        assert receiver.port is not None and sms.port is not None
        loopback = ipaddress.ip_address("127.0.0.1")

        def policy() -> EgressPolicy:
            monkeypatch.setattr("os.environ", stack.service_env("notify", "nats://127.0.0.1:4"))
            return NotifySettings().egress_policy()  # as `caseflow serve notify` reads it

        sandbox_only = policy()
        assert sandbox_only.refusal(loopback, receiver.port) is None
        for port in (sms.port, sandbox.mailbox.port, 3, 4, 80):
            assert sandbox_only.refusal(loopback, port) == "loopback"
        # An operator's own networks are kept, the sandbox's receiver added.
        monkeypatch.setenv("CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS", "10.20.0.0/16")
        both = policy()
        assert both.refusal(ipaddress.ip_address("10.20.1.2"), 443) is None
        assert both.refusal(loopback, receiver.port) is None
        assert both.refusal(loopback, sms.port) == "loopback"
