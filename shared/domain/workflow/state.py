"""A case's state is a fold over its events; the workflow's table says which event may
follow which status. No I/O.

Events that a workflow's table names move the case (and are refused from a status the
table does not list); the others — refused attempts, task claims, clock warnings,
ratings, notifications — are facts about the case that leave its status alone.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from shared.domain.events import StoredEvent
from shared.domain.workcalendar import local_date
from shared.domain.workflow.definitions import Workflow, WorkflowRegistry

NO_CLAIMS: Mapping[str, str] = MappingProxyType({})
STANDING_TASKS = frozenset({"call_back", "escalation"})
"""Tasks no status opens (a call-back after a poor rating, a late clock's escalation): a
status change leaves their claims alone."""
NOT_WORK = frozenset(
    {
        "NotificationSent",
        "NotificationFailed",
        "PersonalDataViewed",
        "PersonalDataDisclosed",
        "ActionRefused",
    }
)
"""Facts about a case that are not work on it: telling someone, opening the applicant's
data or disclosing it to a department, an attempt that was refused. They leave
``updated_at`` (the case list's "updated", the worklist's "since") alone, so a notice, a
reading or a refused attempt never resets how long a task has waited."""


class IllegalTransition(Exception):
    """An event that the case's status does not allow."""


@dataclasses.dataclass(frozen=True)
class Clock:
    """A working-day clock: when it started, its pauses, when it stopped."""

    started_on: date | None = None
    pauses: tuple[tuple[date, date | None], ...] = ()
    stopped_on: date | None = None
    extension_days: int = 0
    epoch: int = 0
    """Bumped whenever the clock's deadlines move (start, resume, extension): a timer
    scheduled for an older epoch is stale."""

    @property
    def running(self) -> bool:
        """Counting now."""
        return self.started_on is not None and self.stopped_on is None and not self.paused

    @property
    def paused(self) -> bool:
        """Stopped for now (§45), to resume later."""
        return bool(self.pauses) and self.pauses[-1][1] is None

    def start(self, on: date, epoch: int) -> Clock:
        return Clock(started_on=on, extension_days=self.extension_days, epoch=epoch)

    def pause(self, on: date) -> Clock:
        if self.started_on is None or self.paused:
            return self
        return dataclasses.replace(self, pauses=(*self.pauses, (on, None)))

    def resume(self, on: date, epoch: int) -> Clock:
        if not self.paused:
            return self
        began, _ = self.pauses[-1]
        return dataclasses.replace(self, pauses=(*self.pauses[:-1], (began, on)), epoch=epoch)

    def stop(self, on: date) -> Clock:
        if self.started_on is None or self.stopped_on is not None:
            return self
        return dataclasses.replace(self, stopped_on=on)

    def extend(self, days: int, epoch: int) -> Clock:
        return dataclasses.replace(self, extension_days=self.extension_days + days, epoch=epoch)


@dataclasses.dataclass(frozen=True)
class Task:
    """Work waiting on a case: its kind, the role and organisation that do it, who claimed it."""

    kind: str
    role: str
    org: str
    claimed_by: str | None = None


@dataclasses.dataclass(frozen=True)
class CaseState:
    """Where a case stands after some of its events."""

    case_id: uuid.UUID | None = None
    case_kind: str | None = None
    status: str = ""
    version: int = 0
    workflow: str | None = None
    workflow_version: int | None = None
    item_code: str | None = None
    item_version: int | None = None
    station: str | None = None
    case_number: str | None = None
    authority: str | None = None
    """The authority in whose name the case was received."""
    delegation_id: str | None = None
    delegation_version: int | None = None
    applicant: Mapping[str, Any] | None = None
    channels: tuple[str, ...] = ()
    materials: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    correction_requested: bool = False
    correction_deadline: date | None = None
    received_at: datetime | None = None
    accepted_on: date | None = None
    forward_to: str | None = None
    forward_deadline: date | None = None
    forward_overdue: bool = False
    clock: Clock = dataclasses.field(default_factory=Clock)
    extended: bool = False
    claims: Mapping[str, str] = dataclasses.field(default_factory=lambda: NO_CLAIMS)
    warnings: frozenset[str] = frozenset()
    """Warnings raised, as ``level@epoch`` (``yellow@3``); a resumption carries them over
    to its epoch (an extension or a new start does not)."""
    recommendation: str | None = None
    outcome: str | None = None
    rating: int | None = None
    callback_open: bool = False
    refusals: int = 0
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The starting payload of a matter (mediation, publicity, assistance…)."""
    updated_at: datetime | None = None

    @property
    def exists(self) -> bool:
        """At least one event was folded."""
        return self.version > 0

    def warning_level(self) -> str | None:
        """The highest clock warning raised since the clock last moved, if any."""
        for level in ("red", "yellow"):
            if f"{level}@{self.clock.epoch}" in self.warnings:
                return level
        return None

    def tasks(self, workflow: Workflow) -> list[Task]:
        """The case's open tasks, as its workflow defines them for its status."""
        found: list[Task] = []
        rule = workflow.tasks.get(self.status)
        if rule is not None:
            org = self.forward_to if rule.org == "forward_to" else self.station
            if org:
                found.append(Task(rule.kind, rule.role, org, self.claims.get(rule.kind)))
        if self.callback_open and self.station:
            found.append(
                Task("call_back", "station_head", self.station, self.claims.get("call_back"))
            )
        if self.forward_overdue and self.status == "forwarded" and self.station:
            found.append(
                Task(
                    "chase_department",
                    "station_head",
                    self.station,
                    self.claims.get("chase_department"),
                )
            )
        if self.warning_level() and self.clock.running and self.station:
            found.append(
                Task("escalation", "station_head", self.station, self.claims.get("escalation"))
            )
        return found


_FIELDS = frozenset(f.name for f in dataclasses.fields(CaseState))


def _evolve(state: CaseState, **changes: Any) -> CaseState:
    """``dataclasses.replace`` for the fold's hot path: a copy with ``changes``, made without
    running ``__init__`` again (CaseState has no ``__post_init__``, and every field is set
    on the original), which makes a rebuild's fold several times faster."""
    assert changes.keys() <= _FIELDS, changes.keys() - _FIELDS
    new = object.__new__(CaseState)
    fields = new.__dict__
    fields.update(state.__dict__)
    fields.update(changes)
    return new


def _payload_date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else None


def apply(state: CaseState, event: StoredEvent, workflows: WorkflowRegistry) -> CaseState:
    """The state after ``event``."""
    payload = event.payload
    if state.version == 0:
        pinned = payload.get("workflow") or {}
        state = _evolve(
            state,
            case_id=event.case_id,
            case_kind=event.case_kind,
            workflow=pinned.get("name"),
            workflow_version=pinned.get("version"),
            item_code=payload.get("item_code"),
            item_version=payload.get("item_version"),
            station=payload.get("station") or event.actor_station,
            case_number=payload.get("case_number"),
            authority=event.authority,
            delegation_id=event.delegation_id,
            delegation_version=event.delegation_version,
            received_at=event.occurred_at,
            applicant=payload.get("applicant"),
            channels=tuple(payload.get("channels") or ()),
            materials=tuple(payload.get("materials") or ()),
            details=payload,
        )
    workflow = (
        workflows.get(state.workflow, state.workflow_version)
        if state.workflow and state.workflow_version
        else None
    )
    status = state.status
    kind = event.event_type
    if workflow is not None and kind in workflow.event_types:
        try:
            status = workflow.table[(state.status, kind)]
        except KeyError:
            raise IllegalTransition(
                f"{kind} is not allowed when the case is {state.status or 'new'}"
            ) from None
    changes: dict[str, Any] = {"status": status, "version": event.version}
    day = local_date(event.occurred_at)
    clock = state.clock
    rule = workflow.clock if workflow else None
    if rule is not None:
        if kind in rule.starts:
            clock = clock.start(_payload_date(payload.get("accepted_on")) or day, event.version)
        elif kind in rule.pauses:
            clock = clock.pause(day)
        elif kind in rule.resumes:
            clock = clock.resume(day, event.version)
            if clock.epoch != state.clock.epoch:
                # A pause moves the deadline, not the days used: warnings raised still stand
                # (raising them again for the new epoch would be a second card).
                old = f"@{state.clock.epoch}"
                changes["warnings"] = state.warnings | {
                    w.removesuffix(old) + f"@{clock.epoch}"
                    for w in state.warnings
                    if w.endswith(old)
                }
        elif kind in rule.stops:
            clock = clock.stop(day)
    claims = state.claims
    if status != state.status and claims:
        # a new status opens new tasks, unclaimed; a call-back or an escalation goes on
        standing = {k: v for k, v in claims.items() if k in STANDING_TASKS}
        claims = MappingProxyType(standing) if standing else NO_CLAIMS
    match kind:
        case "CaseAccepted" | "CaseDeemedAccepted":
            changes["accepted_on"] = _payload_date(payload.get("accepted_on")) or day
            changes["missing"] = ()
        case "CorrectionRequested":
            changes["correction_requested"] = True
            changes["missing"] = tuple(m["code"] for m in payload.get("missing", ()))
            changes["correction_deadline"] = _payload_date(payload.get("deadline"))
        case "CorrectionReceived":
            changes["materials"] = tuple(sorted({*state.materials, *payload.get("materials", ())}))
            changes["missing"] = ()
        case "DeadlineExtended":
            changes["extended"] = True
            clock = clock.extend(int(payload.get("days", 0)), event.version)
        case "ReviewCompleted":
            changes["recommendation"] = payload.get("recommendation")
        case "CaseForwarded":
            changes["forward_to"] = payload.get("to")
            changes["forward_deadline"] = _payload_date(payload.get("deadline"))
            changes["forward_overdue"] = False
        case "ForwardOverdue":
            changes["forward_overdue"] = True
        case "CaseApproved":
            changes["outcome"] = "approved"
        case "CaseRejected":
            changes["outcome"] = "rejected"
        case "CaseNotAccepted":
            changes["outcome"] = "not_accepted"
        case "CaseReopened":
            changes["outcome"] = None
        case "SatisfactionRated":
            score = int(payload["score"])
            changes["rating"] = score
            changes["callback_open"] = score <= 2
        case "CallbackCompleted":
            changes["callback_open"] = False
        case "TaskClaimed":
            claims = MappingProxyType({**claims, payload["task"]: payload["user"]})
        case "TaskReleased":
            claims = MappingProxyType({k: v for k, v in claims.items() if k != payload["task"]})
        case "ClockWarningRaised":
            changes["warnings"] = state.warnings | {f"{payload['level']}@{payload['epoch']}"}
        case "ActionRefused":
            changes["refusals"] = state.refusals + 1
        case _:
            pass
    changes["clock"] = clock
    changes["claims"] = claims
    if event.event_type not in NOT_WORK:
        changes["updated_at"] = event.recorded_at
    return _evolve(state, **changes)


def fold(events: Iterable[StoredEvent], workflows: WorkflowRegistry) -> CaseState:
    """The state after all of ``events``, in order."""
    state = CaseState()
    for event in events:
        state = apply(state, event, workflows)
    return state
