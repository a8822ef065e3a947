"""Processing's read models and timers, kept from the log.

One consumer sees every case event. For each, in the consumer's transaction (so exactly
once in effect), it folds the case again and:

- writes the case's row in ``case_index`` and its open tasks in ``tasks`` (worklists);
- makes sure the timers the case needs exist: the five-day notice window after receipt,
  the next clock warning while the clock runs, the forwarding deadline. Timer ids are
  derived from the case and the clock's epoch, so scheduling again is harmless, and a
  timer made stale by a later event finds nothing to do when it fires.

Folding the whole case rather than applying the one event makes the result independent
of delivery order and repeats: the row always equals the fold of the log.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import timers
from shared.bus.consumer import UnitOfWork
from shared.events import StoredEvent
from shared.workcalendar import CHINA_TZ
from shared.workflow import clock as clocks
from shared.workflow.definitions import Workflow
from shared.workflow.reference import Reference
from shared.workflow.service import NAMESPACE
from shared.workflow.state import CaseState, fold
from shared.workflow.tables import case_index, tasks

log = structlog.get_logger("caseflow.processing")

CASE_KINDS = ("application", "mediation", "legal_publicity", "assistance", "police_assistance")

NOTICE_TIMER = "notice_window"
CLOCK_TIMER = "clock_warning"
FORWARD_TIMER = "forward_deadline"


def midnight(day: date) -> datetime:
    """The start of ``day`` at the station, as an aware moment."""
    return datetime.combine(day, time(0), tzinfo=CHINA_TZ)


def timer_id(case_id: uuid.UUID, *parts: object) -> uuid.UUID:
    """A timer's id: the same facts always name the same timer."""
    return uuid.uuid5(NAMESPACE, ":".join(["timer", str(case_id), *map(str, parts)]))


class Projector:
    """Keeps ``case_index``, ``tasks`` and the timers in step with the log."""

    def __init__(self, reference: Reference) -> None:
        self.ref = reference

    async def handle(self, event: StoredEvent, uow: UnitOfWork) -> None:
        """Consumer handler: refresh the case's read models and timers."""
        if event.case_kind == "reception":
            await write_visit(uow.conn, event)
            return
        if event.case_kind not in CASE_KINDS:
            return
        events = await uow.read_case(event.case_id)
        state = fold(events, self.ref.workflows)
        if not state.exists or not state.workflow or not state.workflow_version:
            return
        workflow = self.ref.workflows.get(state.workflow, state.workflow_version)
        await write_rows(uow.conn, state, workflow)
        if state.case_kind == "application":
            forwarded = [e.version for e in events if e.event_type == "CaseForwarded"]
            await self.schedule(uow.conn, state, event, forwarded[-1] if forwarded else None)

    async def schedule(
        self,
        conn: AsyncConnection,
        state: CaseState,
        event: StoredEvent,
        forwarded_version: int | None = None,
    ) -> None:
        """Make sure the timers this case needs now exist.

        ``forwarded_version`` is the version of the case's latest ``CaseForwarded``: one
        forwarding, one deadline timer, however many events follow it."""
        assert state.case_id is not None
        item = self.ref.catalogue.get(state.item_code or "", state.item_version)
        calendar = self.ref.calendar
        try:
            if state.status == "received" and state.received_at and not state.correction_requested:
                received = state.received_at.astimezone(CHINA_TZ).date()
                last = calendar.add_working_days(received, clocks.CORRECTION_NOTICE_DAYS)
                await timers.schedule(
                    conn,
                    timer_id=timer_id(state.case_id, NOTICE_TIMER),
                    case_id=state.case_id,
                    kind=NOTICE_TIMER,
                    due_at=midnight(calendar.add_working_days(last, 1)),
                    payload={},
                    correlation_id=event.correlation_id,
                )
            if state.clock.running:
                today = datetime.now(CHINA_TZ).date()
                upcoming = clocks.next_warning(
                    state.clock,
                    committed=item.committed_limit_days,
                    calendar=calendar,
                    today=today,
                )
                due_level = clocks.read(
                    state.clock,
                    committed=item.committed_limit_days,
                    legal=item.legal_limit_days,
                    calendar=calendar,
                    today=today,
                ).level
                if due_level and f"{due_level}@{state.clock.epoch}" not in state.warnings:
                    upcoming = (due_level, today)
                if upcoming is not None:
                    level, day = upcoming
                    epoch = state.clock.epoch
                    await timers.schedule(
                        conn,
                        timer_id=timer_id(state.case_id, CLOCK_TIMER, level, epoch),
                        case_id=state.case_id,
                        kind=CLOCK_TIMER,
                        due_at=datetime.now(CHINA_TZ) if day <= today else midnight(day),
                        payload={"level": level, "epoch": epoch},
                        correlation_id=event.correlation_id,
                    )
            if state.status == "forwarded" and state.forward_deadline:
                await timers.schedule(
                    conn,
                    timer_id=timer_id(state.case_id, FORWARD_TIMER, forwarded_version),
                    case_id=state.case_id,
                    kind=FORWARD_TIMER,
                    due_at=midnight(calendar.add_working_days(state.forward_deadline, 1)),
                    payload={"forward_deadline": state.forward_deadline.isoformat()},
                    correlation_id=event.correlation_id,
                )
        except ValueError as err:  # beyond the holiday calendar: say so, keep the case moving
            log.warning("no timer scheduled", case_id=str(state.case_id), error=str(err))


