"""A small OpenID Connect provider for the console's sign-in tests: discovery, a sign-in
page listing its users, the token endpoint (authorization code with PKCE, a client
secret) and its keys. It signs the ID token and the caseflow access token with the test
run's key pair, which the services check tokens against, as a city's provider would sign
with the key the services' JWKS URL names."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

import jwt
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shared.adapters.auth import SignedInStaff, SigningKey, issue_token, jwks


@dataclass
class Provider:
    key: SigningKey
    client_id: str
    secret: str
    users: dict[str, SignedInStaff]
    url: str = ""
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    """Why token requests were refused, for the test to read."""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            return {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }

        @app.get("/jwks")
        async def keys() -> dict[str, Any]:
            return jwks([self.key.private_key.public_key()])

        @app.get("/authorize")
        async def authorize(request: Request) -> Response:
            query = dict(request.query_params)
            if (
                query.get("client_id") != self.client_id
                or query.get("code_challenge_method") != "S256"
            ):
                return HTMLResponse("bad request", status_code=400)
            buttons = "".join(
                f'<form method="post" action="/login"><input type="hidden" name="user" value="{u}">'
                + "".join(
                    f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
                    for k, v in query.items()
                )
                + f"<button>{html.escape(s.name or u)} ({u})</button></form>"
                for u, s in self.users.items()
            )
            return HTMLResponse(
                f"<!doctype html><title>城市统一身份认证</title><h1>城市统一身份认证</h1>{buttons}"
            )

        @app.post("/login")
        async def login(request: Request) -> Response:
            form = {k: str(v) for k, v in (await request.form()).items()}
            code = secrets.token_urlsafe(16)
            self.codes[code] = form | {"at": time.time()}
            back = urlencode({"code": code, "state": form["state"]})
            return RedirectResponse(f"{form['redirect_uri']}?{back}", status_code=303)

        @app.post("/token")
        async def token(
            request: Request,
            code: Annotated[str, Form()],
            redirect_uri: Annotated[str, Form()],
            code_verifier: Annotated[str, Form()],
        ) -> Response:
            expected = (
                "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
            )
            grant = self.codes.pop(code, None)
            digest = hashlib.sha256(code_verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            why = (
                "client"
                if request.headers.get("authorization") != expected
                else "code"
                if grant is None
                else "redirect_uri"
                if grant["redirect_uri"] != redirect_uri
                else "pkce"
                if grant["code_challenge"] != challenge
                else None
            )
            if why or grant is None:
                self.refused.append(str(why))
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            staff = self.users[grant["user"]]
            now = int(time.time())
            id_token = jwt.encode(
                {
                    "iss": self.url,
                    "aud": self.client_id,
                    "sub": staff.user,
                    "nonce": grant["nonce"],
                    "iat": now,
                    "exp": now + 300,
                    "name": staff.name,
                },
                self.key.private_key,
                algorithm="EdDSA",
                headers={"kid": self.key.kid},
            )
            access = issue_token(staff, self.key)  # the claims the caseflow APIs take
            return JSONResponse(
                {
                    "access_token": access,
                    "id_token": id_token,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }
            )

        return app
