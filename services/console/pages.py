"""The pages: each reads and acts through the APIs with the signed-in member's token."""

from __future__ import annotations

import secrets
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from services.console import forms, i18n
from services.console.sessions import COOKIE, Session
from services.console.upstream import Apis, Refused, new_key
from shared.domain.catalogue import Catalogue, ServiceItem
from shared.domain.moments import late_entry
from shared.domain.workcalendar import CHINA_TZ

router = APIRouter(include_in_schema=False)

KEEP_OUTCOMES = 20


class SignInFirst(Exception):
    """No live session: to the sign-in page."""


def local_time(value: str | None) -> str:
    """A stored moment (ISO 8601, UTC) as the station reads it: Beijing time, to the second."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def entered_later(event: dict[str, Any]) -> str:
    """When an act entered later from a paper record (补录) was recorded, in Beijing time;
    '' for an act recorded as it happened."""
    try:
        occurred = datetime.fromisoformat(str(event.get("occurred_at")))
        recorded = datetime.fromisoformat(str(event.get("recorded_at")))
    except ValueError:
        return ""
    return local_time(recorded.isoformat()) if late_entry(occurred, recorded) else ""


def lang_of(request: Request) -> i18n.Lang:
    return i18n.language(request.cookies.get(i18n.COOKIE))


def render(
    request: Request,
    template: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    lang = lang_of(request)

    def t(key: str, table: str = "words") -> str:
        return i18n.word(table, key, lang)

    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        template,
        {"lang": lang, "t": t, "session": session, "orgs": request.app.state.organisations}
        | context,
        status_code=status_code,
    )
    return response


def unavailable(request: Request) -> HTMLResponse:
    response = render(request, "unavailable.html", None, status_code=503)
    response.headers["Retry-After"] = "5"
    return response


async def signed_in(request: Request) -> Session:
    session: Session | None = request.app.state.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInFirst()
    return session


SessionDep = Annotated[Session, Depends(signed_in)]


async def refused_page(request: Request, exc: Refused) -> Response:
    """An API's refusal on a page that had nothing better to show: its words, its status."""
    session: Session | None = request.app.state.sessions.get(request.cookies.get(COOKIE))
    return render(request, "refused.html", session, status_code=exc.status, problem=exc)


def apis(request: Request) -> Apis:
    result: Apis = request.app.state.apis
    return result


async def checked_form(request: Request, session: Session) -> dict[str, str]:
    """The posted form, if it carries the session's form token; else 403."""
    form: dict[str, str] = {}
    for name, value in (await request.form()).multi_items():
        # a field sent several times (ticked boxes) arrives as lines
        form[name] = f"{form[name]}\n{value}" if name in form else str(value)
    if not secrets.compare_digest(form.get("csrf", ""), session.csrf):
        raise Refused(
            403, "Forbidden", "该表单已失效，请刷新页面后重试 (the form expired; reload)", []
        )
    return form


# --- home -----------------------------------------------------------------------------


@router.get("/")
async def home(session: SessionDep) -> Response:
    if session.role == "window_clerk":
        return RedirectResponse("/applications/new", status_code=303)
    if session.role == "auditor":
        return RedirectResponse("/audit", status_code=303)
    return RedirectResponse("/worklist", status_code=303)


# --- the window: a new application -----------------------------------------------------


def _matches(item: ServiceItem, query: str) -> bool:
    q = query.strip().lower()
    return not q or any(q in text.lower() for text in (item.name_zh, item.name_en, item.code))


@router.get("/applications/new")
async def new_application(
    request: Request, session: SessionDep, q: str = "", item: str = ""
) -> Response:
    catalogue: Catalogue = request.app.state.catalogue
    items = [i for i in catalogue.published() if _matches(i, q)]
    chosen = next((i for i in catalogue.published() if i.code == item), None)
    return render(
        request,
        "new_application.html",
        session,
        items=items,
        q=q,
        chosen=chosen,
        key=new_key(),
        station=request.app.state.organisations.get(session.org),
        values={},
        problem=None,
    )


