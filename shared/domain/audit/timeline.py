"""A case's timeline, and the case as it stood at a moment. Pure: built from the case's
events, the reference data and the delegation register's events (all read from the log).

Every event, in version order, with its times, actor, the authority acted for, the
delegation it recorded and whether that delegation was valid then for the item and the
power (:mod:`shared.domain.audit.judge`), the status before and after, and the clock after it.

The clock after an event is read as of the event's own day (``occurred_at``, in China);
the case's clock at the end as of the given moment, or else as of the day of the case's
latest event — never "today", so the same log always gives the same timeline.

**As of a moment** ``T``, in two senses (:class:`Basis`):

- ``occurred``: what had happened by ``T`` — events with ``occurred_at <= T``, e.g. a
  paper form handed in on Monday and entered on Thursday counts from Monday;
- ``recorded``: what the system knew by ``T`` — events with ``recorded_at <= T``; that
  form counts only from Thursday.

The delegation register is taken in the same sense, so "valid then" means valid as the
system knew it then (``recorded``) or as things stood (``occurred``).
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from shared.domain.audit.judge import Judgement, Use, judge, not_allowed, register_from
from shared.domain.events import StoredEvent
from shared.domain.privacy import masked
from shared.domain.workcalendar import local_date
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.definitions import UnknownWorkflow
from shared.domain.workflow.reference import Reference
from shared.domain.workflow.state import CaseState, IllegalTransition, apply
from shared.domain.workflow.views import clock_reading

DETAIL_KEYS = (
    "action",
    "item_code",
    "item_version",
    "reason",
    "message",
    "fields",
    "task",
    "user",
    "level",
    "channel",
    "audience",
    "recipient",
    "about_event_type",
    "to",
    "deadline",
    "accepted_on",
    "decided_on",
    "delivered_on",
    "decision_number",
    "recommendation",
    "score",
    "method",
    "days",
    "deemed",
)
"""Payload fields a timeline shows. A whitelist: the applicant's personal data (in
``CaseReceived``) never reaches it; ``recipient`` of a notice is stored masked; what free
text names of ID or phone numbers or e-mail addresses is masked."""


class Basis(enum.StrEnum):
    """In which sense "as of T": what had happened, or what the system knew."""

    OCCURRED = "occurred"
    RECORDED = "recorded"


class TimelineError(ValueError):
    """The events can't be told as one history (the message says which and why)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClockPoint:
    """A case's working-day clock read as of one day."""

    as_of: date
    started: bool
    used: int
    paused_days: int
    remaining: int
    limit: int
    legal_limit: int
    running: bool
    paused: bool
    level: str | None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        data = dataclasses.asdict(self)
        data["as_of"] = self.as_of.isoformat()
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One event of the timeline."""

    position: int
    version: int
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    actor_user: str
    actor_role: str
    actor_station: str | None
    authority: str | None
    delegation_id: str | None
    delegation_version: int | None
    delegation_valid: bool | None
    """Whether the recorded delegation was the one in force then for the item and the
    power (None: not an action under a power)."""
    judgement: Judgement | None
    status_before: str
    status_after: str
    clock: ClockPoint | None
    details: dict[str, Any]

    @property
    def not_allowed(self) -> str | None:
        """Why the workflow did not allow this event then (None: it did); the status and
        the clock stay as they were before it."""
        if self.judgement is not None and self.judgement.use is Use.NOT_ALLOWED:
            return self.judgement.message
        return None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "position": self.position,
            "version": self.version,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "actor": {
                "user": self.actor_user,
                "role": self.actor_role,
                "station": self.actor_station,
            },
            "authority": self.authority,
            "delegation": {
                "id": self.delegation_id,
                "version": self.delegation_version,
                "valid": self.delegation_valid,
                "check": self.judgement.as_json() if self.judgement else None,
            },
            "status_before": self.status_before,
            "status_after": self.status_after,
            "not_allowed": self.not_allowed,
            "clock": self.clock.as_json() if self.clock else None,
            "details": self.details,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Standing:
    """Where the case stood after the events counted."""

    as_of: datetime | None
    basis: Basis | None
    known: bool
    """False when no event of the case counts yet (it had not happened / was not known)."""
    status: str
    version: int
    events_counted: int
    events_total: int
    clock: ClockPoint | None
    clock_as_of: date | None
    """The day the clock is read: ``as_of``'s, else the case's latest event's."""
    tasks: tuple[dict[str, str | None], ...]
    outcome: str | None
    not_counted: tuple[tuple[int, str, datetime, datetime], ...]
    """Events left out: (version, type, occurred_at, recorded_at)."""

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "basis": self.basis.value if self.basis else None,
            "known": self.known,
            "status": self.status,
            "version": self.version,
            "events_counted": self.events_counted,
            "events_total": self.events_total,
            "clock": self.clock.as_json() if self.clock else None,
            "clock_as_of": self.clock_as_of.isoformat() if self.clock_as_of else None,
            "clock_as_of_means": (
                "the given moment"
                if self.as_of
                else "the day of the case's latest event (not today: the same log always "
                "gives the same answer)"
            ),
            "tasks": list(self.tasks),
            "outcome": self.outcome,
            "not_counted": [
                {
                    "version": v,
                    "event_type": t,
                    "occurred_at": o.isoformat(),
                    "recorded_at": r.isoformat(),
                }
                for v, t, o, r in self.not_counted
            ],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Timeline:
    """A case's history as an auditor reads it."""

    case_id: uuid.UUID
    case_number: str | None
    case_kind: str
    station: str | None
    authority: str | None
    item_code: str | None
    item_version: int | None
    workflow: str | None
    workflow_version: int | None
    entries: tuple[Entry, ...]
    standing: Standing

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "case_id": str(self.case_id),
            "case_number": self.case_number,
            "case_kind": self.case_kind,
            "station": self.station,
            "authority": self.authority,
            "item": {"code": self.item_code, "version": self.item_version}
            if self.item_code
            else None,
            "workflow": {"name": self.workflow, "version": self.workflow_version}
            if self.workflow
            else None,
            "events": [e.as_json() for e in self.entries],
            "state": self.standing.as_json(),
        }


