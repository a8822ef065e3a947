"""The three delivery channels against their real sandbox receivers: an aiosmtpd SMTP
server, a Tencent-style SMS gateway checking TC3 signatures and a Standard Webhooks
receiver, both served by uvicorn on free ports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from services.notify.channels.email import EmailChannel
from services.notify.channels.sms import SmsChannel
from services.notify.channels.webhook import (
    BUSY,
    CLIENT_ERROR,
    GONE,
    REDIRECT,
    REFUSED,
    SERVER_ERROR,
    WebhookChannel,
    generate_secret,
)
from services.notify.egress import AllowedNetwork, EgressPolicy
from services.notify.model import (
    DeliveryError,
    Notice,
    Outgoing,
    PermanentDeliveryError,
    ReceiverGone,
    Recipient,
)
from services.notify.sandbox import Mailbox, SmsGateway, WebhookReceiver
from shared.devtools.servers import free_port

SUBJECT = "受理通知：您的申请已受理（XF-2026-000123）"
BODY = (
    "王女士：\n您于2026年3月2日提交的《村民建房申请》已受理，受理编号 XF-2026-000123。\n"
    "薛峰中心村政务服务站"
)
ADDRESS = "wang.fang@example.cn"
PHONE = "13800138000"


def _email(address: str = ADDRESS, delivery: uuid.UUID | None = None) -> Outgoing:
    return Outgoing(
        delivery_id=delivery or uuid.uuid4(),
        channel="email",
        recipient=Recipient("applicant", address, "w***@example.cn"),
        event_type="CaseAccepted",
        notice=Notice(SUBJECT, BODY),
    )


def _sms(phone: str = PHONE, delivery: uuid.UUID | None = None) -> Outgoing:
    return Outgoing(
        delivery_id=delivery or uuid.uuid4(),
        channel="sms",
        recipient=Recipient("applicant", phone, "138****8000"),
        event_type="CaseAccepted",
        notice=Notice(SUBJECT, BODY),
    )


def _hook(url: str, secret: str, delivery: uuid.UUID | None = None) -> Outgoing:
    body = json.dumps(
        {"type": "CaseAccepted", "case_number": "XF-2026-000123"}, ensure_ascii=False
    ).encode()
    return Outgoing(
        delivery_id=delivery or uuid.uuid4(),
        channel="webhook",
        recipient=Recipient("webhook:sub-1", url, "127.0.0.1"),
        event_type="CaseAccepted",
        body=body,
        secret=secret,
    )


def _exactly(err: pytest.ExceptionInfo[DeliveryError], kind: type[DeliveryError]) -> None:
    """``PermanentDeliveryError`` is a ``DeliveryError``: the class must be exactly ``kind``."""
    assert type(err.value) is kind, f"{type(err.value).__name__}: {err.value}"


# --------------------------------------------------------------------------- email


@pytest.fixture
async def mailbox(tmp_path: Path) -> AsyncIterator[Mailbox]:
    async with Mailbox(folder=tmp_path / "outbox") as box:
        yield box


@pytest.fixture
def email(mailbox: Mailbox) -> EmailChannel:
    return EmailChannel(mailbox.settings(timeout_seconds=2))


async def test_email_delivered_and_read_back(
    email: EmailChannel, mailbox: Mailbox, tmp_path: Path
) -> None:
    message = _email()
    sent = await email.send(message)
    assert sent == f"<{message.delivery_id}@caseflow>"
    got = mailbox.by_message_id(sent)
    assert got is not None and mailbox.messages == [got]
    assert got["Subject"] == SUBJECT
    assert got["To"].addresses[0].addr_spec == ADDRESS
    assert got["From"].addresses[0].display_name == "薛峰中心村政务服务站"
    assert got["X-Caseflow-Delivery-Id"] == str(message.delivery_id)
    assert got["X-Caseflow-Event-Type"] == "CaseAccepted"
    assert got["Content-Language"] == "zh-CN"
    part = got.get_body(("plain",))
    assert part is not None and part.get_content_charset() == "utf-8"
    # Text is base64 in canonical form (CRLF line ends, RFC 2045 6.8).
    assert part.get_content().replace("\r\n", "\n").rstrip("\n") == BODY
    # On the wire the Chinese subject is RFC 2047 encoded: plain ASCII headers.
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    raw_subject = next(
        line for line in eml.read_bytes().splitlines() if line.startswith(b"Subject:")
    )
    assert raw_subject.isascii() and b"=?utf-8?" in raw_subject


async def test_email_sent_twice_is_in_the_mailbox_once(
    email: EmailChannel, mailbox: Mailbox
) -> None:
    message = _email()
    first = await email.send(message)
    again = await email.send(message)
    assert first == again
    assert len(mailbox.messages) == 1
    assert mailbox.duplicates == 1 and mailbox.attempts == 2


async def test_email_connections_are_kept_for_the_next_messages(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    email = EmailChannel(mailbox.settings(timeout_seconds=2), pool_size=2)
    for _ in range(3):
        await email.send(_email(delivery=uuid.uuid4()))
    assert len(mailbox.messages) == 3
    assert email.connections_opened == 1, "one connection carried all three"
    # the server goes away and comes back: the kept connection is dead, the message goes
    # out on a new one in the same send
    port = mailbox.port
    await mailbox.stop()
    async with Mailbox(port=port, folder=tmp_path / "again") as again:
        message = _email(delivery=uuid.uuid4())
        assert await email.send(message) == f"<{message.delivery_id}@caseflow>"
        assert [m["Message-ID"] for m in again.messages] == [f"<{message.delivery_id}@caseflow>"]
    assert email.connections_opened == 2
    await email.aclose()


@pytest.mark.parametrize(
    ("code", "at", "kind"),
    [
        (451, "data", DeliveryError),
        (450, "rcpt", DeliveryError),
        (550, "rcpt", PermanentDeliveryError),
        (554, "data", PermanentDeliveryError),
    ],
)
async def test_email_replies_sorted(
    email: EmailChannel,
    mailbox: Mailbox,
    code: int,
    at: str,
    kind: type[DeliveryError],
) -> None:
    mailbox.fail_next(1, code, at="rcpt" if at == "rcpt" else "data")
    message = _email()
    with pytest.raises(DeliveryError) as err:
        await email.send(message)
    _exactly(err, kind)
    assert str(code) in str(err.value)
    assert ADDRESS not in str(err.value)
    assert mailbox.messages == []
    # The failure was for that one message: the next attempt goes through.
    assert await email.send(message) == f"<{message.delivery_id}@caseflow>"
    assert len(mailbox.messages) == 1


async def test_email_to_an_internationalised_domain_goes_the_smtputf8_way(
    email: EmailChannel, mailbox: Mailbox
) -> None:
    message = _email("wang@例子.中国")
    assert isinstance(email.build(message), EmailMessage)  # aiosmtplib asks for SMTPUTF8
    assert isinstance(email.build(_email()), bytes)  # the plain path for ASCII addresses
    sent = await email.send(message)
    got = mailbox.by_message_id(sent or "")
    assert got is not None  # its To header is 8-bit UTF-8 on the wire (SMTPUTF8)
    raw_to = str(got["To"]).encode("utf-8", "surrogateescape").decode("utf-8")
    assert raw_to == "wang@例子.中国"
    assert got["Subject"] == SUBJECT


@pytest.mark.parametrize("address", ["wang.fang@", "@example.cn", "wang fang@example.cn"])
async def test_email_to_no_address_is_permanent(
    email: EmailChannel, mailbox: Mailbox, address: str
) -> None:
    with pytest.raises(DeliveryError) as err:
        await email.send(_email(address))
    _exactly(err, PermanentDeliveryError)
    assert mailbox.attempts == 0


async def test_email_server_down_is_transient() -> None:
    channel = EmailChannel(
        Mailbox(port=free_port()).settings(timeout_seconds=1)  # never started
    )
    with pytest.raises(DeliveryError) as err:
        await channel.send(_email())
    _exactly(err, DeliveryError)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caseflow-sandbox")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_email_over_starttls_with_auth(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with Mailbox(tls_context=context, credentials=("station", "s3cret")) as box:
        good = box.settings(
            starttls=True, ca_file=cert, username="station", password="s3cret", timeout_seconds=2
        )
        message = _email()
        assert await EmailChannel(good).send(message) == f"<{message.delivery_id}@caseflow>"
        assert len(box.messages) == 1
        # A wrong password is a 535: no use trying again.
        with pytest.raises(DeliveryError) as err:
            await EmailChannel(good.model_copy(update={"password": SecretStr("wrong")})).send(
                _email()
            )
        _exactly(err, PermanentDeliveryError)
        # Without STARTTLS the server offers no AUTH: the settings must change.
        with pytest.raises(DeliveryError) as err:
            await EmailChannel(good.model_copy(update={"starttls": False})).send(_email())
        _exactly(err, PermanentDeliveryError)
        # The certificate is checked: without the CA file it is not trusted.
        with pytest.raises(DeliveryError) as err:
            await EmailChannel(good.model_copy(update={"ca_file": None})).send(_email())
        assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        assert len(box.messages) == 1


# --------------------------------------------------------------------------- SMS


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[SmsGateway]:
    async with SmsGateway(folder=tmp_path / "sms") as gw:
        yield gw


@pytest.fixture
async def sms(gateway: SmsGateway) -> AsyncIterator[SmsChannel]:
    channel = SmsChannel(gateway.settings(timeout_seconds=5))
    yield channel
    await channel.aclose()


async def test_sms_accepted_with_a_valid_signature(
    sms: SmsChannel, gateway: SmsGateway, tmp_path: Path
) -> None:
    message = _sms()
    serial = await sms.send(message)
    (got,) = gateway.received
    assert serial == got.serial_no and serial
    assert got.phone == "+8613800138000"
    assert got.text == BODY
    assert got.session_context == str(message.delivery_id)
    assert got.sign_name == "薛峰中心村政务服务站"
    (call,) = gateway.calls
    assert call.delivery_id_header == str(message.delivery_id)
    assert gateway.refusals == []
    (kept,) = (tmp_path / "sms").glob("*.json")
    assert json.loads(kept.read_text())["text"] == BODY


async def test_sms_sent_twice_is_sent_once(sms: SmsChannel, gateway: SmsGateway) -> None:
    message = _sms()
    first = await sms.send(message)
    again = await sms.send(message)
    assert first == again
    assert len(gateway.received) == 1 and gateway.duplicates == 1
    key = str(message.delivery_id)
    assert [c.session_context for c in gateway.calls] == [key, key]
    assert [c.duplicate for c in gateway.calls] == [False, True]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, DeliveryError),
        (503, DeliveryError),
        (429, DeliveryError),
        (408, DeliveryError),
        (400, PermanentDeliveryError),
        (404, PermanentDeliveryError),
    ],
)
async def test_sms_http_failures_sorted(
    sms: SmsChannel, gateway: SmsGateway, status: int, kind: type[DeliveryError]
) -> None:
    gateway.fail_next(1, status)
    with pytest.raises(DeliveryError) as err:
        await sms.send(_sms())
    _exactly(err, kind)
    assert gateway.received == []
    assert await sms.send(_sms())
    assert len(gateway.received) == 1


async def test_sms_hang_beyond_the_timeout_then_retry_is_not_sent_twice(
    gateway: SmsGateway,
) -> None:
    gateway.hang_next(1, seconds=0.8)
    message = _sms()
    sms = SmsChannel(gateway.settings(timeout_seconds=0.4))
    try:
        with pytest.raises(DeliveryError) as err:
            await sms.send(message)
        _exactly(err, DeliveryError)
        assert "0.4" in str(err.value)
        # The slow gateway still sends it; the answer was lost. The retry carries the same
        # SessionContext, so the gateway acknowledges it without sending it again.
        await gateway.wait_for(1, within=3)
        serial = await sms.send(message)
    finally:
        await sms.aclose()
    assert serial == gateway.received[0].serial_no
    assert len(gateway.received) == 1 and gateway.duplicates == 1


async def test_sms_wrong_secret_key_is_refused(gateway: SmsGateway) -> None:
    # Permanent: the same key fails every time, so retrying only delays the dead letter
    # that tells the operator; once the key is fixed the dead letter can be re-driven.
    channel = SmsChannel(gateway.settings(secret_key="not-the-key", timeout_seconds=0.4))
    try:
        with pytest.raises(DeliveryError) as err:
            await channel.send(_sms())
    finally:
        await channel.aclose()
    _exactly(err, PermanentDeliveryError)
    assert "AuthFailure.SignatureFailure" in str(err.value)
    assert gateway.refusals == ["AuthFailure.SignatureFailure"]
    assert gateway.received == [] and gateway.calls == []


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("LimitExceeded.PhoneNumberDailyLimit", DeliveryError),
        ("InternalError.Timeout", DeliveryError),
        ("FailedOperation.PhoneNumberInBlacklist", PermanentDeliveryError),
    ],
)
async def test_sms_error_codes_sorted(
    sms: SmsChannel, gateway: SmsGateway, code: str, kind: type[DeliveryError]
) -> None:
    gateway.refuse_next(1, code)
    with pytest.raises(DeliveryError) as err:
        await sms.send(_sms())
    _exactly(err, kind)
    assert code in str(err.value)


async def test_sms_wrong_number_is_permanent_and_masked(
    sms: SmsChannel, gateway: SmsGateway
) -> None:
    with pytest.raises(DeliveryError) as err:
        await sms.send(_sms(phone="1380013800"))  # ten digits
    _exactly(err, PermanentDeliveryError)
    assert "InvalidParameterValue.IncorrectPhoneNumber" in str(err.value)
    assert "1380013800" not in str(err.value)
    assert gateway.received == []


async def test_sms_gateway_down_is_transient() -> None:
    gateway = SmsGateway()
    gateway.url = f"http://127.0.0.1:{free_port()}"  # never started
    channel = SmsChannel(gateway.settings(timeout_seconds=0.4))
    try:
        with pytest.raises(DeliveryError) as err:
            await channel.send(_sms())
    finally:
        await channel.aclose()
    _exactly(err, DeliveryError)


# --------------------------------------------------------------------------- webhooks

SECRET = generate_secret()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as r:
        yield r


def _allowing(url: str) -> EgressPolicy:
    """The policy an operator sets to let webhooks reach the receiver at ``url`` (on
    loopback, which is otherwise refused)."""
    return EgressPolicy((AllowedNetwork.endpoint(url),))


@pytest.fixture
async def webhook(receiver: WebhookReceiver) -> AsyncIterator[WebhookChannel]:
    assert receiver.url is not None
    channel = WebhookChannel(timeout=5, policy=_allowing(receiver.url))
    yield channel
    await channel.aclose()


def test_generated_secrets() -> None:
    one, two = generate_secret(), generate_secret()
    assert one != two
    assert one.startswith("whsec_") and len(base64.b64decode(one.removeprefix("whsec_"))) == 32


async def test_webhook_signed_and_verified(
    webhook: WebhookChannel, receiver: WebhookReceiver
) -> None:
    message = _hook(receiver.endpoint("/caseflow"), SECRET)
    receipt = await webhook.send(message)
    (got,) = receiver.received
    assert receipt == got.receipt and receipt
    assert got.verified and got.path == "/caseflow"
    assert got.webhook_id == str(message.delivery_id)
    assert got.body == message.body
    assert abs(got.timestamp - datetime.now(UTC).timestamp()) < 5
    # The signature checked by hand: HMAC-SHA256 over "id.timestamp.body", key from whsec_.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{got.webhook_id}.{got.timestamp}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert got.signature == f"v1,{expected}"


async def test_webhook_with_a_wrong_secret_is_rejected(
    webhook: WebhookChannel, receiver: WebhookReceiver
) -> None:
    with pytest.raises(DeliveryError) as err:
        await webhook.send(_hook(receiver.endpoint(), generate_secret()))
    _exactly(err, PermanentDeliveryError)
    # The head reads the class; the exact status is for the operator's log.
    assert CLIENT_ERROR in str(err.value) and "401" not in str(err.value)
    assert err.value.detail is not None and "401" in err.value.detail
    assert receiver.rejected == 1 and receiver.received == []


async def test_webhook_sent_twice_is_received_once(
    webhook: WebhookChannel, receiver: WebhookReceiver
) -> None:
    message = _hook(receiver.endpoint(), SECRET)
    first = await webhook.send(message)
    again = await webhook.send(message)
    assert first == again
    assert len(receiver.received) == 1 and receiver.duplicates == 1
    assert [c.webhook_id for c in receiver.calls] == [str(message.delivery_id)] * 2


@pytest.mark.parametrize(
    ("status", "kind", "said"),
    [
        (500, DeliveryError, SERVER_ERROR),
        (502, DeliveryError, SERVER_ERROR),
        (429, DeliveryError, BUSY),
        (408, DeliveryError, BUSY),
        (410, ReceiverGone, GONE),
        (404, PermanentDeliveryError, CLIENT_ERROR),
        (400, PermanentDeliveryError, CLIENT_ERROR),
        (301, PermanentDeliveryError, REDIRECT),
    ],
)
async def test_webhook_answers_sorted(
    webhook: WebhookChannel,
    receiver: WebhookReceiver,
    status: int,
    kind: type[DeliveryError],
    said: str,
) -> None:
    receiver.fail_next(1, status)
    with pytest.raises(DeliveryError) as err:
        await webhook.send(_hook(receiver.endpoint(), SECRET))
    _exactly(err, kind)
    assert str(err.value) == f"127.0.0.1: {said}"
    assert err.value.detail is not None and str(status) in err.value.detail
    assert await webhook.send(_hook(receiver.endpoint(), SECRET))


async def test_webhook_hang_beyond_the_timeout_is_transient(receiver: WebhookReceiver) -> None:
    receiver.hang_next(1, seconds=0.8)
    assert receiver.url is not None
    webhook = WebhookChannel(timeout=0.4, policy=_allowing(receiver.url))
    try:
        with pytest.raises(DeliveryError) as err:
            await webhook.send(_hook(receiver.endpoint(), SECRET))
    finally:
        await webhook.aclose()
    _exactly(err, DeliveryError)


async def test_webhook_receiver_down_or_bad_url() -> None:
    down = f"http://127.0.0.1:{free_port()}/hooks"
    webhook = WebhookChannel(timeout=5, policy=_allowing(down))
    try:
        with pytest.raises(DeliveryError) as err:
            await webhook.send(_hook(down, SECRET))
        _exactly(err, DeliveryError)
        assert str(err.value) == f"127.0.0.1: {REFUSED}"
        with pytest.raises(DeliveryError) as err:
            await webhook.send(_hook("ftp://127.0.0.1/hooks", SECRET))
        _exactly(err, PermanentDeliveryError)
    finally:
        await webhook.aclose()


# --------------------------------------------------------------------------- first attempts


async def test_fail_first_attempt_of_picked_messages_once() -> None:
    from services.notify.sandbox import picked_for_failure

    share, seed = 0.25, 3
    keys = [uuid.uuid5(uuid.NAMESPACE_URL, f"delivery-{i}") for i in range(30)]
    async with Mailbox() as box, WebhookReceiver(SECRET) as hooks:
        box.fail_first_attempt_of(share, seed)
        hooks.fail_first_attempt_of(share, seed)
        email = EmailChannel(box.settings(timeout_seconds=2))
        assert hooks.url is not None
        webhook = WebhookChannel(timeout=2, policy=_allowing(hooks.url))
        try:
            for key in keys:
                for channel, message, idempotency_key, code in (
                    (email, _email(delivery=key), f"<{key}@caseflow>", "451"),
                    (webhook, _hook(hooks.endpoint(), SECRET, key), str(key), "500"),
                ):
                    if picked_for_failure(idempotency_key, share, seed):
                        with pytest.raises(DeliveryError) as err:
                            await channel.send(message)
                        _exactly(err, DeliveryError)  # worth trying again
                        # SMTP replies are shown (the operator's server); webhook
                        # answers only by class, the code in the operator's detail.
                        assert code in f"{err.value} {err.value.detail}"
                    assert await channel.send(message)  # taken
                    assert await channel.send(message)  # a repeat: acknowledged, not refused
        finally:
            await webhook.aclose()
    mails = sum(picked_for_failure(f"<{k}@caseflow>", share, seed) for k in keys)
    calls = sum(picked_for_failure(str(k), share, seed) for k in keys)
    assert 0 < mails < len(keys) and 0 < calls < len(keys)
    assert box.first_attempt_failures == mails
    assert len(box.messages) == len(keys) and box.duplicates == len(keys)
    assert box.attempts == 2 * len(keys) + mails
    assert hooks.first_attempt_failures == calls
    assert len(hooks.received) == len(keys) and hooks.duplicates == len(keys)
    assert len(hooks.calls) == 2 * len(keys) and hooks.rejected == 0
    # Deterministic per seed, about the share asked for, and checked.
    assert [picked_for_failure(str(k), share, seed) for k in keys] == [
        picked_for_failure(str(k), share, seed) for k in keys
    ]
    assert {k for k in keys if picked_for_failure(str(k), share, seed)} != {
        k for k in keys if picked_for_failure(str(k), share, seed + 1)
    }
    many = [str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))) for i in range(10_000)]
    assert 0.09 < sum(picked_for_failure(k, 0.1) for k in many) / len(many) < 0.11
    with pytest.raises(ValueError):
        box.fail_first_attempt_of(1.5)
    with pytest.raises(ValueError):
        hooks.fail_first_attempt_of(0.1, status=200)
