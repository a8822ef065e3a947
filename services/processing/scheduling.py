"""Processing's timers, kept from the log.

One consumer sees every case event. For each application event, in the consumer's
transaction (so exactly once in effect), it folds the case again and makes sure the
timers the case needs exist: the five-day notice window after receipt, the next clock
warning while the clock runs, the forwarding deadline. Timer ids are derived from the case
and the clock's epoch, so scheduling again is harmless, and a timer made stale by a later
event finds nothing to do when it fires.

A paper file entered later (补录) is typed in act by act: after its hand-in dated weeks
ago, every deadline is already past. Its timers wait a grace period (an hour unless set)
after the act was recorded, so that the rest of the file can be entered first; a timer the file's
later acts made stale then finds nothing to do, and a case still open is warned about
(or deemed accepted) then, as it truly is.

The case lists and worklists (``case_index``, ``tasks``) are a projection with its own
checkpoint now (``shared.application.projections.cases``), run by the processing service.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters import timers
from shared.adapters.eventlog import UnitOfWork
from shared.application.workflow.service import NAMESPACE
from shared.domain.events import StoredEvent
from shared.domain.moments import aware, entered_late
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.reference import Reference
from shared.domain.workflow.state import CaseState, fold

log = structlog.get_logger("caseflow.processing")

NOTICE_TIMER = "notice_window"
CLOCK_TIMER = "clock_warning"
FORWARD_TIMER = "forward_deadline"
PAPER_FILE_GRACE = timedelta(hours=1)
"""How long timers wait after an act entered later, for the rest of its paper file (the
default of ``CASEFLOW_PROCESSING_PAPER_FILE_GRACE_SECONDS``)."""


def midnight(day: date) -> datetime:
    """The start of ``day`` at the station, as an aware moment."""
    return datetime.combine(day, time(0), tzinfo=CHINA_TZ)


def timer_id(case_id: uuid.UUID, *parts: object) -> uuid.UUID:
    """A timer's id: the same facts always name the same timer."""
    return uuid.uuid5(NAMESPACE, ":".join(["timer", str(case_id), *map(str, parts)]))


class TimerScheduler:
    """Keeps the timers in step with the log."""

    def __init__(
        self, reference: Reference, paper_file_grace: timedelta = PAPER_FILE_GRACE
    ) -> None:
        self.ref = reference
        self.paper_file_grace = paper_file_grace

    async def handle(self, event: StoredEvent, uow: UnitOfWork) -> None:
        """Consumer handler: make sure the case's timers exist."""
        if event.case_kind != "application":
            return
        events = await uow.read_case(event.case_id)
        state = fold(events, self.ref.workflows)
        if not state.exists or not state.workflow or not state.workflow_version:
            return
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
        late = entered_late(event)
        settle = aware(event.recorded_at) + self.paper_file_grace if late else None

        def after_settling(due: datetime) -> datetime:
            return max(due, settle) if settle is not None else due

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
                    due_at=after_settling(midnight(calendar.add_working_days(last, 1))),
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
                        due_at=after_settling(
                            datetime.now(CHINA_TZ) if day <= today else midnight(day)
                        ),
                        payload={"level": level, "epoch": epoch},
                        correlation_id=event.correlation_id,
                    )
            if state.status == "forwarded" and state.forward_deadline:
                await timers.schedule(
                    conn,
                    timer_id=timer_id(state.case_id, FORWARD_TIMER, forwarded_version),
                    case_id=state.case_id,
                    kind=FORWARD_TIMER,
                    due_at=after_settling(
                        midnight(calendar.add_working_days(state.forward_deadline, 1))
                    ),
                    payload={"forward_deadline": state.forward_deadline.isoformat()},
                    correlation_id=event.correlation_id,
                )
        except ValueError as err:  # beyond the holiday calendar: say so, keep the case moving
            log.warning("no timer scheduled", case_id=str(state.case_id), error=str(err))