@router.post("/applications")
async def receive_application(request: Request, session: SessionDep) -> Response:
    form = await checked_form(request, session)
    catalogue: Catalogue = request.app.state.catalogue
    chosen = next((i for i in catalogue.published() if i.code == form.get("item_code")), None)
    if chosen is None:
        return RedirectResponse("/applications/new", status_code=303)
    materials: list[Any] = []
    for material in chosen.materials:
        if form.get(f"m_{material.code}"):
            if form.get(f"o_{material.code}"):
                materials.append({"code": material.code, "original_checked": True})
            else:
                materials.append(material.code)
    applicant = {
        k: form[k].strip()
        for k in ("name", "phone", "id_number", "village")
        if form.get(k, "").strip()
    }
    body = {"item_code": chosen.code, "applicant": applicant, "materials": materials}
    body |= forms.moment(form, session.permissions)
    key = form.get("key") or new_key()
    try:
        answer = await apis(request).call(
            "intake", "POST", "/cases", session.token, json=body, idempotency_key=key
        )
    except Refused as problem:
        return render(
            request,
            "new_application.html",
            session,
            status_code=problem.status,
            items=[],
            q="",
            chosen=chosen,
            key=key,  # the same key: sending the corrected form is still one application
            station=request.app.state.organisations.get(session.org),
            values=form,
            problem=problem,
        )
    case_id = str(answer["case_id"])
    if answer.get("receipt"):
        session.outcomes[case_id] = answer
        while len(session.outcomes) > KEEP_OUTCOMES:
            session.outcomes.pop(next(iter(session.outcomes)))
    return RedirectResponse(f"/cases/{case_id}/outcome", status_code=303)


@router.get("/cases/{case_id}/outcome")
async def outcome(request: Request, session: SessionDep, case_id: uuid.UUID) -> Response:
    answer = session.outcomes.get(str(case_id))
    if answer is None:
        return RedirectResponse(f"/cases/{case_id}", status_code=303)
    item = request.app.state.catalogue.get(answer["item"]["code"], answer["item"]["version"])
    return render(
        request,
        "outcome.html",
        session,
        case=answer,
        receipt=answer["receipt"],
        item=item,
        station=request.app.state.organisations.get(answer["station"]),
    )


# --- worklists and cases ---------------------------------------------------------------


@router.get("/worklist")
async def worklist(request: Request, session: SessionDep) -> Response:
    answer = await apis(request).get("processing", "/worklist", session.token)
    return render(request, "worklist.html", session, tasks=answer.get("tasks", []), key=new_key())


