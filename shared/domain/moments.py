"""When something happened, as staff tell it: an act entered later from a paper record
(补录) carries the moment it happened. No I/O.

``occurred_at`` is checked at the edge the same way everywhere: text with a time zone,
not in the future. An act is *entered late* when the log recorded it more than
:data:`ENTERED_LATE_AFTER` after it happened: a fact of the envelope (``occurred_at``
against ``recorded_at``), so every reader — statistics, timelines, a replayed copy —
tells the same acts apart without a marker of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BeforeValidator, Field

BACKFILL_PERMISSION = "backfill"
"""The special permission that lets staff date an action on a case in the past."""
ENTERED_LATE_AFTER = timedelta(minutes=15)
"""An act recorded more than this after it happened was entered later (补录): a form
typed in while the applicant waits is not."""
PAPER_SESSION = timedelta(days=1)
"""Acts recorded within this of a case's act entered later belong to the same entering of
its paper file: a decision among them recorded without its moment is an *undated* one."""


def as_text(value: Any) -> Any:
    """A moment must come as text: pydantic would read a number as seconds since 1970."""
    if isinstance(value, int | float):
        raise ValueError("give the date and time as text, e.g. 2026-11-28T09:30:00+08:00")
    return value


def not_future(value: datetime | None) -> datetime | None:
    """A moment with its time zone, not after now."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-11-28T09:30:00+08:00")
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+08:00 has no date in UTC
        raise ValueError("is out of range: check the date") from None
    if in_utc > datetime.now(UTC):
        raise ValueError("can't be in the future")
    return value


OccurredAt = Annotated[
    datetime | None,
    BeforeValidator(as_text),
    AfterValidator(not_future),
    Field(
        default=None,
        description="When it happened, if earlier than now (a paper record entered later, "
        "补录), e.g. 2021-12-06T10:30:00+08:00",
    ),
]


class Dated(Protocol):
    """An event's two times."""

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def recorded_at(self) -> datetime: ...


def aware(moment: datetime) -> datetime:
    """A stored time with its zone (SQLite hands times back without it: they are UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def late_entry(occurred: datetime, recorded: datetime) -> bool:
    """Whether something recorded at ``recorded`` that happened at ``occurred`` was entered
    later (补录)."""
    return aware(recorded) - aware(occurred) > ENTERED_LATE_AFTER


def entered_late(event: Dated) -> bool:
    """Whether the log recorded ``event`` well after it happened (补录)."""
    return late_entry(event.occurred_at, event.recorded_at)
