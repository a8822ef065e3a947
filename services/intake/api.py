"""Intake's HTTP API: hand in an application, read a case and its history."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from pydantic import BaseModel

from services.intake.domain import CASE_KIND, Application, case_id_for, receive
from shared.events import Actor
from shared.http import PROBLEM_JSON, correlation_id
from shared.lifecycle import fold
from shared.runtime import EventLogDep

router = APIRouter(tags=["cases"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in (
        (404, "No such case"),
        (409, "Idempotency-Key reused"),
        (422, "The application is not valid"),
    )
}

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key per application (e.g. a UUID); a retry with the same key "
        "returns the original answer",
    ),
]


class CaseAccepted(BaseModel):
    """Intake's answer: the case exists and is being processed."""

    case_id: uuid.UUID
    status: str
    links: dict[str, str]


@router.post(
    "/cases",
    status_code=202,
    response_model=CaseAccepted,
    responses=_PROBLEMS,
    summary="Hand in an application (收件)",
)
async def submit_case(
    application: Application,
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    log: EventLogDep,
) -> CaseAccepted:
    """Record ``CaseReceived``; processing then accepts it or asks for missing materials."""
    settings = request.app.state.runtime.settings
    case_id = case_id_for(idempotency_key)
    actor = Actor(user="window", role="window_clerk", station=settings.station)
    event = receive(
        application, idempotency_key, actor=actor, correlation_id=correlation_id(request)
    )
    result = await log.append(case_id, 0, [event], case_kind=CASE_KIND)
    if result.replayed and result.events[0].payload != event.payload:
        raise HTTPException(
            409,
            "this Idempotency-Key was already used for a different "
            "application; use a new key for a new application",
        )
    location = f"/cases/{case_id}"
    response.headers["Location"] = location
    return CaseAccepted(
        case_id=case_id, status="received", links={"self": location, "events": f"{location}/events"}
    )


@router.get("/cases/{case_id}", responses=_PROBLEMS, summary="A case's current state")
async def get_case(case_id: uuid.UUID, log: EventLogDep) -> dict[str, Any]:
    """The state folded from the case's events."""
    events = await log.read_case(case_id)
    if not events:
        raise HTTPException(404, f"no case {case_id}")
    state = fold(events)
    return {
        "case_id": str(case_id),
        "status": state.status,
        "version": state.version,
        "item_code": state.item_code,
        "case_kind": events[0].case_kind,
    }


@router.get("/cases/{case_id}/events", responses=_PROBLEMS, summary="A case's whole history")
async def get_case_events(case_id: uuid.UUID, log: EventLogDep) -> dict[str, Any]:
    """Every event of the case, in order, with its envelope."""
    events = await log.read_case(case_id)
    if not events:
        raise HTTPException(404, f"no case {case_id}")
    return {"case_id": str(case_id), "events": [e.envelope() for e in events]}