def check_moment(at: datetime) -> None:
    """Refuse a moment the timeline can't use: without a time zone, or so near the ends
    of the calendar that it has no date in UTC or in China."""
    if at.tzinfo is None:
        raise TimelineError("a moment needs a time zone, e.g. 2026-11-28T09:30:00+08:00")
    try:
        at.astimezone(UTC)
        local_date(at)
    except OverflowError:
        raise TimelineError(
            f"{at.isoformat()} is out of range: it has no date in UTC or in China "
            "(give a moment between 0001-01-02 and 9999-12-30)"
        ) from None


def counted(events: Iterable[StoredEvent], at: datetime, basis: Basis) -> list[StoredEvent]:
    """The events that count as of ``at`` in the sense ``basis``, in the given order."""
    check_moment(at)
    if basis is Basis.OCCURRED:
        return [e for e in events if e.occurred_at <= at]
    return [e for e in events if e.recorded_at <= at]


def _clock(state: CaseState, reference: Reference, day: date) -> ClockPoint | None:
    if state.item_code is None:
        return None
    try:
        item = reference.catalogue.get(state.item_code, state.item_version)
    except LookupError:
        return None
    reading: clocks.ClockReading | None = clock_reading(state, item, reference.calendar, day)
    if reading is None:
        return None
    return ClockPoint(
        as_of=day,
        started=state.clock.started_on is not None,
        used=reading.used,
        paused_days=reading.paused_days,
        remaining=reading.remaining,
        limit=reading.limit,
        legal_limit=reading.legal_limit,
        running=reading.running,
        paused=reading.paused,
        level=reading.level,
    )


def _details(event: StoredEvent) -> dict[str, Any]:
    # Free text (a reason, a refusal's message) may name a phone number or an address.
    return {k: masked(event.payload[k], k) for k in DETAIL_KEYS if k in event.payload}


