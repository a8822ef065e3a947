"""Intake's HTTP API: the window. Visitors, applications, and the station's other matters.

``POST /cases`` records ``CaseReceived`` and, in the same transaction, the window's
decision: acceptance with its dated receipt and case number, or the one-time notice
listing every missing or defective material (一次性告知) with its deadline.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from services.intake.domain import (
    Application,
    AssistanceIn,
    MediationIn,
    PoliceAssistanceIn,
    PublicityIn,
    Visit,
    start_payload,
)
from shared.adapters.eventlog import ConcurrencyError
from shared.application.workflow.service import (
    RETRIES,
    CaseService,
    FieldInvalid,
    NotFound,
    Outcome,
    pause_before_retry,
)
from shared.domain.catalogue import DraftItem, UnknownItem
from shared.domain.events import NewEvent
from shared.domain.identity import unreadable
from shared.domain.workcalendar import OutsideCalendar, local_date
from shared.domain.workflow import engine
from shared.domain.workflow.payloads import DefectiveMaterial, RequestCorrection
from shared.web.http import correlation_id
from shared.web.workflow.http import PROBLEMS, ActingDep, IdempotencyKey, ServiceDep, keyed
from shared.web.workflow.routes import view

router = APIRouter(responses=PROBLEMS)

_RECEIPTS = ("CaseAccepted", "CorrectionRequested")
MAX_REASON = 500
"""The longest reason for opening personal data (the payload schema's limit)."""


_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Your same request again (your same Idempotency-Key): what the first "
        "one made, as it is now"
    }
}


def _within_calendar(
    service: CaseService, occurred_at: datetime | None, station: str | None = None
) -> None:
    """What happened before the working calendar's first day can't be entered: its
    clocks count working days (and a date that far back is a typo); nor what a station
    did before it opened."""
    if occurred_at is None:
        return
    day = local_date(occurred_at)
    try:
        service.calendar.is_working_day(day)
    except OutsideCalendar as err:
        raise FieldInvalid("occurred_at", f"{err}; check the date (日期超出工作日历)") from None
    opened = next((o.opened_on for o in service.organisations if o.code == station), None)
    if opened is not None and day < opened:
        raise FieldInvalid(
            "occurred_at",
            f"{day} is before the station opened on {opened}; check the date"
            f" (早于服务站设立日期 {opened})",
        )


def _check_village(service: CaseService, field: str, village: str | None) -> None:
    """A village code must be one of the villages a station serves (organisations.yaml):
    the reports count by village, and a made-up code counts nowhere."""
    if village is None:
        return
    known = {v.code for org in service.organisations for v in org.villages}
    if village not in known:
        raise FieldInvalid(
            field,
            f"no village {village!r} in the registry of organisations; use a village code "
            "such as gongyu (村代码不存在)",
        )


def _check_planned_on(service: CaseService, planned_on: date) -> None:
    try:
        service.calendar.is_working_day(planned_on)
    except OutsideCalendar as err:
        raise FieldInvalid("planned_on", f"{err}; check the date (日期超出工作日历)") from None


async def _check_visit(service: CaseService, staff: engine.Staff, reception_id: uuid.UUID) -> None:
    """``reception_id`` names a visit logged at the clerk's own station: another station's
    visit, a case that is not a visit, or nothing at all is refused."""
    recorded = await service.log.read_case(reception_id)
    visit = recorded[0] if recorded else None
    if (
        visit is None
        or visit.case_kind != "reception"
        or visit.event_type != "VisitorReceived"
        or visit.payload.get("station") != staff.org
    ):
        raise FieldInvalid(
            "reception_id",
            f"no visit {reception_id} in your station's visitor log; log the visit first "
            "(POST /reception) or leave reception_id out (来访记录不存在)",
        )


def _answer(service: CaseService, outcome: Outcome, response: Response) -> dict[str, Any]:
    state = outcome.state
    location = f"/cases/{state.case_id}"
    response.headers["Location"] = location
    answer = view(service, state)
    answer["recorded"] = [e.event_type for e in outcome.events]
    receipt = next(
        (
            e.payload
            for e in outcome.events
            if e.event_type in ("CaseAccepted", "CorrectionRequested")
        ),
        None,
    )
    answer["receipt"] = receipt
    return answer


