"""Processing's HTTP API: cases, their actions, worklists.

Every action is ``POST /cases/{case_id}/actions/{action}`` with an ``Idempotency-Key``
and answers with the case's new state. The actions open to a case are listed in its
``actions`` field; the workflow definition the case pinned says who may take them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import TypeAdapter, ValidationError

from shared.adapters.tables.workflow import case_index, tasks
from shared.application.workflow.service import ActionRefusedError, FieldInvalid, NotFound
from shared.domain.moments import OccurredAt
from shared.domain.workflow import engine
from shared.domain.workflow.payloads import BODIES
from shared.web.http import correlation_id
from shared.web.workflow.http import PROBLEMS, ActingDep, IdempotencyKey, ServiceDep, sender_key
from shared.web.workflow.routes import view, visible_state

router = APIRouter(tags=["cases"], responses=PROBLEMS)

ACTION_NAMES = sorted(BODIES)
MAX_OFFSET = 1_000_000_000
"""The most cases a list may skip (the databases refuse numbers past 64 bits)."""


@router.get(
    "/cases/by-number/{case_number}",
    summary="Find a case by its number (e.g. XF-2026-000123)",
)
async def get_case_by_number(
    case_number: Annotated[str, Path(pattern=r"^[A-Z]{1,8}-\d{4}-\d{6}$")],
    request: Request,
    service: ServiceDep,
    staff: ActingDep,
) -> dict[str, Any]:
    """The case with that number (as soon as the case list has caught up)."""
    async with service.log.engine.connect() as conn:
        found = (
            await conn.execute(
                sa.select(case_index.c.case_id).where(case_index.c.case_number == case_number)
            )
        ).scalar()
    try:
        if found is None:
            raise NotFound(f"no case {case_number}")
        return view(service, await visible_state(service, found, staff))
    except NotFound:
        # The same answer whether the number is unknown or another station's: the
        # problem names the number asked for, never the id of a case the caller can't see.
        raise NotFound(f"no case {case_number}") from None


@router.post(
    "/cases/{case_id}/actions/{action}",
    summary="Take an action on a case (accept, start_review, approve, deliver, …)",
)
async def act(
    case_id: uuid.UUID,
    action: Annotated[str, Path(pattern=r"^[a-z_]{2,40}$", examples=ACTION_NAMES)],
    idempotency_key: IdempotencyKey,
    request: Request,
    response: Response,
    service: ServiceDep,
    staff: ActingDep,
    body: Annotated[dict[str, Any] | None, Body()] = None,
) -> dict[str, Any]:
    """Check the action against the workflow, the role and the delegation valid now;
    record it; answer with the case's new state.

    Entering a paper record later (补录): with the special permission ``backfill``, the
    body may carry ``occurred_at``, the moment the act happened (with its time zone; not in
    the future, not before the case's previous act). The act is then judged, timed and
    counted at that moment — the delegation valid then, the clock as it stood — and the
    log keeps both times.

    Your retry (same Idempotency-Key, same case, action and body) answers with the case
    as it is now and records nothing; your key with another request is a 409."""
    fields = dict(body or {})
    moment = _occurred_at(fields.pop("occurred_at", None))
    outcome = await service.act(
        case_id,
        action,
        fields,
        staff,
        at=moment,
        idempotency_key=idempotency_key,
        sender=sender_key(request, staff, idempotency_key),
        correlation_id=correlation_id(request),
    )
    if outcome.replayed and outcome.events and outcome.events[0].event_type == "ActionRefused":
        payload = outcome.events[0].payload
        raise ActionRefusedError(
            engine.Refusal(payload["reason"], payload["message"]), outcome.state
        )
    response.headers["Location"] = f"/cases/{case_id}"
    answer = view(service, outcome.state)
    answer["recorded"] = [e.event_type for e in outcome.events]
    return answer


_MOMENT: TypeAdapter[datetime | None] = TypeAdapter(OccurredAt)


def _occurred_at(raw: Any) -> datetime | None:
    """The moment an act happened, as its body gives it (补录), checked; None for now. Who
    may date an act (the special permission ``backfill``) is the case service's to judge:
    a refusal is recorded like any other."""
    if raw is None:
        return None
    try:
        return _MOMENT.validate_python(raw)
    except ValidationError as err:
        message = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        raise FieldInvalid("occurred_at", message) from None


def _iso(moment: datetime | None) -> str | None:
    """A stored time as ISO 8601 in UTC (SQLite hands times back without their zone)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


@router.get("/cases", summary="Cases of your organisation (the case list)")
async def list_cases(
    service: ServiceDep,
    staff: ActingDep,
    status: Annotated[str | None, Query(max_length=32)] = None,
    item_code: Annotated[str | None, Query(max_length=64)] = None,
    case_kind: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """Newest first; a station sees its own cases, a department those forwarded to it or
    in its competence, an auditor all."""
    query = sa.select(case_index).order_by(case_index.c.opened_at.desc()).limit(limit)
    query = query.offset(offset)
    if staff.role == "department_officer":
        query = query.where(
            sa.or_(case_index.c.forward_to == staff.org, case_index.c.authority == staff.org)
        )
    elif staff.role != "auditor":
        query = query.where(case_index.c.station == staff.org)
    for column, value in (
        (case_index.c.status, status),
        (case_index.c.item_code, item_code),
        (case_index.c.case_kind, case_kind),
    ):
        if value is not None:
            query = query.where(column == value)
    async with service.log.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return {
        "cases": [
            {
                "case_id": str(r["case_id"]),
                "case_number": r["case_number"],
                "case_kind": r["case_kind"],
                "item_code": r["item_code"],
                "status": r["status"],
                "station": r["station"],
                "forward_to": r["forward_to"],
                "warning": r["warning"],
                "opened_at": _iso(r["opened_at"]),
                "version": r["version"],
            }
            for r in rows
        ]
    }


@router.get("/worklist", summary="Open tasks for your role in your organisation")
async def worklist(
    service: ServiceDep,
    staff: ActingDep,
    mine: Annotated[bool, Query(description="only tasks you claimed")] = False,
) -> dict[str, Any]:
    """Tasks waiting for the signed-in staff member's role at their station or authority,
    late ones (red, then yellow) first."""
    query = sa.select(tasks).where(tasks.c.org == staff.org, tasks.c.role == staff.role)
    if mine:
        query = query.where(tasks.c.claimed_by == staff.user)
    urgency = sa.case((tasks.c.warning == "red", 0), (tasks.c.warning == "yellow", 1), else_=2)
    query = query.order_by(urgency, tasks.c.opened_at)
    async with service.log.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return {
        "org": staff.org,
        "role": staff.role,
        "tasks": [
            {
                "case_id": str(r["case_id"]),
                "case_number": r["case_number"],
                "task": r["kind"],
                "status": r["status"],
                "claimed_by": r["claimed_by"],
                "warning": r["warning"],
                "since": _iso(r["opened_at"]),
                "links": {
                    "case": f"/cases/{r['case_id']}",
                    "claim": f"/cases/{r['case_id']}/actions/claim",
                },
            }
            for r in rows
        ],
    }
