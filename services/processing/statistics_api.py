"""The station statistics report over HTTP: a station head sees their own station's, the
city's auditors any station's or town's. Read from the ``statistics`` projection, as
``caseflow audit statistics`` does."""

from __future__ import annotations

import enum
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from shared.adapters.auth import Role
from shared.application.statistics.reading import read_statistics
from shared.application.statistics.render import to_csv, to_html
from shared.application.statistics.report import StatisticsError
from shared.web.auth import StaffDep, require_role
from shared.web.http import PROBLEM_JSON
from shared.web.workflow.http import ServiceDep

router = APIRouter(prefix="/reports", tags=["reports"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in (
        (401, "Not signed in"),
        (403, "Only the station's head or the city's auditors may read this"),
        (422, "The request is not valid"),
    )
}


class ReportFormat(enum.StrEnum):
    json = "json"
    csv = "csv"
    html = "html"


_REPORT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report as JSON, or as CSV or a printable page (``format``)",
        "content": {media: {"schema": {"type": "string"}} for media in ("text/csv", "text/html")},
    }
}


@router.get(
    "/statistics",
    summary="Station statistics over a period (站点统计): station head, auditors",
    responses={**_REPORT, **_PROBLEMS},
    response_model=None,
)
async def statistics(
    service: ServiceDep,
    staff: StaffDep,
    start: Annotated[date, Query(alias="from", description="first day, e.g. 2026-11-01")],
    end: Annotated[date, Query(alias="to", description="last day, included")],
    station: Annotated[
        str | None, Query(max_length=50, description="a station, e.g. xuefeng_station")
    ] = None,
    town: Annotated[
        str | None, Query(max_length=50, description="a town, for all its stations (auditors)")
    ] = None,
    output: Annotated[
        ReportFormat, Query(alias="format", description="json, csv or a printable html page")
    ] = ReportFormat.json,
) -> dict[str, Any] | Response:
    """People received, matters handled by kind and by service item, completed at the
    station vs forwarded, on-time rates against the committed and legal limits, average
    working days and satisfaction, counted on the days (in China) things happened."""
    require_role(staff, Role.station_head, Role.auditor)
    if staff.role is Role.station_head:
        if town is not None or (station is not None and station != staff.org):
            raise HTTPException(403, f"a station head sees only their own station ({staff.org})")
        station = staff.org
    try:
        async with service.log.engine.connect() as conn:
            report = await read_statistics(
                conn,
                service.organisations,  # type: ignore[arg-type]
                service.catalogue,
                station=station,
                town=town,
                start=start,
                end=end,
            )
    except StatisticsError as err:
        raise HTTPException(422, str(err)) from None
    if output is ReportFormat.csv:
        return Response(to_csv(report), media_type="text/csv; charset=utf-8")
    if output is ReportFormat.html:
        return Response(to_html(report), media_type="text/html; charset=utf-8")
    return report.as_json()