@router.post(
    "/cases",
    status_code=201,
    tags=["applications"],
    summary="Hand in an application (收件、受理或一次性告知)",
    responses=_REPLAYED,
)
async def submit_case(
    application: Application,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """Receive an application for an item of the catalogue (the newest published version,
    which the case pins with its workflow), and decide on the spot unless asked not to."""
    _within_calendar(service, application.occurred_at, staff.org)
    _check_village(service, "applicant.village", application.applicant.village)
    if application.reception_id:
        await _check_visit(service, staff, application.reception_id)
    try:
        item = service.catalogue.get(application.item_code)
    except (UnknownItem, DraftItem) as err:
        raise FieldInvalid("item_code", f"{err} (未知事项)") from None
    materials = application.material_list()
    known = {m.code: m for m in item.materials}
    unknown = [m.code for m in materials if m.code not in known]
    if unknown:
        listed = ", ".join(sorted(known))
        raise FieldInvalid(
            "materials",
            f"not materials of {item.code}: {', '.join(unknown)} (该事项无此材料); "
            f"its materials are: {listed}",
        )
    defective = [
        DefectiveMaterial(code=m.code, reason="original not checked (原件未核验)")
        for m in materials
        if known[m.code].original_required and not m.original_checked
    ]
    handed_in = {m.code for m in materials}
    complete = all(m.code in handed_in for m in item.materials) and not defective
    follow_up = None
    if application.decide == "now":
        follow_up = "accept" if complete else "request_correction"
    workflow = service.workflows.published(item.workflow, item.workflow_version)
    payload = {
        "item_code": item.code,
        "item_version": item.version,
        "applicant": application.applicant.model_dump(mode="json", exclude_none=True),
        "materials": sorted(handed_in),
        "originals_checked": sorted(m.code for m in materials if m.original_checked),
        "channels": application.notify_by,
        "language": application.language,
    }
    if application.reception_id:
        payload["reception_id"] = str(application.reception_id)
    outcome = await service.open_case(
        case_kind="application",
        workflow=workflow,
        staff=staff,
        start_payload=payload,
        item=item,
        follow_up=follow_up,
        follow_body=RequestCorrection(defective=defective) if defective else None,
        correlation_id=correlation_id(request),
        occurred_at=application.occurred_at,
        request=keyed(request, staff, idempotency_key, application),
    )
    if outcome.replayed:
        response.status_code = 200
    return _answer(service, outcome, response)


async def _open_matter(
    kind: str,
    parsed: MediationIn | PublicityIn | AssistanceIn | PoliceAssistanceIn,
    idempotency_key: str,
    request: Request,
    response: Response,
    service: CaseService,
    staff: engine.Staff,
) -> dict[str, Any]:
    """The station's other work, each a case with its own small workflow."""
    _within_calendar(service, parsed.occurred_at, staff.org)
    _check_village(service, "village", getattr(parsed, "village", None))
    if isinstance(parsed, PublicityIn):
        _check_planned_on(service, parsed.planned_on)
    outcome = await service.open_case(
        case_kind=kind,
        workflow=service.workflows.for_kind(kind),
        staff=staff,
        start_payload=start_payload(parsed),
        item=None,
        follow_up=None,
        correlation_id=correlation_id(request),
        occurred_at=parsed.occurred_at,
        request=keyed(request, staff, idempotency_key, parsed),
    )
    if outcome.replayed:
        response.status_code = 200
    return _answer(service, outcome, response)


# One route per kind of matter, so that the OpenAPI document shows each one's body.


@router.post(
    "/matters/mediation",
    status_code=201,
    tags=["matters"],
    summary="Open a mediation (矛盾纠纷调解)",
    responses=_REPLAYED,
)
async def open_mediation(
    body: MediationIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """A dispute brought to the station to mediate."""
    return await _open_matter("mediation", body, idempotency_key, request, response, service, staff)


@router.post(
    "/matters/legal_publicity",
    status_code=201,
    tags=["matters"],
    summary="Plan a legal-publicity session (普法宣传)",
    responses=_REPLAYED,
)
async def open_legal_publicity(
    body: PublicityIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """A session to hold on a day."""
    return await _open_matter(
        "legal_publicity", body, idempotency_key, request, response, service, staff
    )


@router.post(
    "/matters/assistance",
    status_code=201,
    tags=["matters"],
    summary="Open an assistance matter (帮扶救助)",
    responses=_REPLAYED,
)
async def open_assistance(
    body: AssistanceIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """A person who needs help or rescue."""
    return await _open_matter(
        "assistance", body, idempotency_key, request, response, service, staff
    )


@router.post(
    "/matters/police_assistance",
    status_code=201,
    tags=["matters"],
    summary="Open a police-assistance matter (协助公安)",
    responses=_REPLAYED,
)
async def open_police_assistance(
    body: PoliceAssistanceIn,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """Help the police room asked for."""
    return await _open_matter(
        "police_assistance", body, idempotency_key, request, response, service, staff
    )


@router.post(
    "/reception",
    status_code=201,
    tags=["reception"],
    summary="Log a visitor (来访登记), whether or not a case follows",
    responses=_REPLAYED,
)
async def log_visit(
    visit: Visit,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """One ``VisitorReceived`` event per visit, in the station's reception log."""
    if staff.role not in ("window_clerk", "station_head", "reviewer"):
        raise engine.NotAllowed("visitors are logged by the station's staff")
    _within_calendar(service, visit.occurred_at, staff.org)
    _check_village(service, "village", visit.village)
    event = NewEvent(
        event_type="VisitorReceived",
        occurred_at=visit.occurred_at,
        actor=staff.actor(),
        authority=service.own_authority(staff.org),
        correlation_id=correlation_id(request),
        payload={**start_payload(visit), "station": staff.org},
    )
    stored, replayed = await service.open_stream(
        case_kind="reception",
        event=event,
        staff=staff,
        request=keyed(request, staff, idempotency_key, visit),
    )
    if replayed:
        response.status_code = 200
    response.headers["Location"] = f"/reception/{stored.case_id}"
    return {
        "visit_id": str(stored.case_id),
        "station": stored.payload["station"],
        "occurred_at": stored.occurred_at.isoformat(),
        "purpose": stored.payload["purpose"],
    }


READ_REASON = Query(
    description="Why you open the applicant's personal data (查看理由), e.g. "
    "'applicant called about the case'; every opening is recorded on the case",
    examples=["申请人来电咨询 / applicant called about the case"],
)
_NEED_REASON = (
    "say why you open this applicant's personal data: add ?reason=… to the address, e.g. "
    "reason=applicant called about the case (查看个人信息须填写理由); every opening is "
    "recorded on the case"
)


@router.get(
    "/cases/{case_id}/applicant", tags=["applications"], summary="The applicant's personal data"
)
async def get_applicant(
    case_id: uuid.UUID,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
    reason: Annotated[str | None, READ_REASON] = None,
) -> dict[str, Any]:
    """The applicant in full (ID and phone numbers unmasked), for the case's own station.

    Each opening is recorded on the case as ``PersonalDataViewed`` (who, role, station,
    when, why): the auditor sees it in the case's timeline; the status is unchanged and
    nobody is notified.
    """
    why = (reason or "").strip()
    # A reason the auditor can read: words, not only dots or invisible characters, and no
    # direction controls that make it read as something else.
    if sum(char.isalnum() for char in why) < 2 or unreadable(why) is not None:
        raise FieldInvalid("reason", _NEED_REASON)
    if len(why) > MAX_REASON:
        raise FieldInvalid("reason", f"at most {MAX_REASON} characters, please")
    for attempt in range(1, RETRIES + 1):
        _, state = await service.load(case_id)
        if staff.org != state.station or state.applicant is None:
            raise NotFound(f"no case {case_id}")
        viewed = NewEvent(
            event_type="PersonalDataViewed",
            actor=staff.actor(),
            correlation_id=correlation_id(request),
            payload={"reason": why, "fields": sorted(state.applicant)},
        )
        try:
            await service.log.append(
                case_id, state.version, [viewed], case_kind=state.case_kind or "application"
            )
        except ConcurrencyError:
            await pause_before_retry(attempt)
            continue  # another event landed first: record the reading after it
        break
    else:
        raise ConcurrencyError(case_id, state.version, state.version + 1)
    # Personal data in full: no browser or proxy keeps a copy.
    response.headers["Cache-Control"] = "no-store"
    return {
        "case_id": str(case_id),
        "case_number": state.case_number,
        "applicant": dict(state.applicant),
    }
