"""Production sign-in: OpenID Connect's authorization code flow with PKCE.

The console sends the member to the city's identity provider and gets back a code, which
it exchanges (with its client secret and the PKCE verifier) for an ID token and an access
token. The ID token says who signed in to *this* client (issuer, audience = client id,
nonce); the access token is what the APIs take, and the console checks it exactly as they
do (:class:`shared.adapters.auth.TokenVerifier`: issuer, audience, Ed25519 key from the
JWKS, the caseflow claims ``role`` and ``org``), so a member whose token the APIs would
refuse never gets a session.

Written with httpx and PyJWT, which caseflow already uses, rather than a client library:
the flow is three requests, and Authlib's httpx integration is deprecated in its current
release."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from services.console.settings import ConsoleSettings
from shared.adapters.auth import InvalidToken, KeysUnavailable, SignedInStaff, TokenVerifier

_UNREACHABLE = "the identity provider can't be reached ({})"

PENDING_SECONDS = 600
"""How long a sign-in may take at the identity provider."""


class SignInFailed(Exception):
    """The provider's answer can't be trusted or used; the words are for the member."""


@dataclass(frozen=True)
class Pending:
    nonce: str
    verifier: str
    started: float


@dataclass(frozen=True)
class SignedIn:
    token: str
    staff: SignedInStaff
    expires: int | None


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Oidc:
    """One configured provider; the sign-ins under way, by their ``state``."""

    def __init__(self, settings: ConsoleSettings) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id and settings.public_url
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.secret = (
            settings.oidc_client_secret_file.read_text(encoding="utf-8").strip()
            if settings.oidc_client_secret_file
            else None
        )
        self.redirect_uri = settings.public_url.rstrip("/") + "/sign-in/callback"
        self.scope = settings.oidc_scope
        self.settings = settings
        self._http = httpx.AsyncClient(timeout=10, follow_redirects=False, trust_env=False)
        self._config: dict[str, Any] | None = None
        self._verifier: TokenVerifier | None = None
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()

    async def _discover(self) -> dict[str, Any]:
        if self._config is None:
            try:
                answer = await self._http.get(f"{self.issuer}/.well-known/openid-configuration")
                answer.raise_for_status()
                config = answer.json()
            except (httpx.HTTPError, ValueError) as err:
                raise SignInFailed(
                    f"the identity provider can't be reached ({type(err).__name__})"
                ) from None
            if config.get("issuer", "").rstrip("/") != self.issuer:
                raise SignInFailed("the identity provider names another issuer")
            self._config = config
        return self._config

    async def start(self) -> tuple[str, str]:
        """Where to send the member, and the ``state`` to remember in their browser."""
        config = await self._discover()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        now = time.monotonic()
        with self._lock:
            for key in [k for k, p in self._pending.items() if now - p.started > PENDING_SECONDS]:
                del self._pending[key]
            self._pending[state] = Pending(nonce, verifier, now)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": _challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{config['authorization_endpoint']}?{query}", state

    async def finish(self, state: str, code: str) -> SignedIn:
        """The member the provider signed in, from its ``code`` for ``state``."""
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None or time.monotonic() - pending.started > PENDING_SECONDS:
            raise SignInFailed("this sign-in is unknown or took too long; please start again")
        config = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": pending.verifier,
            "client_id": self.client_id,
        }
        try:
            if self.secret:  # client_secret_basic
                auth = httpx.BasicAuth(self.client_id, self.secret)
                answer = await self._http.post(config["token_endpoint"], data=form, auth=auth)
            else:  # a public client: PKCE alone
                answer = await self._http.post(config["token_endpoint"], data=form)
            tokens = answer.json()
        except (httpx.HTTPError, ValueError) as err:
            raise SignInFailed(
                f"the identity provider can't be reached ({type(err).__name__})"
            ) from None
        if answer.status_code != 200 or "access_token" not in tokens or "id_token" not in tokens:
            raise SignInFailed(f"the identity provider refused the sign-in ({answer.status_code})")
        await self._check_id_token(config, str(tokens["id_token"]), pending.nonce)
        access = str(tokens["access_token"])
        try:
            staff = await asyncio.to_thread(self._access_verifier(config).verify, access)
        except (InvalidToken, KeysUnavailable) as err:
            raise SignInFailed(
                f"the caseflow services would not accept this sign-in: {err}"
            ) from None
        expires = jwt.decode(access, options={"verify_signature": False}).get("exp")
        return SignedIn(access, staff, int(expires) if expires else None)

    async def _check_id_token(self, config: dict[str, Any], id_token: str, nonce: str) -> None:
        try:
            keys = (await self._http.get(config["jwks_uri"])).json()
            kid = jwt.get_unverified_header(id_token).get("kid")
            found = [k for k in jwt.PyJWKSet.from_dict(keys).keys if kid is None or k.key_id == kid]
            if not found:
                raise SignInFailed("the ID token's key is not the provider's")
            claims = jwt.decode(
                id_token,
                found[0],
                algorithms=["EdDSA", "RS256", "ES256", "PS256"],
                audience=self.client_id,
                issuer=config["issuer"],
                options={"require": ["exp", "iat", "sub", "nonce"]},
            )
        except SignInFailed:
            raise
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as err:
            raise SignInFailed(f"the ID token can't be trusted ({type(err).__name__})") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInFailed("the ID token is not for this sign-in")

    def _access_verifier(self, config: dict[str, Any]) -> TokenVerifier:
        if self._verifier is None:
            self._verifier = TokenVerifier(
                jwks_url=self.settings.jwks_url or config["jwks_uri"],
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
            )
        return self._verifier

    async def aclose(self) -> None:
        await self._http.aclose()
