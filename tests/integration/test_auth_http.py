"""``StaffDep`` over real HTTP: a small app served by uvicorn, keys from a real JWKS server
(``http.server`` in a thread) or a key file, and problem+json answers on refusal."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from services.intake.settings import IntakeSettings
from shared.adapters.auth import (
    KeyPair,
    Role,
    SignedInStaff,
    SigningKey,
    TokenVerifier,
    ensure_key_pair,
    issue_token,
    jwks,
)
from shared.devtools import httpcalls
from shared.web import http
from shared.web.auth import StaffDep, require_role
from tests.services import serve

CLERK = SignedInStaff(user="li.ming", role=Role.window_clerk, org="xuefeng_station", name="李明")
HEAD = SignedInStaff(user="zhao", role=Role.station_head, org="xuefeng_station")


class JwksServer:
    """A real HTTP server publishing a JWKS document that the test can change or break."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.failing:
                    self.send_error(503)
                    return
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, *keys: SigningKey) -> None:
        self.document = jwks(k.private_key.public_key() for k in keys)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_app(
    settings: IntakeSettings | None = None, verifier: TokenVerifier | None = None
) -> FastAPI:
    """A tiny service: ``/me`` for anyone signed in, ``/head-only`` for station heads."""
    app = FastAPI()
    http.install(app)
    if settings is not None:  # as in a service: the verifier is built from runtime settings
        app.state.runtime = SimpleNamespace(settings=settings)
    if verifier is not None:
        app.state.verifier = verifier

    @app.get("/me")
    async def me(staff: StaffDep) -> dict[str, str | None]:
        return {"user": staff.user, "role": staff.role, "org": staff.org, "name": staff.name}

    @app.post("/head-only")
    async def head_only(staff: StaffDep) -> dict[str, str]:
        require_role(staff, Role.station_head, Role.reviewer)
        return {"done_by": staff.user}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def key_a(tmp_path: Path) -> SigningKey:
    ensure_key_pair(tmp_path / "a")
    return SigningKey.load(tmp_path / "a")


@pytest.fixture
def key_b(tmp_path: Path) -> SigningKey:
    ensure_key_pair(tmp_path / "b")
    return SigningKey.load(tmp_path / "b")


