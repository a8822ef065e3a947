"""Processing's HTTP API for delegation instruments (委托书): publish, read, change.

Only a department officer of the delegating body publishes or changes its instruments;
anyone signed in may read them (auditors, the delegate's staff). Every change answers
with the instrument's new state; its version is the stream's version.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from shared.adapters import delegations as store
from shared.adapters.auth import Role, SignedInStaff
from shared.adapters.eventlog import DuplicateEventError
from shared.domain.delegation import (
    CODE_PATTERN,
    DELEGATION_NAMESPACE,
    ITEM_PATTERN,
    ORG_PATTERN,
    DelegationAmended,
    DelegationPublished,
    DelegationRecord,
    DelegationResumed,
    DelegationRevoked,
    DelegationState,
    DelegationStatus,
    DelegationSuspended,
    IllegalDelegationChange,
    Instrument,
    InvalidInstrument,
    Mode,
    Power,
)
from shared.domain.events import Actor
from shared.domain.workflow.reference import Reference
from shared.web.auth import StaffDep, require_role
from shared.web.http import PROBLEM_JSON, correlation_id
from shared.web.runtime import EventLogDep

router = APIRouter(prefix="/delegations", tags=["delegations"])


def _problems(*codes: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {code: {"content": {PROBLEM_JSON: {}}, "description": text} for code, text in codes}


_AUTH = ((401, "Not signed in"),)
_CHANGE = (
    *_AUTH,
    (403, "Not a department officer of the delegating body"),
    (404, "No such delegation"),
    (409, "The instrument's state does not allow this, or it changed meanwhile"),
    (422, "The request is not valid"),
)

Code = Annotated[str, Path(pattern=CODE_PATTERN, description="the instrument's code")]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key per request (e.g. a UUID); a retry with the same key "
        "returns the original answer",
    ),
]
OptionalIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Optional: a retry with the same key returns the answer without a "
        "second change",
    ),
]


# Bodies and answers -------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_version: int | None = Field(
        default=None,
        ge=1,
        description="refuse with 409 unless the instrument is at this version",
    )


class Amendment(_Body):
    """A new text of the instrument (same code, delegator and delegate) and why."""

    instrument: Instrument
    reason: str = Field(min_length=2, max_length=2000)


class StatusChange(_Body):
    """Suspend, resume or revoke, and why."""

    reason: str = Field(min_length=2, max_length=2000)


class RecordView(BaseModel):
    """One event of the instrument and its state right after it."""

    version: int
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    actor: Actor
    reason: str | None
    status: DelegationStatus
    instrument: Instrument

    @classmethod
    def of(cls, record: DelegationRecord) -> RecordView:
        return cls(
            version=record.version,
            event_id=record.event_id,
            event_type=record.event_type,
            occurred_at=record.occurred_at,
            recorded_at=record.recorded_at,
            actor=record.actor,
            reason=record.reason,
            status=record.status,
            instrument=record.instrument,
        )


class DelegationSummary(BaseModel):
    """An instrument as it stands."""

    code: str
    case_id: uuid.UUID
    version: int
    status: DelegationStatus
    instrument: Instrument
    links: dict[str, str]

    @classmethod
    def of(cls, state: DelegationState) -> DelegationSummary:
        return cls(
            code=state.code,
            case_id=state.case_id,
            version=state.version,
            status=state.status,
            instrument=state.instrument,
            links={"self": f"/delegations/{state.code}"},
        )


class DelegationView(DelegationSummary):
    """An instrument as it stands, with every event of its history."""

    history: list[RecordView]

    @classmethod
    def full(cls, state: DelegationState) -> DelegationView:
        return cls(
            **DelegationSummary.of(state).model_dump(),
            history=[RecordView.of(r) for r in state.history],
        )


class DelegationList(BaseModel):
    """Instruments matching a filter, by code."""

    delegations: list[DelegationSummary]


# Helpers ------------------------------------------------------------------------------


def _actor(staff: SignedInStaff) -> Actor:
    return Actor(user=staff.user, role=staff.role.value, station=staff.org)


def _must_be_officer_of(staff: SignedInStaff, delegator: str) -> None:
    require_role(staff, Role.department_officer)
    if staff.org != delegator:
        raise HTTPException(
            403,
            f"only {delegator}'s department officers can publish or change its delegations; "
            f"you belong to {staff.org}",
        )


def _event_id(kind: str, code: str, staff: SignedInStaff, key: str | None) -> uuid.UUID | None:
    """The event a keyed change records: derived from the sender too, so that another
    officer's identical key is another change, never a replay of this one's answer."""
    if key is None:
        return None
    sender = f"{len(staff.org)}:{staff.org}:{len(staff.user)}:{staff.user}"
    return uuid.uuid5(DELEGATION_NAMESPACE, f"{kind}:{code}:{sender}:{key}")


async def _existing(log: EventLogDep, code: str) -> DelegationState:
    state = await store.registry_for(log).get(code)
    if state is None:
        raise HTTPException(404, f"no delegation {code}")
    return state


def _fits_registry(request: Request, instrument: Instrument) -> None:
    """The delegate must be a known organisation and every item one of the catalogue's
    whose competent authority is the delegator (an instrument naming anything else would
    grant nothing, or name a body nobody can act for): 422 listing what doesn't fit."""
    reference: Reference = request.app.state.reference
    problems = store.seed_problems([instrument], reference.catalogue, reference.organisations)
    if problems:
        raise HTTPException(422, "; ".join(problems))


