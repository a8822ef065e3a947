"""TC3-HMAC-SHA256 (TencentCloud API signature v3): the signer against Tencent's documented
example and an independent step-by-step implementation, and the sandbox's check."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.notify.channels.sms import (
    ACTION,
    CONTENT_TYPE,
    e164,
    is_transient,
    tc3_authorization,
)
from services.notify.sandbox import check_tc3

# Tencent's "Signature v3" page: CVM DescribeInstances, POST, signing content-type and host.
DOC_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
DOC_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_BODY = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)
DOC_AUTHORIZATION = (
    "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
    "SignedHeaders=content-type;host, "
    "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
)


def test_documented_example() -> None:
    # 1551113065 is 2019-02-26 00:44 in Beijing: the scope must use the UTC date.
    assert (
        tc3_authorization(
            secret_id=DOC_ID,
            secret_key=DOC_KEY,
            service="cvm",
            timestamp=1551113065,
            headers={"Content-Type": CONTENT_TYPE, "Host": "cvm.tencentcloudapi.com"},
            payload=DOC_BODY,
        )
        == DOC_AUTHORIZATION
    )
    assert (
        hashlib.sha256(DOC_BODY).hexdigest()
        == "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )


def _straightforward(secret_id: str, key: str, host: str, ts: int, body: bytes) -> str:
    """Tencent's four steps written out for SendSms, signing content-type, host, x-tc-action."""
    date = time.strftime("%Y-%m-%d", time.gmtime(ts))
    canonical = (
        "POST\n/\n\n"
        f"content-type:application/json; charset=utf-8\nhost:{host}\nx-tc-action:sendsms\n\n"
        "content-type;host;x-tc-action\n" + hashlib.sha256(body).hexdigest()
    )
    scope = date + "/sms/tc3_request"
    to_sign = f"TC3-HMAC-SHA256\n{ts}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()

    def mac(k: bytes, m: str) -> bytes:
        return hmac.new(k, m.encode("utf-8"), hashlib.sha256).digest()

    signing = mac(mac(mac(("TC3" + key).encode(), date), "sms"), "tc3_request")
    signature = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host;x-tc-action, Signature={signature}"
    )


SMS_BODY = json.dumps(
    {
        "PhoneNumberSet": ["+8613800138000"],
        "SmsSdkAppId": "1400000000",
        "SignName": "薛峰中心村政务服务站",
        "TemplateId": "1000001",
        "TemplateParamSet": ["您的申请已受理，受理编号 XF-2026-000123。"],
        "SessionContext": "0d9c6c0e-3c43-5a53-9a0e-2f3c1f6a0b11",
    },
    ensure_ascii=False,
).encode()


@pytest.mark.parametrize("timestamp", [1767225599, 1767225600, 1780000000])
def test_send_sms_matches_the_steps_written_out(timestamp: int) -> None:
    host = "sms.tencentcloudapi.com"
    signed = tc3_authorization(
        secret_id="AKIDexample",
        secret_key="key-example",
        service="sms",
        timestamp=timestamp,
        headers={"content-type": CONTENT_TYPE, "host": host, "x-tc-action": ACTION},
        payload=SMS_BODY,
    )
    assert signed == _straightforward("AKIDexample", "key-example", host, timestamp, SMS_BODY)


def test_every_input_counts() -> None:
    base: dict[str, Any] = {
        "secret_id": "AKIDexample",
        "secret_key": "key-example",
        "service": "sms",
        "timestamp": 1780000000,
        "headers": {"content-type": CONTENT_TYPE, "host": "h", "x-tc-action": ACTION},
        "payload": SMS_BODY,
    }
    signature = tc3_authorization(**base).rsplit("=", 1)[1]
    changes: list[dict[str, Any]] = [
        {"secret_key": "key-examplf"},
        {"service": "cvm"},
        {"timestamp": 1780000001},
        {"headers": {"content-type": CONTENT_TYPE, "host": "h2", "x-tc-action": ACTION}},
        {"payload": SMS_BODY + b" "},
    ]
    for change in changes:
        other = tc3_authorization(**(base | change)).rsplit("=", 1)[1]
        assert other != signature, change


def _signed_request(key: str, ts: int, body: bytes = SMS_BODY) -> httpx.Request:
    request = httpx.Request(
        "POST",
        "http://127.0.0.1:9/",
        content=body,
        headers={"Content-Type": CONTENT_TYPE, "X-TC-Action": ACTION, "X-TC-Timestamp": str(ts)},
    )
    request.headers["Authorization"] = tc3_authorization(
        secret_id="AKIDexample",
        secret_key=key,
        service="sms",
        timestamp=ts,
        headers={
            "content-type": CONTENT_TYPE,
            "host": request.headers["host"],
            "x-tc-action": ACTION,
        },
        payload=body,
    )
    return request


def test_the_sandbox_check() -> None:
    creds = {"AKIDexample": "key-example"}
    now = 1780000000
    ok = _signed_request("key-example", now)
    assert check_tc3(ok.headers, SMS_BODY, creds, now=now + 299) is None
    assert check_tc3(ok.headers, SMS_BODY + b" ", creds, now=now) == "AuthFailure.SignatureFailure"
    wrong = _signed_request("key-wrong", now)
    assert check_tc3(wrong.headers, SMS_BODY, creds, now=now) == "AuthFailure.SignatureFailure"
    assert check_tc3(ok.headers, SMS_BODY, {"AKIDother": "k"}, now=now) == (
        "AuthFailure.SecretIdNotFound"
    )
    assert check_tc3(ok.headers, SMS_BODY, creds, now=now + 301) == "AuthFailure.SignatureExpire"
    unsigned = httpx.Request("POST", "http://127.0.0.1:9/", content=SMS_BODY)
    assert check_tc3(unsigned.headers, SMS_BODY, creds, now=now) == (
        "AuthFailure.InvalidAuthorization"
    )
    # The date in the scope is part of what is signed: yesterday's scope fails.
    shifted = ok.headers["authorization"].replace(
        datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d"), "2020-01-01"
    )
    headers = httpx.Headers(ok.headers)
    headers["authorization"] = shifted
    assert check_tc3(headers, SMS_BODY, creds, now=now) == "AuthFailure.SignatureFailure"


def test_numbers_and_codes() -> None:
    assert e164("13800138000") == "+8613800138000"
    assert e164("+8613800138000") == "+8613800138000"
    assert e164("138 0013-8000") == "+8613800138000"
    assert is_transient("LimitExceeded.PhoneNumberDailyLimit")
    assert is_transient("InternalError.Timeout")
    assert is_transient("RequestLimitExceeded")
    assert not is_transient("InvalidParameterValue.IncorrectPhoneNumber")
    assert not is_transient("AuthFailure.SignatureFailure")
    assert not is_transient("FailedOperation.PhoneNumberInBlacklist")
