"""The console's composition root: pages for each role, over the three APIs.

Why a fourth service rather than pages in one of the three: the console holds sessions
and nothing else — every case it shows and every act it records goes through the APIs with
the member's own token, so what a member may see and do is decided in one place, the APIs,
exactly as for curl or an integrator. It can be restarted, scaled and placed (e.g. at the
station's edge) apart from the engine, and an outage of one API leaves the others' pages
working."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.console import i18n, pages
from services.console.oidc import PENDING_SECONDS, Oidc, SignInFailed
from services.console.sessions import COOKIE, Session, Sessions
from services.console.settings import ConsoleSettings
from services.console.upstream import Apis, Refused, SignInAgain, Unavailable
from shared.adapters.auth import SignedInStaff
from shared.domain.catalogue import load_catalogue
from shared.domain.moments import BACKFILL_PERMISSION
from shared.domain.orgs import load_organisations
from shared.domain.workflow.definitions import load_workflows

HERE = Path(__file__).parent

SIGN_IN_COOKIE = "caseflow_sign_in"
"""The OpenID Connect ``state`` of a sign-in under way, in the browser that started it."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def create_app(settings: ConsoleSettings, *, apis: Apis | None = None) -> FastAPI:
    """The console app; ``apis`` for tests that answer in process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.apis.aclose()
        if app.state.oidc is not None:
            await app.state.oidc.aclose()

    app = FastAPI(
        title="caseflow console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.apis = apis or Apis(settings)
    app.state.sessions = Sessions(
        timedelta(minutes=settings.session_minutes), timedelta(minutes=settings.idle_minutes)
    )
    app.state.catalogue = load_catalogue(settings.data_dir)
    app.state.organisations = load_organisations(settings.data_dir)
    app.state.workflows = load_workflows(settings.data_dir)
    app.state.oidc = Oidc(settings) if settings.oidc else None
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(word=i18n.word, pick=i18n.pick)
    templates.env.filters["local"] = pages.local_time
    templates.env.filters["entered_later"] = pages.entered_later
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def frame(request: Request, call_next: Any) -> Response:
        # A form from another site never acts for a signed-in member (with the session's
        # own form token and the SameSite cookie, the third lock on that door).
        if request.method == "POST" and request.headers.get("sec-fetch-site") == "cross-site":
            return HTMLResponse("cross-site form refused", status_code=403)
        try:
            response: Response = await call_next(request)
        except Unavailable:
            response = pages.unavailable(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.include_router(pages.router)

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/sign-in", response_class=HTMLResponse, include_in_schema=False)
    async def sign_in_page(request: Request, ended: str | None = None) -> Response:
        from shared.domain.roster import DEMO_STAFF

        local = settings.local_sign_in_key_dir is not None
        return pages.render(
            request,
            "sign_in.html",
            None,
            local=local,
            staff=DEMO_STAFF if local else (),
            ended=ended,
            oidc=app.state.oidc is not None,
            failure=None,
        )

    @app.post("/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        from shared.adapters.auth import Role, SigningKey, issue_token
        from shared.domain.roster import DEMO_STAFF

        if settings.local_sign_in_key_dir is None:
            return HTMLResponse("sign-in is not configured", status_code=404)
        form = await request.form()
        user = str(form.get("user", ""))
        member = next((m for m in DEMO_STAFF if m.user == user), None)
        if member is None:
            return RedirectResponse("/sign-in", status_code=303)
        lifetime = timedelta(minutes=settings.session_minutes)
        # Entering paper records (补录): the token carries ``backfill`` if the role may.
        granted = app.state.organisations.special_permissions.get(BACKFILL_PERMISSION)
        paper = bool(form.get("paper")) and granted is not None and member.role in granted.roles
        staff = SignedInStaff(
            member.user,
            Role(member.role),
            member.org,
            member.name,
            permissions=frozenset({BACKFILL_PERMISSION}) if paper else frozenset(),
        )
        token = issue_token(staff, SigningKey.load(settings.local_sign_in_key_dir), ttl=lifetime)
        expires = int((datetime.now(UTC) + lifetime).timestamp())
        return start_session(token, staff, expires)

    def start_session(token: str, staff: SignedInStaff, expires: int | None) -> Response:
        session = app.state.sessions.start(
            token=token,
            user=staff.user,
            role=staff.role.value,
            org=staff.org,
            name=staff.name,
            token_expires=datetime.fromtimestamp(expires, UTC) if expires else None,
            permissions=staff.permissions,
        )
        response = RedirectResponse("/", status_code=303)
        # Lax, not Strict: the way back from the identity provider is a cross-site
        # navigation. Posts are guarded by each session's form token and Sec-Fetch-Site.
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="lax",
            secure=settings.secure_cookies,
            path="/",
        )
        return response

    @app.get("/sign-in/oidc", include_in_schema=False)
    async def sign_in_oidc() -> Response:
        oidc: Oidc | None = app.state.oidc
        if oidc is None:
            return HTMLResponse("sign-in is not configured", status_code=404)
        target, state = await oidc.start()
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SIGN_IN_COOKIE,
            state,
            max_age=PENDING_SECONDS,
            httponly=True,
            samesite="lax",
            secure=settings.secure_cookies,
            path="/sign-in",
        )
        return response

    @app.get("/sign-in/callback", include_in_schema=False)
    async def sign_in_callback(
        request: Request, code: str = "", state: str = "", error: str = ""
    ) -> Response:
        oidc: Oidc | None = app.state.oidc
        if oidc is None:
            return HTMLResponse("sign-in is not configured", status_code=404)
        mine = request.cookies.get(SIGN_IN_COOKIE, "")
        try:
            if error:
                raise SignInFailed(f"the identity provider said: {error[:100]}")
            # The state must be the one this browser was sent off with (no sign-in
            # started elsewhere can be finished here).
            if not code or not state or not secrets.compare_digest(mine, state):
                raise SignInFailed(
                    "this sign-in was not started in this browser; please start again"
                )
            signed = await oidc.finish(state, code)
        except SignInFailed as failed:
            response = pages.render(
                request,
                "sign_in.html",
                None,
                status_code=400,
                local=False,
                staff=(),
                ended=None,
                oidc=True,
                failure=str(failed),
            )
            response.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
            return response
        done = start_session(signed.token, signed.staff, signed.expires)
        done.delete_cookie(SIGN_IN_COOKIE, path="/sign-in")
        return done

    @app.post("/sign-out", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        session: Session | None = app.state.sessions.get(request.cookies.get(COOKIE))
        form = await request.form()
        if session is not None and secrets.compare_digest(str(form.get("csrf", "")), session.csrf):
            app.state.sessions.end(session.id)
        response = RedirectResponse("/sign-in?ended=out", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/lang/{lang}", include_in_schema=False)
    async def switch_language(lang: str, back: str = "/") -> Response:
        target = back if back.startswith("/") and not back.startswith("//") else "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(i18n.COOKIE, i18n.language(lang), samesite="lax", path="/")
        return response

    async def to_sign_in(request: Request, _: Exception) -> Response:
        ended = "?ended=expired" if request.cookies.get(COOKIE) else ""
        response = RedirectResponse(f"/sign-in{ended}", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    app.add_exception_handler(pages.SignInFirst, to_sign_in)
    app.add_exception_handler(SignInAgain, to_sign_in)  # the token expired at the API
    app.add_exception_handler(Refused, pages.refused_page)  # type: ignore[arg-type]
    return app