def _key_reused() -> HTTPException:
    return HTTPException(
        409,
        "this Idempotency-Key was already used for a different instrument; "
        "use a new key for a new instrument",
    )


def _refused(err: Exception) -> HTTPException:
    if isinstance(err, InvalidInstrument):
        return HTTPException(422, str(err))
    return HTTPException(409, str(err))


# Routes -------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=DelegationView,
    responses=_problems(*_CHANGE),
    summary="Publish a delegation instrument (发布委托)",
)
async def publish_delegation(
    instrument: Instrument,
    idempotency_key: IdempotencyKey,
    staff: StaffDep,
    request: Request,
    response: Response,
    log: EventLogDep,
) -> DelegationView:
    """Record ``DelegationPublished`` (version 1) and index the instrument."""
    _must_be_officer_of(staff, instrument.delegator)
    _fits_registry(request, instrument)
    try:
        outcome = await store.publish(
            log,
            instrument,
            actor=_actor(staff),
            event_id=_event_id("publish", staff.org, staff, idempotency_key),
            correlation_id=correlation_id(request),
        )
    except (IllegalDelegationChange, InvalidInstrument) as err:
        raise _refused(err) from None
    except DuplicateEventError:
        raise _key_reused() from None
    if outcome.replayed:
        stored = outcome.events[0]
        if stored.payload != DelegationPublished(instrument=instrument).model_dump(mode="json"):
            raise _key_reused()
    response.headers["Location"] = f"/delegations/{instrument.code}"
    return DelegationView.full(outcome.state)


@router.get(
    "",
    response_model=DelegationList,
    responses=_problems(*_AUTH),
    summary="List delegation instruments",
)
async def list_delegations(
    staff: StaffDep,
    log: EventLogDep,
    delegate: Annotated[str | None, Query(pattern=ORG_PATTERN)] = None,
    delegator: Annotated[str | None, Query(pattern=ORG_PATTERN)] = None,
    item: Annotated[str | None, Query(pattern=ITEM_PATTERN, description="item code")] = None,
    status: DelegationStatus | None = None,
    mode: Mode | None = None,
    power: Power | None = None,
) -> DelegationList:
    """Instruments by delegate, delegator, item, status, mode or power (all optional)."""
    registry = store.registry_for(log)
    if delegate is not None:
        states = await registry.for_delegate(delegate)
    elif delegator is not None:
        states = await registry.for_delegator(delegator)
    else:
        states = await registry.all()
    chosen = [
        s
        for s in states
        if (delegator is None or s.instrument.delegator == delegator)
        and (item is None or item in s.instrument.items)
        and (status is None or s.status is status)
        and (mode is None or s.instrument.mode is mode)
        and (power is None or power in s.instrument.powers)
    ]
    return DelegationList(delegations=[DelegationSummary.of(s) for s in chosen])


@router.get(
    "/{code}",
    response_model=DelegationView,
    responses=_problems(*_AUTH, (404, "No such delegation (at that moment)")),
    summary="An instrument: state, version and full history",
)
async def get_delegation(
    code: Code,
    staff: StaffDep,
    log: EventLogDep,
    as_of: Annotated[
        datetime | None,
        Query(description="the instrument as it stood at this moment (ISO 8601 with offset)"),
    ] = None,
) -> DelegationView:
    """The instrument now, or as of a moment, with every event up to then."""
    state = await _existing(log, code)
    if as_of is None:
        return DelegationView.full(state)
    if as_of.tzinfo is None:
        raise HTTPException(422, "as_of needs a UTC offset, e.g. 2026-03-02T10:00:00+08:00")
    then = state.as_of(as_of)
    if then is None:
        raise HTTPException(404, f"delegation {code} was not yet published at {as_of}")
    return DelegationView.full(then)


