"""Staff sign-in at the HTTP edge: the FastAPI dependencies that turn an ``Authorization:
Bearer`` token into a :class:`SignedInStaff` (``StaffDep``), refuse a role (``require_role``)
and declare the bearer scheme in OpenAPI. The tokens, keys and claims themselves are
``shared.adapters.auth``'s, free of the web framework."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.adapters.auth import (
    REALM,
    AuthConfigError,
    ClaimsRefused,
    InvalidToken,
    KeysUnavailable,
    Role,
    SignedInStaff,
    TokenVerifier,
    check_claims,
    with_article,
)
from shared.domain.orgs import Organisations, load_organisations

log = structlog.get_logger("caseflow.auth")

T = TypeVar("T")


def _unauthorized(message: str, *, invalid: bool) -> HTTPException:
    challenge = f'Bearer realm="{REALM}"'
    if invalid:  # RFC 6750: say why, in a header-safe form
        description = message.encode("ascii", "replace").decode().replace('"', "'")
        challenge += f', error="invalid_token", error_description="{description}"'
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


_build_lock = threading.Lock()
_registry_lock = threading.Lock()


def _kept_on_state(state: Any, name: str, lock: threading.Lock, build: Callable[[], T]) -> T:
    """``state.<name>``, built by ``build`` on first use and kept there (once, whichever
    thread asks first); when ``build`` raises, nothing is kept and the next call tries again."""
    found: T | None = getattr(state, name, None)
    if found is not None:
        return found
    with lock:
        found = getattr(state, name, None)
        if found is None:
            found = build()
            setattr(state, name, found)
    return found


def get_organisations(request: Request) -> Organisations:
    """``app.state.organisations``, or loaded on first use from the runtime's data folder
    (the packaged data for an app without a runtime)."""
    state = request.app.state

    def load() -> Organisations:
        runtime = getattr(state, "runtime", None)
        return load_organisations(getattr(getattr(runtime, "settings", None), "data_dir", None))

    return _kept_on_state(state, "organisations", _registry_lock, load)


def get_verifier(request: Request) -> TokenVerifier:
    """``app.state.verifier``, built on first use from ``app.state.runtime.settings``.

    Without a usable key every authenticated request answers 503 (and the log says which
    setting to fix); the verifier is not cached then, so fixing the key needs no restart.
    """
    state = request.app.state

    def build() -> TokenVerifier:
        try:
            return TokenVerifier.from_settings(state.runtime.settings)
        except AuthConfigError as err:
            log.error("staff sign-in is not configured", error=str(err))
            raise HTTPException(
                503,
                "signing in doesn't work on this service yet: it has no key to check "
                "tokens with; tell the administrator",
            ) from None

    return _kept_on_state(state, "verifier", _build_lock, build)


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="staff token",
    description="`caseflow token --user U --role R --org O` prints one (embedded default)",
)
"""Declares the bearer scheme in OpenAPI (the Authorize button of ``/docs``)."""


async def current_staff(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> SignedInStaff:
    """FastAPI dependency: the member of staff named by the ``Authorization: Bearer`` token.

    401 (problem+json, ``WWW-Authenticate: Bearer``) when the token is missing, damaged,
    expired, for another audience or signed by an unknown key, or names an organisation
    caseflow doesn't know; 403 when its role doesn't suit the organisation or it carries a
    special permission the registry doesn't grant that role (:func:`check_claims`); 503
    when the keys can't be fetched. The staff member is also left on
    ``request.state.staff``.
    """
    if credentials is None or not credentials.credentials:
        message = (
            "sign in first: send your token as 'Authorization: Bearer <token>'"
            if request.headers.get("authorization")
            else "sign in first: this needs a staff token (Authorization: Bearer <token>)"
        )
        raise _unauthorized(message, invalid=False)
    token = credentials.credentials
    verifier = get_verifier(request)
    try:
        staff = await verifier.averify(token)
    except InvalidToken as err:
        log.info("token refused", reason=err.reason)
        raise _unauthorized(str(err), invalid=True) from None
    except KeysUnavailable as err:
        log.error("can't fetch the keys to check tokens", error=str(err))
        raise HTTPException(
            503,
            "can't check your sign-in right now; please try again in a minute",
            headers={"Retry-After": "60"},
        ) from None
    try:
        check_claims(staff, get_organisations(request))
    except ClaimsRefused as err:
        log.info("token refused", reason=err.reason, org=staff.org, role=staff.role.value)
        if err.status == 401:
            raise _unauthorized(str(err), invalid=True) from None
        raise HTTPException(err.status, str(err)) from None
    request.state.staff = staff
    return staff


StaffDep = Annotated[SignedInStaff, Depends(current_staff)]


def require_role(staff: SignedInStaff, *roles: Role) -> None:
    """Raise 403 (problem+json) unless ``staff`` has one of ``roles``."""
    if staff.role in roles:
        return
    wanted = " or ".join(with_article(r.label) for r in roles) or "a role nobody has"
    raise HTTPException(
        403, f"only {wanted} can do this; you are signed in as {with_article(staff.role.label)}"
    )