async def write_visit(conn: AsyncConnection, event: StoredEvent) -> None:
    """A visitor in the reception log, listed with the cases (kind ``reception``)."""
    await conn.execute(sa.delete(case_index).where(case_index.c.case_id == event.case_id))
    await conn.execute(
        sa.insert(case_index).values(
            case_id=event.case_id,
            case_kind="reception",
            station=event.payload.get("station") or event.actor_station,
            authority=event.authority,
            status="visited",
            version=event.version,
            applicant_name=event.payload.get("visitor_name"),
            opened_at=event.occurred_at,
            updated_at=event.recorded_at,
            summary={
                "purpose": event.payload.get("purpose"),
                "village": event.payload.get("village"),
            },
        )
    )


def summary(state: CaseState) -> dict[str, object]:
    """A small JSON summary for lists (no personal data beyond the name)."""
    return {
        "outcome": state.outcome,
        "rating": state.rating,
        "accepted_on": state.accepted_on.isoformat() if state.accepted_on else None,
        "clock_started_on": state.clock.started_on.isoformat() if state.clock.started_on else None,
        "extended": state.extended,
        "refusals": state.refusals,
    }


async def write_rows(conn: AsyncConnection, state: CaseState, workflow: Workflow) -> None:
    """Replace the case's row and tasks with what its fold says."""
    assert state.case_id is not None
    applicant = state.applicant or {}
    details = state.details
    name = applicant.get("name") if isinstance(applicant, dict) else None
    row = {
        "case_id": state.case_id,
        "case_number": state.case_number,
        "case_kind": state.case_kind or "application",
        "station": state.station,
        "authority": state.authority,
        "forward_to": state.forward_to,
        "item_code": state.item_code,
        "item_version": state.item_version,
        "workflow": state.workflow,
        "workflow_version": state.workflow_version,
        "status": state.status,
        "version": state.version,
        "applicant_name": name or details.get("title") or details.get("topic"),
        "warning": state.warning_level(),
        "opened_at": state.received_at,
        "updated_at": state.updated_at,
        "summary": summary(state),
    }
    await conn.execute(sa.delete(tasks).where(tasks.c.case_id == state.case_id))
    await conn.execute(sa.delete(case_index).where(case_index.c.case_id == state.case_id))
    await conn.execute(sa.insert(case_index).values(**row))
    open_tasks = [
        {
            "case_id": state.case_id,
            "kind": task.kind,
            "role": task.role,
            "org": task.org,
            "claimed_by": task.claimed_by,
            "case_number": state.case_number,
            "status": state.status,
            "warning": state.warning_level(),
            "opened_at": state.updated_at,
        }
        for task in state.tasks(workflow)
    ]
    if open_tasks:
        await conn.execute(sa.insert(tasks), open_tasks)
