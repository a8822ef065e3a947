"""Reading a case over HTTP, the same in every service that shows cases."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from shared.application.workflow.service import CaseService, NotFound, today_in_china
from shared.domain.privacy import masked_envelope
from shared.domain.workflow import engine
from shared.domain.workflow.state import CaseState
from shared.domain.workflow.views import case_view
from shared.web.workflow.http import PROBLEMS, ActingDep, ServiceDep

reads = APIRouter(tags=["cases"], responses=PROBLEMS)


def view(service: CaseService, state: CaseState) -> dict[str, Any]:
    """The JSON answer for a case, as of today at the station."""
    return case_view(
        state,
        service.workflow_of(state),
        service.item_of(state),
        service.calendar,
        today_in_china(),
    )


async def visible_state(service: CaseService, case_id: uuid.UUID, staff: engine.Staff) -> CaseState:
    """The case's state, or 404 if it isn't one of the actor's organisation's."""
    _, state = await service.load(case_id)
    if not service.visible(staff, state):
        raise NotFound(f"no case {case_id}")
    return state


@reads.get("/cases/{case_id}", summary="A case: state, clock, tasks, open actions")
async def get_case(case_id: uuid.UUID, service: ServiceDep, staff: ActingDep) -> dict[str, Any]:
    """The case folded from its events (personal data masked)."""
    return view(service, await visible_state(service, case_id, staff))


@reads.get("/cases/{case_id}/events", summary="A case's whole history, in order")
async def get_case_events(
    case_id: uuid.UUID, service: ServiceDep, staff: ActingDep
) -> dict[str, Any]:
    """Every event of the case with its envelope: actor, authority, delegation version.

    ID and phone numbers and e-mail addresses are masked here, as in the case view and
    on the bus (each envelope says ``personal_data: masked``; its ``hash`` is the stored
    row's): opening the applicant in full takes a reason (``GET /cases/{id}/applicant``),
    and is recorded."""
    events, state = await service.load(case_id)
    if not service.visible(staff, state):
        raise NotFound(f"no case {case_id}")
    return {"case_id": str(case_id), "events": [masked_envelope(e) for e in events]}
