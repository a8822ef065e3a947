"""How a case is shown to staff: its state, clock, tasks and the actions open now.

Personal data is masked here; the applicant's full details have their own endpoint, so
that reading them can be recorded.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from shared.domain.privacy import masked
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.definitions import Workflow
from shared.domain.workflow.payloads import TASK_ACTIONS
from shared.domain.workflow.state import CaseState


def masked_applicant(applicant: Any) -> dict[str, Any] | None:
    """The applicant with ID and phone numbers and the e-mail address masked."""
    if not isinstance(applicant, dict):
        return None
    shown: dict[str, Any] = masked(applicant)
    return shown


def clock_reading(
    state: CaseState, item: Any | None, calendar: clocks.Calendar, today: date
) -> clocks.ClockReading | None:
    """The case's clock against its item's limits (None for matters)."""
    if item is None:
        return None
    try:
        return clocks.read(
            state.clock,
            committed=item.committed_limit_days,
            legal=item.legal_limit_days,
            calendar=calendar,
            today=today,
        )
    except ValueError:  # a date beyond the holiday calendar's years
        return None


def case_view(
    state: CaseState,
    workflow: Workflow,
    item: Any | None,
    calendar: clocks.Calendar,
    today: date,
) -> dict[str, Any]:
    """The JSON answer for a case."""
    reading = clock_reading(state, item, calendar, today)
    case_id = str(state.case_id)
    return {
        "case_id": case_id,
        "case_number": state.case_number,
        "case_kind": state.case_kind,
        "status": state.status,
        "version": state.version,
        "item": None
        if item is None
        else {
            "code": item.code,
            "version": item.version,
            "name_zh": item.name_zh,
            "name_en": item.name_en,
            "completion": str(item.completion),
        },
        "workflow": {"name": workflow.name, "version": workflow.version},
        "station": state.station,
        "authority": state.authority,
        "forward_to": state.forward_to,
        "applicant": masked_applicant(state.applicant),
        "materials": list(state.materials),
        "missing": list(state.missing),
        "correction_deadline": state.correction_deadline.isoformat()
        if state.correction_deadline
        else None,
        "accepted_on": state.accepted_on.isoformat() if state.accepted_on else None,
        "outcome": state.outcome,
        "rating": state.rating,
        "clock": reading.as_dict() if reading else None,
        "warning": state.warning_level(),
        "tasks": [
            {"kind": t.kind, "role": t.role, "org": t.org, "claimed_by": t.claimed_by}
            for t in state.tasks(workflow)
        ],
        "actions": workflow.open_actions(state.status)
        + sorted(
            TASK_ACTIONS - {"complete_callback"}
            | ({"complete_callback"} if state.callback_open else set())
        ),
        "links": {
            "self": f"/cases/{case_id}",
            "events": f"/cases/{case_id}/events",
            "actions": f"/cases/{case_id}/actions/{{action}}",
        },
    }