def build_timeline(
    events: Sequence[StoredEvent],
    reference: Reference,
    delegation_events: Iterable[StoredEvent],
    *,
    as_of: datetime | None = None,
    basis: Basis = Basis.OCCURRED,
) -> Timeline:
    """The case's timeline from its events (version order), the reference data and the
    delegation register's events; as of ``as_of`` in the sense ``basis`` if given."""
    if not events:
        raise TimelineError("a timeline needs at least one event")
    history = sorted(events, key=lambda e: e.version)
    registered = list(delegation_events)
    if as_of is not None:
        chosen = counted(history, as_of, basis)
        registered = counted(registered, as_of, basis)
    else:
        chosen = history
    register = register_from(registered)
    entries: list[Entry] = []
    state = CaseState()
    for event in chosen:
        before = state
        judgement: Judgement | None
        try:
            state = apply(state, event, reference.workflows)
        except (IllegalTransition, UnknownWorkflow) as err:
            # A finding on this event; the rest of the history is still told.
            judgement = not_allowed(event, before, reference.workflows, err)
        else:
            judgement = judge(
                event,
                before,
                state,
                workflows=reference.workflows,
                catalogue=reference.catalogue,
                register=register,
                until=as_of,
            )
        entries.append(
            Entry(
                position=event.position,
                version=event.version,
                event_id=event.event_id,
                event_type=event.event_type,
                occurred_at=event.occurred_at,
                recorded_at=event.recorded_at,
                actor_user=event.actor_user,
                actor_role=event.actor_role,
                actor_station=event.actor_station,
                authority=event.authority,
                delegation_id=event.delegation_id,
                delegation_version=event.delegation_version,
                delegation_valid=judgement.valid_for(event.delegation_id, event.delegation_version)
                if judgement
                else None,
                judgement=judgement,
                status_before=before.status,
                status_after=state.status,
                clock=_clock(state, reference, local_date(event.occurred_at)),
                details=_details(event),
            )
        )
    first = history[0]
    opened = state if chosen else _opening(history, reference)
    clock_day = (
        local_date(as_of)
        if as_of is not None
        else local_date(max(e.occurred_at for e in chosen))
        if chosen
        else None
    )
    kept = {e.version for e in chosen}
    left_out = [e for e in history if e.version not in kept]
    standing = Standing(
        as_of=as_of,
        basis=basis if as_of is not None else None,
        known=bool(chosen),
        status=state.status,
        version=state.version,
        events_counted=len(chosen),
        events_total=len(history),
        clock=_clock(state, reference, clock_day) if clock_day else None,
        clock_as_of=clock_day,
        tasks=_tasks(state, reference),
        outcome=state.outcome,
        not_counted=tuple(
            (e.version, e.event_type, e.occurred_at, e.recorded_at) for e in left_out
        ),
    )
    return Timeline(
        case_id=first.case_id,
        case_number=opened.case_number,
        case_kind=first.case_kind,
        station=opened.station,
        authority=opened.authority,
        item_code=opened.item_code,
        item_version=opened.item_version,
        workflow=opened.workflow,
        workflow_version=opened.workflow_version,
        entries=tuple(entries),
        standing=standing,
    )


def _opening(history: Sequence[StoredEvent], reference: Reference) -> CaseState:
    """The case's identity (number, station, item) from its first event, for a case no
    event of which counts yet."""
    try:
        return apply(CaseState(), history[0], reference.workflows)
    except (IllegalTransition, UnknownWorkflow):
        return CaseState()


def _tasks(state: CaseState, reference: Reference) -> tuple[dict[str, str | None], ...]:
    if not state.workflow or not state.workflow_version:
        return ()
    workflow = reference.workflows.get(state.workflow, state.workflow_version)
    return tuple(
        {"kind": t.kind, "role": t.role, "org": t.org, "claimed_by": t.claimed_by}
        for t in state.tasks(workflow)
    )
