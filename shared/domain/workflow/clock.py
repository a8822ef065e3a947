"""Reading a case's working-day clock against its limits. No I/O.

Days are counted as the law counts them: from the day after the clock started, working
days only (the holiday calendar's public holidays off, adjusted working days on), with
pauses (§45: corrections, hearings, testing, expert review) left out. A yellow warning
falls due when 80 % of the committed limit is used, a red one when it is exceeded.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from typing import Protocol

from shared.domain.workflow.state import Clock

YELLOW_SHARE = 0.8
EXTENSION_DAYS = 10
"""§42: one extension of ten days, with the head's approval."""
FORWARD_LIMIT_DAYS = 20
"""§43: the lower office's review before the higher one decides."""
CORRECTION_NOTICE_DAYS = 5
"""§32: the one-time notice must be given within five days, or the case counts as accepted."""
CORRECTION_DAYS = 20
"""How long the applicant has to bring what the notice lists (the station's practice)."""


class Calendar(Protocol):
    """What the clock needs of a working calendar."""

    def is_working_day(self, day: date) -> bool: ...
    def add_working_days(self, start: date, n: int) -> date: ...
    def working_days_between(self, start: date, end: date) -> int: ...


@dataclasses.dataclass(frozen=True)
class ClockReading:
    """A clock as of one day."""

    used: int
    limit: int
    """The committed limit, plus the extension if one was granted."""
    legal_limit: int
    remaining: int
    paused_days: int
    running: bool
    paused: bool
    level: str | None
    """``yellow``, ``red`` or None."""
    deadline: date | None
    """The day the committed limit runs out if the clock keeps running from today."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        data = dataclasses.asdict(self)
        data["deadline"] = self.deadline.isoformat() if self.deadline else None
        return data


def yellow_at(limit: int) -> int:
    """Working days used at which the yellow warning falls due."""
    return max(1, math.ceil(limit * YELLOW_SHARE))


def read(
    clock: Clock, *, committed: int, legal: int, calendar: Calendar, today: date
) -> ClockReading:
    """The clock as of ``today``."""
    limit = committed + clock.extension_days
    legal_limit = legal + clock.extension_days
    if clock.started_on is None:
        return ClockReading(0, limit, legal_limit, limit, 0, False, False, None, None)
    end = min(today, clock.stopped_on) if clock.stopped_on else today
    elapsed = calendar.working_days_between(clock.started_on, end)
    paused_days = sum(
        calendar.working_days_between(began, min(ended or end, end))
        for began, ended in clock.pauses
    )
    used = max(0, elapsed - paused_days)
    level = "red" if used > limit else "yellow" if used >= yellow_at(limit) else None
    deadline = None
    if clock.running:
        deadline = calendar.add_working_days(today, max(0, limit - used))
    return ClockReading(
        used=used,
        limit=limit,
        legal_limit=legal_limit,
        remaining=limit - used,
        paused_days=paused_days,
        running=clock.running,
        paused=clock.paused,
        level=level,
        deadline=deadline,
    )


def next_warning(
    clock: Clock, *, committed: int, calendar: Calendar, today: date
) -> tuple[str, date] | None:
    """The next warning this clock will raise if it keeps running, and the day it falls due."""
    if not clock.running:
        return None
    reading = read(clock, committed=committed, legal=committed, calendar=calendar, today=today)
    if reading.used < yellow_at(reading.limit):
        return "yellow", calendar.add_working_days(today, yellow_at(reading.limit) - reading.used)
    if reading.used <= reading.limit:
        return "red", calendar.add_working_days(today, reading.limit + 1 - reading.used)
    return None