@pytest.fixture
def idp(key_a: SigningKey) -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.publish(key_a)
        yield server


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_jwks_token_is_accepted_and_keys_are_fetched_once(
    tmp_path: Path, idp: JwksServer, key_a: SigningKey
) -> None:
    settings = IntakeSettings(jwt_public_key_file=tmp_path / "none.pem", jwks_url=idp.url)
    token = issue_token(CLERK, key_a)
    with serve(make_app(settings)) as base, capture_logs() as logs:
        for _ in range(5):
            response = httpcalls.get(f"{base}/me", headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json() == {
                "user": "li.ming",
                "role": "window_clerk",
                "org": "xuefeng_station",
                "name": "李明",
            }
    assert idp.requests == 1
    assert token not in repr(logs)


def test_missing_token_is_401_problem_with_a_bearer_challenge(idp: JwksServer) -> None:
    with serve(make_app(verifier=TokenVerifier(jwks_url=idp.url))) as base:
        missing = httpcalls.get(f"{base}/me")
        basic = httpcalls.get(f"{base}/me", headers={"Authorization": "Basic dTpw"})
    body = assert_problem(missing, 401)
    assert body["title"] == "Sign-in needed"
    assert body["detail"].startswith("sign in first")
    assert missing.headers["www-authenticate"] == 'Bearer realm="caseflow"'
    assert assert_problem(basic, 401)["detail"].startswith("sign in first")
    assert basic.headers["www-authenticate"].startswith("Bearer")
    assert idp.requests == 0  # nothing to check, nothing fetched


def test_expired_and_forged_tokens_are_401_with_reasons(idp: JwksServer, key_a: SigningKey) -> None:
    expired = issue_token(
        CLERK, key_a, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(days=1)
    )
    other_audience = issue_token(CLERK, key_a, audience="payroll")
    with serve(make_app(verifier=TokenVerifier(jwks_url=idp.url))) as base, capture_logs() as logs:
        late = httpcalls.get(f"{base}/me", headers=bearer(expired))
        elsewhere = httpcalls.get(f"{base}/me", headers=bearer(other_audience))
        unsigned = other_audience.rsplit(".", 1)[0]  # signature cut off on the way
        damaged = httpcalls.get(f"{base}/me", headers=bearer(unsigned))
    assert assert_problem(late, 401)["detail"] == "sign in again: your token expired"
    challenge = late.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="caseflow", error="invalid_token"')
    assert "your token expired" in challenge
    assert "another system" in assert_problem(elsewhere, 401)["detail"]
    assert "damaged" in assert_problem(damaged, 401)["detail"]
    assert expired not in repr(logs) and unsigned not in repr(logs)


def test_rotated_key_is_fetched_and_unknown_kids_are_rate_limited(
    idp: JwksServer, key_a: SigningKey, key_b: SigningKey, tmp_path: Path
) -> None:
    quick = TokenVerifier(jwks_url=idp.url, jwks_cooldown=0)
    with serve(make_app(verifier=quick)) as base:
        assert (
            httpcalls.get(f"{base}/me", headers=bearer(issue_token(CLERK, key_a))).status_code
            == 200
        )
        early_b = httpcalls.get(f"{base}/me", headers=bearer(issue_token(CLERK, key_b)))
        assert "doesn't know" in assert_problem(early_b, 401)["detail"]
        assert idp.requests == 2  # the unknown kid caused one refetch
        idp.publish(key_a, key_b)  # the identity provider rotates in a new key
        late_b = httpcalls.get(f"{base}/me", headers=bearer(issue_token(CLERK, key_b)))
        assert late_b.status_code == 200, late_b.text
        assert idp.requests == 3

    ensure_key_pair(tmp_path / "stranger")
    stranger = issue_token(CLERK, SigningKey.load(tmp_path / "stranger"))
    careful = TokenVerifier(jwks_url=idp.url, jwks_cooldown=300)
    before = idp.requests
    with serve(make_app(verifier=careful)) as base:
        for _ in range(5):
            assert_problem(httpcalls.get(f"{base}/me", headers=bearer(stranger)), 401)
    assert idp.requests == before + 1  # made-up kids don't hammer the identity provider


def test_unreachable_jwks_is_503_but_known_keys_survive_an_outage(
    idp: JwksServer, key_a: SigningKey
) -> None:
    token = issue_token(CLERK, key_a)
    idp.failing = True
    with serve(make_app(verifier=TokenVerifier(jwks_url=idp.url, jwks_cooldown=0))) as base:
        down = httpcalls.get(f"{base}/me", headers=bearer(token))
    assert "try again" in assert_problem(down, 503)["detail"]

    idp.failing = False
    short_lived = TokenVerifier(jwks_url=idp.url, jwks_lifespan=0.05, jwks_cooldown=0)
    with serve(make_app(verifier=short_lived)) as base:
        assert httpcalls.get(f"{base}/me", headers=bearer(token)).status_code == 200
        idp.failing = True
        time.sleep(0.1)  # the cached set is stale and the refetch fails
        response = httpcalls.get(f"{base}/me", headers=bearer(token))
        assert response.status_code == 200, response.text
    assert short_lived.jwks is not None and short_lived.jwks.fetches == 1


def test_wrong_role_is_403_problem(idp: JwksServer, key_a: SigningKey) -> None:
    with serve(make_app(verifier=TokenVerifier(jwks_url=idp.url))) as base:
        refused = httpcalls.post(f"{base}/head-only", headers=bearer(issue_token(CLERK, key_a)))
        allowed = httpcalls.post(f"{base}/head-only", headers=bearer(issue_token(HEAD, key_a)))
    body = assert_problem(refused, 403)
    assert body["title"] == "Not allowed"
    assert body["detail"] == (
        "only a station head or a reviewer can do this; you are signed in as a window clerk"
    )
    assert allowed.status_code == 200 and allowed.json() == {"done_by": "zhao"}


def test_key_file_verifier_is_built_lazily_from_settings(tmp_path: Path) -> None:
    pair = KeyPair(tmp_path / "keys")
    app = make_app(IntakeSettings(jwt_public_key_file=pair.public_path))
    with serve(app) as base, capture_logs() as logs:
        ensure_key_pair(tmp_path / "elsewhere")
        token = issue_token(CLERK, SigningKey.load(tmp_path / "elsewhere"))
        unconfigured = httpcalls.get(f"{base}/me", headers=bearer(token))
        body = assert_problem(unconfigured, 503)
        assert "no key to check tokens" in body["detail"]
        logged = [e for e in logs if e["event"] == "staff sign-in is not configured"]
        assert "CASEFLOW_INTAKE_JWT_PUBLIC_KEY_FILE" in logged[0]["error"]

        ensure_key_pair(pair.directory)  # the operator runs `caseflow keys init`; no restart
        token = issue_token(CLERK, SigningKey.load(pair.directory))
        response = httpcalls.get(f"{base}/me", headers=bearer(token))
        assert response.status_code == 200, response.text
    assert isinstance(app.state.verifier, TokenVerifier)


def test_openapi_declares_the_bearer_scheme(idp: JwksServer) -> None:
    with serve(make_app(verifier=TokenVerifier(jwks_url=idp.url))) as base:
        schema = httpcalls.get(f"{base}/openapi.json").json()
    (scheme,) = schema["components"]["securitySchemes"].values()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert schema["paths"]["/me"]["get"]["security"]
