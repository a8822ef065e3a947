"""What processing's durable timers do when they fire.

Each handler runs in the timer's transaction (exactly once, across restarts and
replicas) and first folds the case again: a timer that an event has made stale — the
case was decided, the clock paused or moved — finds nothing to do.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from services.processing.scheduling import CLOCK_TIMER, FORWARD_TIMER, NOTICE_TIMER
from shared.adapters.eventlog import UnitOfWork
from shared.adapters.timers import Timer, TimerSpec
from shared.application.workflow.service import CaseService
from shared.domain.events import NewEvent, utcnow
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow import clock as clocks
from shared.domain.workflow import engine
from shared.domain.workflow.payloads import Empty
from shared.domain.workflow.state import fold

log = structlog.get_logger("caseflow.processing")


class Deadlines:
    """Timer handlers over one :class:`CaseService`."""

    def __init__(self, service: CaseService) -> None:
        self.service = service

    def specs(self) -> tuple[TimerSpec, ...]:
        return (
            TimerSpec(NOTICE_TIMER, self.notice_window),
            TimerSpec(CLOCK_TIMER, self.clock_warning),
            TimerSpec(FORWARD_TIMER, self.forward_deadline),
        )

    async def notice_window(self, timer: Timer, uow: UnitOfWork) -> None:
        """§32: five working days passed without a decision: the case counts as accepted."""
        try:
            await self.service.act(
                timer.case_id,
                "deem_accepted",
                Empty(),
                engine.SYSTEM,
                idempotency_key=f"timer:{timer.timer_id}",
                correlation_id=timer.correlation_id,
                uow=uow,
            )
            log.info("case deemed accepted", case_id=str(timer.case_id))
        except engine.NotAllowed:
            pass  # decided in time

    async def clock_warning(self, timer: Timer, uow: UnitOfWork) -> None:
        """Raise the yellow or red warning if the clock still says it is due."""
        state = fold(await uow.read_case(timer.case_id), self.service.workflows)
        epoch = int(timer.payload.get("epoch", -1))
        if not state.clock.running or state.clock.epoch != epoch:
            return
        item = self.service.item_of(state)
        if item is None:
            return
        now = utcnow()
        reading = clocks.read(
            state.clock,
            committed=item.committed_limit_days,
            legal=item.legal_limit_days,
            calendar=self.service.calendar,
            today=now.astimezone(CHINA_TZ).date(),
        )
        if reading.level is None or f"{reading.level}@{epoch}" in state.warnings:
            return
        event = _system_event(
            "ClockWarningRaised",
            now,
            state.authority,
            timer.correlation_id,
            {
                "level": reading.level,
                "epoch": epoch,
                "used": reading.used,
                "limit": reading.limit,
                "legal_limit": reading.legal_limit,
                "remaining": reading.remaining,
                "case_number": state.case_number,
                "escalated_to": "station_head",
            },
            timer,
        )
        await uow.append(timer.case_id, state.version, [event], case_kind="application")
        log.info("clock warning", case_id=str(timer.case_id), level=reading.level)

    async def forward_deadline(self, timer: Timer, uow: UnitOfWork) -> None:
        """The department did not answer in time: escalate to the station head."""
        state = fold(await uow.read_case(timer.case_id), self.service.workflows)
        deadline = timer.payload.get("forward_deadline")
        if state.status != "forwarded" or state.forward_overdue:
            return
        if state.forward_deadline is None or state.forward_deadline.isoformat() != deadline:
            return
        event = _system_event(
            "ForwardOverdue",
            utcnow(),
            state.authority,
            timer.correlation_id,
            {"to": state.forward_to, "deadline": deadline, "case_number": state.case_number},
            timer,
        )
        await uow.append(timer.case_id, state.version, [event], case_kind="application")
        log.info("forward overdue", case_id=str(timer.case_id), to=state.forward_to)


def _system_event(
    event_type: str,
    at: datetime,
    authority: str | None,
    correlation_id: str | None,
    payload: dict[str, object],
    timer: Timer,
) -> NewEvent:
    return NewEvent(
        event_id=engine.deterministic_id(timer.timer_id, event_type),
        event_type=event_type,
        occurred_at=at,
        actor=engine.SYSTEM.actor(),
        authority=authority,
        correlation_id=correlation_id,
        causation_id=f"timer:{timer.timer_id}",
        payload=payload,
    )