@router.get("/worklist/changes")
async def worklist_changes(request: Request, session: SessionDep) -> Response:
    """Processing's stream of worklist changes, passed on (the token stays here)."""
    return StreamingResponse(
        apis(request).stream("processing", "/worklist/changes", session.token),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/cases/find")
async def find_case(request: Request, session: SessionDep, number: str = "") -> Response:
    number = number.strip().upper()
    if not number:
        return render(request, "find.html", session, number="", problem=None)
    try:
        answer = await apis(request).get("processing", f"/cases/by-number/{number}", session.token)
    except Refused as problem:
        return render(
            request,
            "find.html",
            session,
            number=number,
            problem=problem,
            status_code=problem.status,
        )
    return RedirectResponse(f"/cases/{answer['case_id']}", status_code=303)


async def _case_page(
    request: Request,
    session: Session,
    case_id: uuid.UUID,
    *,
    status_code: int = 200,
    problem: Refused | None = None,
    done: str | None = None,
    personal: dict[str, Any] | None = None,
    typed: tuple[str, dict[str, str]] | None = None,
) -> Response:
    """The case page; ``typed``: an action refused, with what was typed into its form
    (shown again, nothing lost)."""
    calls = apis(request)
    case = await calls.get("processing", f"/cases/{case_id}", session.token)
    history = await calls.get("processing", f"/cases/{case_id}/events", session.token)
    item = None
    if case.get("item"):
        item = request.app.state.catalogue.get(case["item"]["code"], case["item"]["version"])
    return render(
        request,
        "case.html",
        session,
        status_code=status_code,
        case=case,
        item=item,
        events=history.get("events", []),
        material_names={
            m.code: i18n.pick(lang_of(request), m) for m in (item.materials if item else ())
        },
        typed_action=typed[0] if typed else None,
        typed=typed[1] if typed else {},
        action_forms={
            a: forms.fields_of(a)
            for a in forms.actions_for(request.app.state.workflows, case, session.role, session.org)
        },
        problem=problem,
        done=done,
        personal=personal,
        key=new_key(),
    )


@router.get("/cases/{case_id}")
async def case_page(
    request: Request, session: SessionDep, case_id: uuid.UUID, done: str | None = None
) -> Response:
    return await _case_page(request, session, case_id, done=done)


@router.post("/cases/{case_id}/actions/{action}")
async def act(request: Request, session: SessionDep, case_id: uuid.UUID, action: str) -> Response:
    form = await checked_form(request, session)
    body = forms.body_from(action, form) | forms.moment(form, session.permissions)
    try:
        await apis(request).call(
            "processing",
            "POST",
            f"/cases/{case_id}/actions/{action}",
            session.token,
            json=body,
            idempotency_key=form.get("key") or new_key(),
        )
    except Refused as problem:
        if problem.status == 404:
            raise
        # The refusal as the API words it, on the case as it is now, with what was typed.
        return await _case_page(
            request,
            session,
            case_id,
            status_code=problem.status,
            problem=problem,
            typed=(action, form),
        )
    # To the case (read from its log, so the act shows at once; the worklist is a read
    # model, a moment behind).
    return RedirectResponse(f"/cases/{case_id}?done={action}", status_code=303)


@router.post("/cases/{case_id}/applicant")
async def applicant(request: Request, session: SessionDep, case_id: uuid.UUID) -> Response:
    form = await checked_form(request, session)
    try:
        personal = await apis(request).get(
            "intake", f"/cases/{case_id}/applicant", session.token, reason=form.get("reason", "")
        )
    except Refused as problem:
        if problem.status == 404:
            raise
        return await _case_page(
            request, session, case_id, status_code=problem.status, problem=problem
        )
    return await _case_page(request, session, case_id, personal=personal)


# --- the station head: statistics -------------------------------------------------------

FIGURES = (
    "received",
    "accepted",
    "forwarded",
    "completed_at_station",
    "approved",
    "rejected",
    "delivered",
)


def _period(start: str, end: str) -> tuple[str, str]:
    """``start``–``end`` as given, else this month so far (the station's calendar)."""
    today = datetime.now(CHINA_TZ).date()
    try:
        first = date.fromisoformat(start) if start else today.replace(day=1)
        last = date.fromisoformat(end) if end else today
    except ValueError:
        first, last = today.replace(day=1), today
    return first.isoformat(), last.isoformat()


@router.get("/statistics")
async def statistics(
    request: Request,
    session: SessionDep,
    start: Annotated[str, Query(alias="from")] = "",
    end: Annotated[str, Query(alias="to")] = "",
) -> Response:
    first, last = _period(start, end)
    params = {"from": first, "to": last}
    if session.role == "station_head":
        params["station"] = session.org
    try:
        report = await apis(request).get(
            "processing", "/reports/statistics", session.token, **params
        )
    except Refused as problem:
        return render(
            request,
            "statistics.html",
            session,
            status_code=problem.status,
            report=None,
            problem=problem,
            first=first,
            last=last,
            chart=[],
        )
    items = [i for i in report.get("items", []) if i.get("received")]
    top = max((i["received"] for i in items), default=0)
    chart = [
        {
            "label": i18n.pick(lang_of(request), i),
            "code": i["code"],
            "bars": [(f, i.get(f, 0), (i.get(f, 0) / top) if top else 0.0) for f in FIGURES],
        }
        for i in items
    ]
    return render(
        request,
        "statistics.html",
        session,
        report=report,
        problem=None,
        first=first,
        last=last,
        chart=chart,
        figures=FIGURES,
    )


PRINTABLE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The printable report's policy: its own inline styles, nothing run or fetched."""


@router.get("/statistics/download")
async def statistics_download(
    request: Request,
    session: SessionDep,
    output: Annotated[Literal["csv", "html"], Query(alias="format")] = "csv",
    start: Annotated[str, Query(alias="from")] = "",
    end: Annotated[str, Query(alias="to")] = "",
) -> Response:
    """The period's report as the API renders it: a spreadsheet or a printable page."""
    first, last = _period(start, end)
    params = {"from": first, "to": last, "format": output}
    if session.role == "station_head":
        params["station"] = session.org
    content, media = await apis(request).download(
        "processing", "/reports/statistics", session.token, **params
    )
    if output == "csv":
        name = f"statistics-{params.get('station', 'city')}-{first}-{last}.csv"
        headers = {"content-disposition": f'attachment; filename="{name}"'}
    else:  # the printable page styles itself inline and draws its charts as SVG: no more
        headers = {"content-security-policy": PRINTABLE_CSP}
    return Response(content, media_type=media, headers=headers)


# --- the auditor: a case's timeline as of a moment ---------------------------------------


@router.get("/audit")
async def audit(
    request: Request,
    session: SessionDep,
    case: str = "",
    as_of: str = "",
    basis: str = "occurred",
) -> Response:
    case = case.strip().upper()
    context: dict[str, Any] = {
        "case_ref": case,
        "as_of": as_of,
        "basis": basis,
        "timeline": None,
        "problem": None,
    }
    try:  # the log's latest verification, above whatever case is asked for
        context["verification"] = await apis(request).get(
            "processing", "/audit/verification", session.token
        )
    except Refused:
        context["verification"] = None
    if case:
        params = {}
        if as_of:
            moment = as_of if len(as_of) > 16 else f"{as_of}:00"  # datetime-local: minutes
            params = {"as_of": f"{moment}+08:00", "basis": basis}  # the station's time
        try:
            context["timeline"] = await apis(request).get(
                "processing", f"/audit/cases/{case}/timeline", session.token, **params
            )
        except Refused as problem:
            context["problem"] = problem
            return render(request, "audit.html", session, status_code=problem.status, **context)
    return render(request, "audit.html", session, **context)


# --- the window: the visitor log and the station's other matters -------------------------

PURPOSES = ("enquiry", "application", "mediation", "legal_advice", "assistance", "police", "other")
MATTERS: dict[str, tuple[tuple[str, str], ...]] = {
    # each matter's fields: (name, kind) — kind: text, textarea, lines, date, check, village
    "mediation": (
        ("title", "text"),
        ("parties", "lines"),
        ("village", "village"),
        ("summary", "textarea"),
    ),
    "legal_publicity": (("topic", "text"), ("village", "village"), ("planned_on", "date")),
    "assistance": (
        ("person_name", "text"),
        ("village", "village"),
        ("need", "textarea"),
        ("urgent", "check"),
    ),
    "police_assistance": (("police_unit", "text"), ("reference", "text"), ("summary", "textarea")),
}


@router.get("/reception")
async def reception(request: Request, session: SessionDep, done: str = "") -> Response:
    return render(
        request,
        "reception.html",
        session,
        purposes=PURPOSES,
        key=new_key(),
        done=done,
        station=request.app.state.organisations.get(session.org),
        values={},
        problem=None,
    )


@router.post("/reception")
async def log_visit(request: Request, session: SessionDep) -> Response:
    form = await checked_form(request, session)
    body = {
        k: form[k].strip()
        for k in ("visitor_name", "village", "purpose", "note")
        if form.get(k, "").strip()
    }
    body |= forms.moment(form, session.permissions)
    try:
        await apis(request).call(
            "intake",
            "POST",
            "/reception",
            session.token,
            json=body,
            idempotency_key=form.get("key") or new_key(),
        )
    except Refused as problem:
        return render(
            request,
            "reception.html",
            session,
            status_code=problem.status,
            purposes=PURPOSES,
            key=form.get("key") or new_key(),
            done="",
            station=request.app.state.organisations.get(session.org),
            values=form,
            problem=problem,
        )
    return RedirectResponse("/reception?done=1", status_code=303)


@router.get("/matters/{kind}")
async def new_matter(request: Request, session: SessionDep, kind: str) -> Response:
    if kind not in MATTERS:
        return RedirectResponse("/reception", status_code=303)
    return render(
        request,
        "matter.html",
        session,
        kind=kind,
        fields=MATTERS[kind],
        key=new_key(),
        station=request.app.state.organisations.get(session.org),
        values={},
        problem=None,
    )


@router.post("/matters/{kind}")
async def open_matter(request: Request, session: SessionDep, kind: str) -> Response:
    if kind not in MATTERS:
        return RedirectResponse("/reception", status_code=303)
    form = await checked_form(request, session)
    body: dict[str, Any] = {}
    for name, field_kind in MATTERS[kind]:
        raw = form.get(name, "").strip()
        if field_kind == "check":
            body[name] = bool(raw)
        elif field_kind == "lines" and raw:
            body[name] = [line.strip() for line in raw.splitlines() if line.strip()]
        elif raw:
            body[name] = raw
    body |= forms.moment(form, session.permissions)
    try:
        answer = await apis(request).call(
            "intake",
            "POST",
            f"/matters/{kind}",
            session.token,
            json=body,
            idempotency_key=form.get("key") or new_key(),
        )
    except Refused as problem:
        return render(
            request,
            "matter.html",
            session,
            status_code=problem.status,
            kind=kind,
            fields=MATTERS[kind],
            key=form.get("key") or new_key(),
            station=request.app.state.organisations.get(session.org),
            values=form,
            problem=problem,
        )
    return RedirectResponse(f"/cases/{answer['case_id']}?done=open", status_code=303)


@router.get("/audit/compliance")
async def compliance(
    request: Request,
    session: SessionDep,
    station: str = "",
    start: Annotated[str, Query(alias="from")] = "",
    end: Annotated[str, Query(alias="to")] = "",
) -> Response:
    first, last = _period(start, end)
    stations = request.app.state.organisations.stations()
    station = station or (stations[0].code if stations else "")
    context: dict[str, Any] = {
        "stations": stations,
        "station": station,
        "first": first,
        "last": last,
        "report": None,
        "problem": None,
    }
    try:
        context["report"] = await apis(request).get(
            "processing",
            "/audit/compliance",
            session.token,
            station=station,
            **{"from": first, "to": last},
        )
    except Refused as problem:
        context["problem"] = problem
        return render(request, "compliance.html", session, status_code=problem.status, **context)
    return render(request, "compliance.html", session, **context)


# --- the station head: warnings, call-backs, webhook subscriptions -------------------------


async def _station_page(
    request: Request,
    session: Session,
    *,
    status_code: int = 200,
    problem: Refused | None = None,
    created: dict[str, Any] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    calls = apis(request)
    cases = await calls.get("processing", "/cases", session.token, limit="500")
    warned = [c for c in cases.get("cases", []) if c.get("warning")]
    warned.sort(key=lambda c: (c["warning"] != "red", c.get("opened_at") or ""))
    tasks = await calls.get("processing", "/worklist", session.token)
    callbacks = [t for t in tasks.get("tasks", []) if t.get("task") == "callback"]
    hooks = await calls.get("notify", "/webhooks", session.token)
    return render(
        request,
        "station.html",
        session,
        status_code=status_code,
        warned=warned,
        callbacks=callbacks,
        hooks=hooks.get("subscriptions", []),
        problem=problem,
        created=created,
        values=values or {},
        key=new_key(),
    )


@router.get("/station")
async def station(request: Request, session: SessionDep) -> Response:
    return await _station_page(request, session)


@router.post("/station/webhooks")
async def subscribe(request: Request, session: SessionDep) -> Response:
    form = await checked_form(request, session)
    types = [t.strip() for t in form.get("event_types", "").replace(",", "\n").splitlines()]
    body: dict[str, Any] = {
        "url": form.get("url", "").strip(),
        "event_types": [t for t in types if t] or ["*"],
    }
    if form.get("description", "").strip():
        body["description"] = form["description"].strip()
    try:
        created = await apis(request).call(
            "notify",
            "POST",
            "/webhooks",
            session.token,
            json=body,
            idempotency_key=form.get("key") or new_key(),
        )
    except Refused as problem:
        return await _station_page(
            request, session, status_code=problem.status, problem=problem, values=form
        )
    # The secret is shown this once, for the integrator to check signatures with.
    return await _station_page(request, session, created=created)


@router.post("/station/webhooks/{subscription_id}")
async def change_subscription(
    request: Request, session: SessionDep, subscription_id: uuid.UUID
) -> Response:
    form = await checked_form(request, session)
    wanted = form.get("status", "")
    try:
        if wanted == "delete":
            await apis(request).call(
                "notify", "DELETE", f"/webhooks/{subscription_id}", session.token
            )
        else:
            await apis(request).call(
                "notify",
                "PATCH",
                f"/webhooks/{subscription_id}",
                session.token,
                json={"status": wanted},
            )
    except Refused as problem:
        return await _station_page(request, session, status_code=problem.status, problem=problem)
    return RedirectResponse("/station", status_code=303)
