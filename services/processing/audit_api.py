"""Processing's audit API, for the city's auditors only: a case's timeline (or the case
as it stood at a moment) and the delegation compliance report of a station.

Both read the log directly (``shared.application.audit.reading``), as ``caseflow audit`` does on a
copy of it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from shared.adapters.auth import Role
from shared.application.audit.reading import CaseNotFound, read_compliance, read_timeline
from shared.domain.audit.compliance import ComplianceError, check_period
from shared.domain.audit.timeline import Basis, TimelineError, check_moment
from shared.domain.delegation import DelegationError
from shared.domain.workflow.reference import Reference
from shared.web.auth import StaffDep, require_role
from shared.web.http import PROBLEM_JSON
from shared.web.runtime import EventLogDep

router = APIRouter(prefix="/audit", tags=["audit"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in (
        (401, "Not signed in"),
        (403, "Only the city's auditors may read this"),
        (404, "No such case in the log"),
        (422, "The request is not valid"),
    )
}


def _reference(request: Request) -> Reference:
    reference: Reference = request.app.state.reference
    return reference


@router.get(
    "/cases/{case_ref}/timeline",
    summary="A case's timeline, or the case as of a moment (auditors)",
    responses=_PROBLEMS,
)
async def timeline(
    case_ref: Annotated[
        str,
        Path(
            description="the case number (XF-2026-000123) or the case id",
            pattern=r"^([A-Z]{1,8}-\d{4}-\d{6}|[0-9a-fA-F-]{32,36})$",
        ),
    ],
    request: Request,
    log: EventLogDep,
    staff: StaffDep,
    as_of: Annotated[
        datetime | None,
        Query(description="rebuild the case as it stood then (with a UTC offset)"),
    ] = None,
    basis: Annotated[
        Basis | None,
        Query(
            description="with as_of: what had happened by then (occurred, the default) or "
            "what the system knew by then (recorded)"
        ),
    ] = None,
) -> dict[str, Any]:
    """Every event with its times, actor, authority, delegation (valid then?), status
    before and after and the clock after it; then the case's standing. The clock is read
    as of ``as_of``, or else as of the case's latest event."""
    require_role(staff, Role.auditor)
    if basis is not None and as_of is None:
        raise HTTPException(422, "basis goes with as_of: as of which moment?")
    if as_of is not None and as_of.tzinfo is None:
        raise HTTPException(422, "as_of needs a UTC offset, e.g. 2026-11-28T09:30:00+08:00")
    if as_of is not None:
        try:
            check_moment(as_of)
        except TimelineError as err:
            raise HTTPException(422, f"as_of {err}") from None
    try:
        async with log.engine.connect() as conn:
            found = await read_timeline(
                conn, case_ref, _reference(request), as_of=as_of, basis=basis or Basis.OCCURRED
            )
    except CaseNotFound as err:
        raise HTTPException(404, str(err)) from None
    except (TimelineError, DelegationError) as err:
        raise HTTPException(422, f"the log can't be read as one history: {err}") from None
    return found.as_json()


@router.get(
    "/compliance",
    summary="Delegation compliance of a station over a period (auditors)",
    responses=_PROBLEMS,
)
async def compliance(
    request: Request,
    log: EventLogDep,
    staff: StaffDep,
    station: Annotated[str, Query(max_length=50, description="e.g. xuefeng_station")],
    start: Annotated[date, Query(alias="from", description="first day, e.g. 2026-11-01")],
    end: Annotated[date, Query(alias="to", description="last day, included")],
) -> dict[str, Any]:
    """Each action under a delegated power in the period (days in China), checked again
    from the log: within, outside, after revocation, while suspended, expired, wrong
    role, citing the wrong instrument, not allowed by the workflow; and the refused
    attempts with their reasons."""
    require_role(staff, Role.auditor)
    reference = _reference(request)
    stations = sorted(o.code for o in reference.organisations.stations())
    if station not in stations:
        raise HTTPException(422, f"{station!r} is not a station; stations: {', '.join(stations)}")
    if end < start:
        raise HTTPException(422, f"'to' {end} is before 'from' {start}")
    try:
        check_period(start, end)
    except ComplianceError as err:
        raise HTTPException(422, str(err)) from None
    try:
        async with log.engine.connect() as conn:
            report = await read_compliance(conn, reference, station=station, start=start, end=end)
    except (ComplianceError, DelegationError) as err:
        raise HTTPException(422, f"the log can't be read as one history: {err}") from None
    return report.as_json()
