"""SMS through Tencent Cloud SMS: API 2021-01-11 ``SendSms``, JSON over HTTPS, signed
with TencentCloud API signature v3 (TC3-HMAC-SHA256).

One generic notice template is used: its single parameter is the rendered text, so the
wording stays in our templates. The delivery id goes in ``SessionContext`` (Tencent
echoes it in the answer and in delivery receipts) and in ``X-Caseflow-Delivery-Id``.
Tencent's gateway itself does not de-duplicate by ``SessionContext``: if an answer is
lost after the gateway accepted a message, the retry sends it again. A gateway or
relay in front of it that de-duplicates by that key (as the sandbox does) closes the
gap; without one, SMS is at least once.

Sorting of failures: HTTP 5xx, 408, 429, timeouts and refused connections, and the error
codes ``InternalError.*``, ``LimitExceeded.*``, ``RequestLimitExceeded.*`` and
``ServiceUnavailable.*`` are worth trying again; every other error code (a wrong number,
a wrong signature or key, an unapproved template) is not. Texts naming the number show
it masked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator

from services.notify.model import (
    ChannelName,
    DeliveryError,
    Outgoing,
    PermanentDeliveryError,
    Recipient,
)
from shared.domain.privacy import mask_text
from shared.settings import secret_from_file

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "sms"
ACTION = "SendSms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"
TRANSIENT_CODES = ("InternalError", "LimitExceeded", "RequestLimitExceeded", "ServiceUnavailable")
"""Tencent error codes (and their ``.``-suffixed sub-codes) worth trying again."""


class SmsSettings(BaseModel):
    """Tencent Cloud SMS account and template (``CASEFLOW_NOTIFY_SMS__SECRET_ID`` and so on)."""

    endpoint: HttpUrl = Field(
        default=HttpUrl("https://sms.tencentcloudapi.com"),
        description="the API endpoint (the sandbox gateway's URL locally)",
    )
    secret_id: str = Field(min_length=1)
    secret_key: SecretStr
    secret_key_file: Path | None = Field(
        default=None, description="the secret key read from this file (a compose secret)"
    )
    region: str = Field(default="ap-guangzhou", min_length=1)
    sdk_app_id: str = Field(min_length=1, description="SmsSdkAppId of the SMS application")
    sign_name: str = Field(min_length=1, description="approved signature (签名), e.g. the station")
    template_id: str = Field(
        min_length=1, description="approved template with one parameter: the notice text"
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=60, description="connect and read")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: Any) -> Any:
        return secret_from_file(data, "secret_key")


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    payload: bytes,
    method: str = "POST",
    canonical_uri: str = "/",
    canonical_query: str = "",
) -> str:
    """The ``Authorization`` header of a TencentCloud API 3.0 request (signature v3).

    ``headers`` are the signed headers (at least ``content-type`` and ``host``, exactly as
    sent); names and values are lower-cased and trimmed and sorted by name. ``payload``
    is the body exactly as sent. The date in the credential scope is the UTC date of
    ``timestamp`` (``X-TC-Timestamp``).
    """
    signed = sorted(
        (name.strip().lower(), value.strip().lower()) for name, value in headers.items()
    )
    signed_headers = ";".join(name for name, _ in signed)
    canonical_request = "\n".join(
        (
            method,
            canonical_uri,
            canonical_query,
            "".join(f"{name}:{value}\n" for name, value in signed),
            signed_headers,
            hashlib.sha256(payload).hexdigest(),
        )
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        (ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = f"TC3{secret_key}".encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def e164(phone: str) -> str:
    """A mainland mobile number as Tencent wants it: ``+8613812345678``."""
    digits = phone.replace(" ", "").replace("-", "")
    return digits if digits.startswith("+") else f"+86{digits}"


def is_transient(code: str) -> bool:
    """Whether a Tencent error code is worth trying again."""
    return code.split(".", 1)[0] in TRANSIENT_CODES


class SmsChannel:
    """Sends each notice as one SMS through Tencent Cloud's ``SendSms``."""

    name: ChannelName = "sms"

    def __init__(self, settings: SmsSettings) -> None:
        self.settings = settings
        self._url = str(settings.endpoint)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_seconds), follow_redirects=False
        )

    def request_body(self, message: Outgoing) -> dict[str, Any]:
        """The ``SendSms`` parameters for ``message``."""
        if message.notice is None:
            raise PermanentDeliveryError("an SMS needs a rendered notice")
        s = self.settings
        return {
            "PhoneNumberSet": [e164(message.recipient.address)],
            "SmsSdkAppId": s.sdk_app_id,
            "SignName": s.sign_name,
            "TemplateId": s.template_id,
            "TemplateParamSet": [message.notice.body],
            "SessionContext": str(message.delivery_id),
        }

    async def send(self, message: Outgoing) -> str | None:
        """One ``SendSms`` call; returns the gateway's ``SerialNo``."""
        s = self.settings
        body = json.dumps(self.request_body(message), ensure_ascii=False).encode()
        timestamp = int(time.time())
        request = self._client.build_request(
            "POST",
            self._url,
            content=body,
            headers={
                "Content-Type": CONTENT_TYPE,
                "X-TC-Action": ACTION,
                "X-TC-Version": VERSION,
                "X-TC-Timestamp": str(timestamp),
                "X-TC-Region": s.region,
                "X-Caseflow-Delivery-Id": str(message.delivery_id),
            },
        )
        request.headers["Authorization"] = tc3_authorization(
            secret_id=s.secret_id,
            secret_key=s.secret_key.get_secret_value(),
            service=SERVICE,
            timestamp=timestamp,
            headers={
                "content-type": CONTENT_TYPE,
                "host": request.headers["host"],
                "x-tc-action": ACTION,
            },
            payload=body,
        )
        try:
            response = await self._client.send(request)
        except httpx.TimeoutException as err:
            raise DeliveryError(
                f"SMS gateway: no answer within {s.timeout_seconds:g} s ({type(err).__name__})"
            ) from None
        except httpx.HTTPError as err:
            raise DeliveryError(f"SMS gateway unreachable: {type(err).__name__}") from None
        return self._serial_no(response, message.recipient)

    def _serial_no(self, response: httpx.Response, recipient: Recipient) -> str | None:
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise DeliveryError(f"SMS gateway answered HTTP {status}")
        if not 200 <= status < 300:
            raise PermanentDeliveryError(f"SMS gateway answered HTTP {status}")
        try:
            answer = response.json()["Response"]
            error = answer.get("Error")
            statuses = answer.get("SendStatusSet") or []
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DeliveryError("SMS gateway answered something that is not its JSON") from None
        if error:
            raise self._refusal(str(error.get("Code")), str(error.get("Message", "")), recipient)
        if not statuses:
            raise DeliveryError("SMS gateway answered without a send status")
        first = statuses[0]
        code = str(first.get("Code"))
        if code != "Ok":
            raise self._refusal(code, str(first.get("Message", "")), recipient)
        serial = first.get("SerialNo")
        return str(serial) if serial else None

    @staticmethod
    def _refusal(code: str, text: str, recipient: Recipient) -> DeliveryError:
        text = text.replace(e164(recipient.address), recipient.masked)
        text = mask_text(text.replace(recipient.address, recipient.masked))
        kind = DeliveryError if is_transient(code) else PermanentDeliveryError
        return kind(f"SMS gateway refused: {code}: {text}")

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