@router.post(
    "/{code}/amendments",
    response_model=DelegationView,
    responses=_problems(*_CHANGE),
    summary="Amend an instrument (a new text)",
)
async def amend_delegation(
    code: Code,
    body: Amendment,
    staff: StaffDep,
    request: Request,
    log: EventLogDep,
    idempotency_key: OptionalIdempotencyKey = None,
) -> DelegationView:
    """Record ``DelegationAmended``: the new text is in force from now on."""
    state = await _existing(log, code)
    _must_be_officer_of(staff, state.instrument.delegator)
    if body.instrument.code != code:
        raise HTTPException(422, f"the amended instrument's code must stay {code}")
    _fits_registry(request, body.instrument)
    try:
        outcome = await store.amend(
            log,
            body.instrument,
            reason=body.reason,
            actor=_actor(staff),
            expected_version=body.expected_version,
            event_id=_event_id("amend", code, staff, idempotency_key),
            correlation_id=correlation_id(request),
        )
    except (IllegalDelegationChange, InvalidInstrument) as err:
        raise _refused(err) from None
    if outcome.replayed:
        sent = DelegationAmended(instrument=body.instrument, reason=body.reason)
        _same_change(outcome, sent.model_dump(mode="json"))
    return DelegationView.full(outcome.state)


def _same_change(outcome: store.DelegationOutcome, sent: dict[str, Any]) -> None:
    """A replayed change must be the sender's same request: their key with another text
    or reason is a 409, never the first answer passed off as this one's."""
    if outcome.events and outcome.events[0].payload != sent:
        raise _key_reused()


async def _change(
    kind: str,
    code: str,
    body: StatusChange,
    staff: SignedInStaff,
    request: Request,
    log: EventLogDep,
    idempotency_key: str | None,
) -> DelegationView:
    state = await _existing(log, code)
    _must_be_officer_of(staff, state.instrument.delegator)
    command = {"suspend": store.suspend, "resume": store.resume, "revoke": store.revoke}[kind]
    try:
        outcome = await command(
            log,
            code,
            reason=body.reason,
            actor=_actor(staff),
            expected_version=body.expected_version,
            event_id=_event_id(kind, code, staff, idempotency_key),
            correlation_id=correlation_id(request),
        )
    except (IllegalDelegationChange, InvalidInstrument) as err:
        raise _refused(err) from None
    if outcome.replayed:
        model = {
            "suspend": DelegationSuspended,
            "resume": DelegationResumed,
            "revoke": DelegationRevoked,
        }[kind]
        _same_change(outcome, model(reason=body.reason).model_dump(mode="json"))
    return DelegationView.full(outcome.state)


@router.post(
    "/{code}/suspension",
    response_model=DelegationView,
    responses=_problems(*_CHANGE),
    summary="Suspend an instrument (暂停)",
)
async def suspend_delegation(
    code: Code,
    body: StatusChange,
    staff: StaffDep,
    request: Request,
    log: EventLogDep,
    idempotency_key: OptionalIdempotencyKey = None,
) -> DelegationView:
    """Record ``DelegationSuspended``: nothing is granted under it until resumed."""
    return await _change("suspend", code, body, staff, request, log, idempotency_key)


@router.post(
    "/{code}/resumption",
    response_model=DelegationView,
    responses=_problems(*_CHANGE),
    summary="Resume a suspended instrument (恢复)",
)
async def resume_delegation(
    code: Code,
    body: StatusChange,
    staff: StaffDep,
    request: Request,
    log: EventLogDep,
    idempotency_key: OptionalIdempotencyKey = None,
) -> DelegationView:
    """Record ``DelegationResumed``."""
    return await _change("resume", code, body, staff, request, log, idempotency_key)


@router.post(
    "/{code}/revocation",
    response_model=DelegationView,
    responses=_problems(*_CHANGE),
    summary="Revoke an instrument for good (撤销)",
)
async def revoke_delegation(
    code: Code,
    body: StatusChange,
    staff: StaffDep,
    request: Request,
    log: EventLogDep,
    idempotency_key: OptionalIdempotencyKey = None,
) -> DelegationView:
    """Record ``DelegationRevoked``; nothing can follow."""
    return await _change("revoke", code, body, staff, request, log, idempotency_key)
