"""The workflow engine: from a case's state and a staff member's action to the events that
record it — or to a refusal. No I/O: the caller loads the case, asks the delegation
register for a grant, and appends what this module returns.

Order of checks, as a reviewer would apply them: is the action known and allowed from the
case's status (409 otherwise, nothing recorded); may this role take it (403, recorded);
does a delegation valid now cover it (403, recorded; checked by the caller with the
:class:`Step` this module names); then the action's own rules (one correction notice,
one extension, a claimed task) and its events.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime
from typing import Any, Protocol

from shared.domain.events import Actor, NewEvent
from shared.domain.workcalendar import local_date
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.definitions import SYSTEM_ROLE, Transition, Workflow
from shared.domain.workflow.payloads import (
    APPEAL_NOTICE_EN,
    APPEAL_NOTICE_ZH,
    TASK_ACTIONS,
    ActionBody,
    CompleteCallback,
    Deliver,
    RequestCorrection,
    SubmitCorrection,
    TaskRef,
)
from shared.domain.workflow.state import CaseState


class MaterialSpec(Protocol):
    """A required material, as the catalogue gives it."""

    @property
    def code(self) -> str: ...
    @property
    def name_zh(self) -> str: ...
    @property
    def name_en(self) -> str: ...


class ItemSpec(Protocol):
    """What the engine needs of a catalogue item version."""

    @property
    def code(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def authority(self) -> str: ...
    @property
    def committed_limit_days(self) -> int: ...
    @property
    def legal_limit_days(self) -> int: ...
    @property
    def forward_to(self) -> str | None: ...
    @property
    def materials(self) -> tuple[Any, ...]: ...


class NotAllowed(Exception):
    """The action can't be taken in the case's state (HTTP 409); nothing is recorded."""


class Invalid(Exception):
    """The action's details don't fit the case (HTTP 422); nothing is recorded."""


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A refused attempt: why, in words a clerk understands. Recorded as ``ActionRefused``."""

    reason: str
    message: str
    delegation_id: str | None = None
    """The delegation the refusal is about, if one came close (revoked, suspended…)."""
    delegation_version: int | None = None
    power: str | None = None
    """The delegated power the action needed, if the delegation check refused it."""

    @classmethod
    def recorded(cls, payload: dict[str, Any]) -> Refusal:
        """The refusal an ``ActionRefused`` payload records (to answer a retry the same)."""
        return cls(
            payload["reason"],
            payload["message"],
            payload.get("delegation_id"),
            payload.get("delegation_version"),
            payload.get("power"),
        )

    def cited(self) -> dict[str, Any]:
        """The payload fields that name the delegation and power, where known."""
        fields = {
            "delegation_id": self.delegation_id,
            "delegation_version": self.delegation_version,
            "power": self.power,
        }
        return {k: v for k, v in fields.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Staff:
    """Who acts: user, role and organisation, and any special permissions."""

    user: str
    role: str
    org: str
    permissions: frozenset[str] = frozenset()

    def actor(self) -> Actor:
        return Actor(user=self.user, role=self.role, station=self.org)


@dataclasses.dataclass(frozen=True)
class Authority:
    """In whose name an action is taken, under which delegation version."""

    authority: str | None
    delegation_id: str | None = None
    delegation_version: int | None = None


@dataclasses.dataclass(frozen=True)
class Step:
    """An action that passed the status and role checks: what remains is the delegation."""

    action: str
    event: str
    power: str | None
    transition: Transition | None


@dataclasses.dataclass(frozen=True)
class Context:
    """Facts the engine needs beside the case: when, the item, the calendar, tracing ids."""

    at: datetime
    calendar: clocks.Calendar
    item: ItemSpec | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    now: datetime | None = None
    """Set when the act is dated in the past (补录, ``at`` is when it happened): the moment
    it was tried, at which a refusal of it is recorded."""


def plan(state: CaseState, workflow: Workflow, action: str, staff: Staff) -> Step | Refusal:
    """Check the action against the workflow and the actor's role.

    Raises :class:`NotAllowed` if the workflow has no such action from the case's status;
    returns a :class:`Refusal` for a wrong role or a missing special permission.
    """
    if action in TASK_ACTIONS:
        if action == "complete_callback" and staff.role != "station_head":
            return Refusal("wrong_role", "only the station head calls applicants back")
        return Step(action, _TASK_EVENTS[action], None, None)
    step = workflow.step(state.status, action)
    if step is None:
        known = action in workflow.actions()
        allowed = ", ".join(workflow.open_actions(state.status)) or "none"
        why = (
            f"{action} is not possible while the case is {state.status or 'new'}"
            if known
            else f"{workflow.name} v{workflow.version} has no action {action!r}"
        )
        raise NotAllowed(f"{why} (actions now: {allowed})")
    if staff.role not in step.roles:
        roles = ", ".join(step.roles)
        return Refusal("wrong_role", f"{action} must be done by: {roles} (not {staff.role})")
    if staff.role == "department_officer" and not any(
        task.org == staff.org for task in state.tasks(workflow)
    ):
        # Seeing a case (its competent authority does) is not deciding it: a department
        # acts only while the case waits for it (forwarded to it, not reopened since).
        where = (
            f"it is {state.status}, forwarded to {state.forward_to}"
            if state.forward_to
            else f"it is {state.status}, not forwarded"
        )
        return Refusal(
            "not_forwarded_to_authority",
            f"{action} is for the authority the case is forwarded to, not {staff.org} ({where})",
        )
    if step.permission and step.permission not in staff.permissions:
        return Refusal(
            "missing_permission", f"{action} needs the special permission {step.permission!r}"
        )
    return Step(action, step.event, step.power, step)


_TASK_EVENTS = {
    "claim": "TaskClaimed",
    "release": "TaskReleased",
    "complete_callback": "CallbackCompleted",
}


def refusal_event(
    state: CaseState, action: str, refusal: Refusal, staff: Staff, ctx: Context
) -> NewEvent:
    """The record of a refused attempt: when it was tried (an attempt to date an act in the
    past names the moment it claimed, ``dated_at``)."""
    dated = {"dated_at": ctx.at.isoformat()} if ctx.now is not None else {}
    return NewEvent(
        event_type="ActionRefused",
        occurred_at=ctx.now or ctx.at,
        actor=staff.actor(),
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
        payload={
            "action": action,
            "reason": refusal.reason,
            "message": refusal.message,
            "status": state.status,
            **refusal.cited(),
            **dated,
        },
    )


def decide(
    state: CaseState,
    workflow: Workflow,
    step: Step,
    body: ActionBody,
    staff: Staff,
    acting_for: Authority,
    ctx: Context,
) -> list[NewEvent]:
    """The events that record ``step`` on the case."""
    payload: dict[str, Any] = body.model_dump(mode="json", exclude_none=True)
    today = local_date(ctx.at)
    if step.transition is not None:
        payload["status_before"] = state.status
        payload["status_after"] = step.transition.target(state.status)
    builder = _BUILDERS.get(step.action)
    if builder is not None:
        payload = builder(state, workflow, body, staff, ctx, today, payload)
    return [
        NewEvent(
            event_type=step.event,
            occurred_at=ctx.at,
            actor=staff.actor(),
            authority=acting_for.authority,
            delegation_id=acting_for.delegation_id,
            delegation_version=acting_for.delegation_version,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
            payload=payload,
        )
    ]


_Payload = dict[str, Any]


def _item(ctx: Context) -> ItemSpec:
    if ctx.item is None:
        raise Invalid("this action needs the case's service item")
    return ctx.item


def missing_materials(item: ItemSpec, handed_in: set[str]) -> list[MaterialSpec]:
    """Required materials not handed in, in catalogue order."""
    return [m for m in item.materials if m.code not in handed_in]


def _accept(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    _staff: Staff,
    ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    item = _item(ctx)
    missing = missing_materials(item, set(state.materials))
    if missing:
        names = "、".join(m.name_zh for m in missing)
        raise Invalid(
            f"materials are still missing ({names}); send the one-time correction notice "
            "instead (一次性告知)"
        )
    return {**payload, **acceptance_receipt(state, item, ctx.calendar, today)}


def _deem_accepted(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    _staff: Staff,
    ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    """§32: no decision within five working days — accepted from the day of receipt."""
    received = local_date(state.received_at) if state.received_at else today
    return {
        **payload,
        **acceptance_receipt(state, _item(ctx), ctx.calendar, received),
        "deemed": True,
        "reason": "no decision or correction notice within 5 working days of receipt (§32)",
    }


def acceptance_receipt(
    state: CaseState, item: ItemSpec, calendar: clocks.Calendar, accepted_on: date
) -> _Payload:
    """The dated written receipt of acceptance (受理回执)."""
    return {
        "case_number": state.case_number,
        "item_code": item.code,
        "accepted_on": accepted_on.isoformat(),
        "committed_deadline": calendar.add_working_days(
            accepted_on, item.committed_limit_days
        ).isoformat(),
        "legal_deadline": calendar.add_working_days(accepted_on, item.legal_limit_days).isoformat(),
        "committed_limit_days": item.committed_limit_days,
        "legal_limit_days": item.legal_limit_days,
    }


def correction_notice(
    state: CaseState,
    item: ItemSpec,
    calendar: clocks.Calendar,
    today: date,
    defective: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> _Payload:
    """The one-time notice listing every missing or defective material and the deadline."""
    listed = [
        {"code": m.code, "name_zh": m.name_zh, "name_en": m.name_en, "problem": "missing"}
        for m in missing_materials(item, set(state.materials))
    ]
    by_code = {m.code: m for m in item.materials}
    for code, reason in defective:
        material = by_code.get(code)
        if material is None:
            raise Invalid(f"{code!r} is not a material of {item.code}")
        listed.append(
            {
                "code": code,
                "name_zh": material.name_zh,
                "name_en": material.name_en,
                "problem": "defective",
                "reason": reason,
            }
        )
    if not listed:
        raise Invalid("nothing is missing or defective: accept the application instead")
    return {
        "case_number": state.case_number,
        "item_code": item.code,
        "missing": listed,
        "deadline": calendar.add_working_days(today, clocks.CORRECTION_DAYS).isoformat(),
    }


def _request_correction(
    state: CaseState,
    _wf: Workflow,
    body: ActionBody,
    _staff: Staff,
    ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    if state.correction_requested:
        raise NotAllowed("the one-time correction notice was already sent (一次性告知)")
    assert isinstance(body, RequestCorrection)
    defective = [(d.code, d.reason) for d in body.defective]
    notice = correction_notice(state, _item(ctx), ctx.calendar, today, defective)
    payload.pop("defective", None)
    return {**payload, **notice}


def _submit_correction(
    state: CaseState,
    _wf: Workflow,
    body: ActionBody,
    _staff: Staff,
    _ctx: Context,
    _today: date,
    payload: _Payload,
) -> _Payload:
    assert isinstance(body, SubmitCorrection)
    still = sorted(set(state.missing) - set(body.materials))
    if still:
        raise Invalid(f"the notice also listed: {', '.join(still)}")
    return payload


def _refuse(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    _staff: Staff,
    _ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    return {
        **payload,
        "case_number": state.case_number,
        "decided_on": today.isoformat(),
        "appeal_notice_zh": APPEAL_NOTICE_ZH,
        "appeal_notice_en": APPEAL_NOTICE_EN,
    }


def _extend(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    staff: Staff,
    _ctx: Context,
    _today: date,
    payload: _Payload,
) -> _Payload:
    if state.extended:
        raise NotAllowed("the time limit was already extended once (§42 allows one extension)")
    return {**payload, "days": clocks.EXTENSION_DAYS, "approved_by": staff.user}


def _forward(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    _staff: Staff,
    ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    item = _item(ctx)
    if not item.forward_to:
        raise Invalid(f"{item.code} is completed at the station; it is not forwarded")
    deadline = ctx.calendar.add_working_days(today, clocks.FORWARD_LIMIT_DAYS)
    return {
        **payload,
        "to": item.forward_to,
        "case_number": state.case_number,
        "item_code": item.code,
        "deadline": deadline.isoformat(),
    }


def _decision(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    _staff: Staff,
    _ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    return {
        **payload,
        "case_number": state.case_number,
        "decided_on": today.isoformat(),
        "appeal_notice_zh": APPEAL_NOTICE_ZH,
        "appeal_notice_en": APPEAL_NOTICE_EN,
    }


def _deliver(
    state: CaseState,
    _wf: Workflow,
    body: ActionBody,
    _staff: Staff,
    _ctx: Context,
    today: date,
    payload: _Payload,
) -> _Payload:
    assert isinstance(body, Deliver)
    return {**payload, "case_number": state.case_number, "delivered_on": today.isoformat()}


def _rate(
    state: CaseState,
    _wf: Workflow,
    _body: ActionBody,
    _staff: Staff,
    _ctx: Context,
    _today: date,
    payload: _Payload,
) -> _Payload:
    if state.rating is not None:
        raise NotAllowed("this case was already rated (one rating per case)")
    return payload


def _task_for(
    state: CaseState, workflow: Workflow, body: ActionBody, staff: Staff, any_role: bool = False
) -> str:
    assert isinstance(body, TaskRef)
    mine = [
        t
        for t in state.tasks(workflow)
        if (any_role or t.role == staff.role) and t.org == staff.org
    ]
    if body.task is not None:
        mine = [t for t in mine if t.kind == body.task]
    if not mine:
        raise NotAllowed(f"no open task on this case for a {staff.role} of {staff.org}")
    return mine[0].kind


def _claim(
    state: CaseState,
    workflow: Workflow,
    body: ActionBody,
    staff: Staff,
    _ctx: Context,
    _today: date,
    _payload: _Payload,
) -> _Payload:
    task = _task_for(state, workflow, body, staff)
    holder = state.claims.get(task)
    if holder is not None:
        raise NotAllowed(f"task {task} is already claimed by {holder}")
    return {"task": task, "user": staff.user}


def _release(
    state: CaseState,
    workflow: Workflow,
    body: ActionBody,
    staff: Staff,
    _ctx: Context,
    _today: date,
    _payload: _Payload,
) -> _Payload:
    # the head releases any of the station's tasks, whoever's role works it
    task = _task_for(state, workflow, body, staff, any_role=staff.role == "station_head")
    holder = state.claims.get(task)
    if holder is None:
        raise NotAllowed(f"task {task} is not claimed")
    if holder != staff.user and staff.role != "station_head":
        raise NotAllowed(f"task {task} is claimed by {holder}; only they or the head release it")
    return {"task": task, "user": holder}


def _complete_callback(
    state: CaseState,
    _wf: Workflow,
    body: ActionBody,
    _staff: Staff,
    _ctx: Context,
    _today: date,
    payload: _Payload,
) -> _Payload:
    assert isinstance(body, CompleteCallback)
    if not state.callback_open:
        raise NotAllowed("no call-back is open on this case")
    return payload


_BUILDERS = {
    "accept": _accept,
    "deem_accepted": _deem_accepted,
    "request_correction": _request_correction,
    "submit_correction": _submit_correction,
    "refuse": _refuse,
    "extend": _extend,
    "forward": _forward,
    "approve": _decision,
    "reject": _decision,
    "deliver": _deliver,
    "rate": _rate,
    "claim": _claim,
    "release": _release,
    "complete_callback": _complete_callback,
}


def claimed_by_other(state: CaseState, workflow: Workflow, step: Step, staff: Staff) -> str | None:
    """Who else holds the task this step completes, if someone does."""
    if step.transition is None:
        return None
    rule = workflow.tasks.get(state.status)
    if rule is None:
        return None
    holder = state.claims.get(rule.kind)
    return holder if holder not in (None, staff.user) else None


SYSTEM = Staff(user="system", role=SYSTEM_ROLE, org="system")


def deterministic_id(namespace: uuid.UUID, *parts: object) -> uuid.UUID:
    """An event id that a retry computes again, so a repeated append is recognised."""
    return uuid.uuid5(namespace, ":".join(str(p) for p in parts))
