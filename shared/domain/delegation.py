"""Delegations (委托 / 授权) as versioned, event-sourced instruments, and the check every
staff action passes (pure: no I/O).

An instrument names the delegating body, the delegate, the mode, the items, the powers
over them, the legal basis and document number, the publication date and the validity
period. Each instrument is its own event stream (case kind ``delegation``, case id
``uuid5(DELEGATION_NAMESPACE, code)``); its version is the stream's version after its
last event. Suspension and revocation are events too, so that the question "could this
station accept this application at 10:02 on 3 March?" is answered from the log alone:
:meth:`DelegationState.as_of` replays the stream up to that moment (by each event's
``occurred_at``) and :func:`check` decides.

Rules of the field (Administrative Licensing Law):

- §24 entrusted (委托): the delegate acts **in the delegator's name**; no sub-delegation,
  so only an instrument issued by the item's competent authority grants anything.
- §23 authorised (授权): the delegate acts in its own name.
- receive-only (仅收件): the delegate may only take in the papers (收件) for the delegator.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.workcalendar import CHINA_TZ as CHINA_TZ  # validity: local dates in China

CASE_KIND: Final = "delegation"
"""The case kind of every instrument's event stream."""

DELEGATION_NAMESPACE: Final = uuid.UUID("5b0f3e56-9a55-4d1c-9d43-6c1f0b7d2a11")
"""Namespace of the instruments' stream ids (``uuid5(DELEGATION_NAMESPACE, code)``)."""

CODE_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{2,63}$"
ORG_PATTERN: Final = r"^[a-z][a-z0-9_]{1,49}$"
ITEM_PATTERN: Final = r"^[a-z][a-z0-9_]{1,63}$"
DOCUMENT_NUMBER_PATTERN: Final = r"^[\u4e00-\u9fff]{2,16}〔(19|20)\d{2}〕[1-9]\d{0,3}号$"
"""A Chinese official document number (发文字号, GB/T 9704), e.g. 韩人社发〔2021〕45号."""

_DOCUMENT_YEAR = re.compile(r"〔(\d{4})〕")


def delegation_case_id(code: str) -> uuid.UUID:
    """The id of the event stream of the instrument ``code``."""
    return uuid.uuid5(DELEGATION_NAMESPACE, code)


def china_date(at: datetime) -> date:
    """The local date in China at the (aware) moment ``at``."""
    if at.tzinfo is None:
        raise ValueError("a moment must be timezone-aware")
    return at.astimezone(CHINA_TZ).date()


def china_midnight(day: date) -> datetime:
    """The first moment of ``day`` in China, as an aware datetime."""
    return datetime.combine(day, time(0), tzinfo=CHINA_TZ)


class Power(enum.StrEnum):
    """What a delegate may do with an item: 收件, 受理, 审查, 决定, 送达."""

    RECEIVE = "receive"
    ACCEPT = "accept"
    REVIEW = "review"
    DECIDE = "decide"
    DELIVER = "deliver"


class Mode(enum.StrEnum):
    """In whose name the delegate acts."""

    AUTHORISED = "authorised"
    """§23 授权: in the delegate's own name."""
    ENTRUSTED = "entrusted"
    """§24 委托: in the delegator's name."""
    RECEIVE_ONLY = "receive_only"
    """仅收件: takes in applications for the delegator, nothing more."""


class DelegationStatus(enum.StrEnum):
    """Whether an instrument is in force (its validity period aside)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Reason = str
"""A mandatory reason: non-empty text (checked by the payload models)."""

_REASON = Field(min_length=2, max_length=2000)


class Instrument(_Model):
    """A delegation instrument (委托书 / 授权决定) as published by the delegating body."""

    code: str = Field(pattern=CODE_PATTERN, description="stable identifier of the instrument")
    delegator: str = Field(pattern=ORG_PATTERN, description="the delegating body (org code)")
    delegate: str = Field(pattern=ORG_PATTERN, description="the body delegated to (org code)")
    mode: Mode
    items: list[str] = Field(min_length=1, description="catalogue item codes")
    powers: list[Power] = Field(min_length=1)
    legal_basis: str = Field(min_length=2, max_length=500)
    document_number: str = Field(pattern=DOCUMENT_NUMBER_PATTERN, examples=["韩人社发〔2021〕45号"])
    published_on: date
    valid_from: date
    valid_until: date | None = None
    """Last day in force (inclusive); None: until revoked."""

    @field_validator("items")
    @classmethod
    def _items(cls, items: list[str]) -> list[str]:
        for item in items:
            if not re.match(ITEM_PATTERN, item):
                raise ValueError(f"{item!r} is not an item code")
        if len(set(items)) != len(items):
            raise ValueError("an item is listed twice")
        return items

    @field_validator("powers")
    @classmethod
    def _powers(cls, powers: list[Power]) -> list[Power]:
        if len(set(powers)) != len(powers):
            raise ValueError("a power is listed twice")
        return powers

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        if self.delegator == self.delegate:
            raise ValueError(f"{self.delegator} can't delegate to itself")
        if self.mode is Mode.RECEIVE_ONLY and self.powers != [Power.RECEIVE]:
            raise ValueError("a receive_only delegation grants exactly the power 'receive'")
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        year = _DOCUMENT_YEAR.search(self.document_number)
        if year and int(year.group(1)) > self.published_on.year:
            raise ValueError("the document number's year is after the publication date")
        return self

    def in_force_on(self, day: date) -> bool:
        """Whether ``day`` lies in the validity period."""
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)


# Event payloads ---------------------------------------------------------------------


class DelegationPublished(_Model):
    """The delegating body published the instrument (first event of its stream)."""

    instrument: Instrument


class DelegationAmended(_Model):
    """The instrument was replaced by a new text (same bodies, same code)."""

    instrument: Instrument
    reason: Reason = _REASON


class DelegationSuspended(_Model):
    """The instrument is out of force until resumed."""

    reason: Reason = _REASON


class DelegationResumed(_Model):
    """A suspended instrument is in force again."""

    reason: Reason = _REASON


class DelegationRevoked(_Model):
    """The instrument is withdrawn for good; nothing can follow."""

    reason: Reason = _REASON


PAYLOADS: Final[dict[str, type[BaseModel]]] = {
    "DelegationPublished": DelegationPublished,
    "DelegationAmended": DelegationAmended,
    "DelegationSuspended": DelegationSuspended,
    "DelegationResumed": DelegationResumed,
    "DelegationRevoked": DelegationRevoked,
}
"""Event type → payload model of an instrument's stream."""


# The fold ---------------------------------------------------------------------------


class DelegationError(Exception):
    """An instrument's stream that can't be folded (not a delegation, or corrupt)."""


@dataclasses.dataclass(frozen=True, slots=True)
class DelegationRecord:
    """One event of an instrument's stream and the instrument's state right after it."""

    version: int
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    actor: Actor
    reason: str | None
    instrument: Instrument
    status: DelegationStatus

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form (for the API)."""
        return {
            "version": self.version,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "actor": self.actor.model_dump(),
            "reason": self.reason,
            "status": self.status.value,
            "instrument": self.instrument.model_dump(mode="json"),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class DelegationState:
    """An instrument after (some of) its events: current text, status and history."""

    code: str
    case_id: uuid.UUID
    version: int
    instrument: Instrument
    status: DelegationStatus
    history: tuple[DelegationRecord, ...]

    @property
    def published_at(self) -> datetime:
        """When the first event took effect."""
        return self.history[0].occurred_at

    @property
    def last_occurred_at(self) -> datetime:
        """When the latest event took effect (later commands may not precede it)."""
        return self.history[-1].occurred_at

    def as_of(self, at: datetime) -> DelegationState | None:
        """The instrument as it stood at ``at``: its events with ``occurred_at <= at``.

        None when it was not yet published then. Commands keep ``occurred_at``
        non-decreasing along a stream, so these events are a prefix of the history.
        """
        if at.tzinfo is None:
            raise ValueError("a moment must be timezone-aware")
        last = None
        for index, record in enumerate(self.history):
            if record.occurred_at <= at:
                last = index
        if last is None:
            return None
        if last == len(self.history) - 1:
            return self
        record = self.history[last]
        return DelegationState(
            code=self.code,
            case_id=self.case_id,
            version=record.version,
            instrument=record.instrument,
            status=record.status,
            history=self.history[: last + 1],
        )

    def versions(self) -> list[DelegationRecord]:
        """The records that changed the instrument's text (publication and amendments)."""
        return [r for r in self.history if r.event_type in _TEXT_EVENTS]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form (for the API): state, version and the whole history."""
        return {
            "code": self.code,
            "case_id": str(self.case_id),
            "version": self.version,
            "status": self.status.value,
            "instrument": self.instrument.model_dump(mode="json"),
            "history": [r.as_json() for r in self.history],
        }


_TEXT_EVENTS = frozenset({"DelegationPublished", "DelegationAmended"})

# (status before, event type) → status after; None: no instrument yet.
_TRANSITIONS: Final[dict[tuple[DelegationStatus | None, str], DelegationStatus]] = {
    (None, "DelegationPublished"): DelegationStatus.ACTIVE,
    (DelegationStatus.ACTIVE, "DelegationAmended"): DelegationStatus.ACTIVE,
    (DelegationStatus.SUSPENDED, "DelegationAmended"): DelegationStatus.SUSPENDED,
    (DelegationStatus.ACTIVE, "DelegationSuspended"): DelegationStatus.SUSPENDED,
    (DelegationStatus.SUSPENDED, "DelegationResumed"): DelegationStatus.ACTIVE,
    (DelegationStatus.ACTIVE, "DelegationRevoked"): DelegationStatus.REVOKED,
    (DelegationStatus.SUSPENDED, "DelegationRevoked"): DelegationStatus.REVOKED,
}


def _payload(event: StoredEvent) -> BaseModel:
    model = PAYLOADS.get(event.event_type)
    if model is None:
        raise DelegationError(f"{event.event_type} is not an event of a delegation")
    try:
        return model.model_validate(event.payload)
    except ValidationError as err:
        raise DelegationError(
            f"{event.event_type} (version {event.version}) has an invalid payload: {err}"
        ) from err


def fold_delegation(events: Iterable[StoredEvent]) -> DelegationState | None:
    """The instrument after ``events`` (one stream, in version order); None if empty."""
    state: DelegationState | None = None
    for event in events:
        if event.case_kind != CASE_KIND:
            raise DelegationError(f"case {event.case_id} is a {event.case_kind}, not a delegation")
        status = state.status if state else None
        payload = _payload(event)
        try:
            after = _TRANSITIONS[(status, event.event_type)]
        except KeyError:
            raise DelegationError(
                f"{event.event_type} (version {event.version}) can't follow "
                f"{'nothing' if status is None else status.value}"
            ) from None
        instrument = getattr(payload, "instrument", None) or (state.instrument if state else None)
        assert instrument is not None  # the first event is a publication
        if state is not None and instrument.code != state.code:
            raise DelegationError(f"version {event.version} changes the instrument's code")
        record = DelegationRecord(
            version=event.version,
            event_id=event.event_id,
            event_type=event.event_type,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
            actor=Actor(user=event.actor_user, role=event.actor_role, station=event.actor_station),
            reason=getattr(payload, "reason", None),
            instrument=instrument,
            status=after,
        )
        state = DelegationState(
            code=instrument.code,
            case_id=event.case_id,
            version=event.version,
            instrument=instrument,
            status=after,
            history=(*state.history, record) if state else (record,),
        )
    return state


# Commands ---------------------------------------------------------------------------


class DelegationCommandError(Exception):
    """A command on an instrument that its state or content does not allow."""


class IllegalDelegationChange(DelegationCommandError):
    """The instrument's status does not allow the command (e.g. resume when not suspended)."""


class InvalidInstrument(DelegationCommandError):
    """An instrument that can't be published as it stands."""


class InvalidAmendment(InvalidInstrument):
    """An amendment that is not a legal new text of the same instrument."""


def _event(
    event_type: str,
    payload: BaseModel,
    *,
    instrument: Instrument,
    actor: Actor,
    occurred_at: datetime,
    event_id: uuid.UUID | None,
    correlation_id: str | None,
) -> NewEvent:
    return NewEvent(
        event_id=event_id or uuid.uuid4(),
        event_type=event_type,
        # Stored times are UTC (SQLite keeps no offset).
        occurred_at=occurred_at.astimezone(UTC),
        actor=actor,
        # The delegating body acts in its own name when it publishes or changes.
        authority=instrument.delegator,
        correlation_id=correlation_id,
        payload=payload.model_dump(mode="json"),
    )


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("a moment must be timezone-aware")
    return at


def _open(state: DelegationState | None, code: str, action: str) -> DelegationState:
    if state is None:
        raise IllegalDelegationChange(f"there is no delegation {code} to {action}")
    if state.status is DelegationStatus.REVOKED:
        raise IllegalDelegationChange(
            f"delegation {code} is revoked; nothing can follow a revocation"
        )
    return state


def _not_before(state: DelegationState, at: datetime) -> None:
    if at < state.last_occurred_at:
        raise IllegalDelegationChange(
            f"delegation {state.code} changed at {state.last_occurred_at.isoformat()}; "
            f"a change can't take effect earlier ({at.isoformat()})"
        )


def decide_publish(
    state: DelegationState | None,
    instrument: Instrument,
    *,
    actor: Actor,
    at: datetime,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> list[NewEvent]:
    """Publish ``instrument`` (recorded at ``at``).

    The event takes effect at the start of its publication day in China (instruments
    published on paper are entered later), so the publication date may not be after
    the local date of ``at``.
    """
    _aware(at)
    if state is not None:
        raise IllegalDelegationChange(
            f"delegation {instrument.code} is published already (version {state.version}); "
            "amend it instead"
        )
    if instrument.published_on > china_date(at):
        raise IllegalDelegationChange(
            f"delegation {instrument.code} is dated {instrument.published_on}, "
            "which is in the future; record it once it is published"
        )
    if instrument.valid_from < instrument.published_on:
        # An amendment keeps the original start of validity; a new instrument can't
        # reach back before its own publication.
        raise InvalidInstrument(
            f"delegation {instrument.code} would take effect ({instrument.valid_from}) "
            f"before it is published ({instrument.published_on})"
        )
    return [
        _event(
            "DelegationPublished",
            DelegationPublished(instrument=instrument),
            instrument=instrument,
            actor=actor,
            occurred_at=min(china_midnight(instrument.published_on), at),
            event_id=event_id,
            correlation_id=correlation_id,
        )
    ]


def decide_amend(
    state: DelegationState | None,
    instrument: Instrument,
    *,
    reason: str,
    actor: Actor,
    at: datetime,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> list[NewEvent]:
    """Replace the instrument's text from ``at`` on; the bodies and the code stay."""
    current = _open(state, instrument.code, "amend")
    _not_before(current, _aware(at))
    old = current.instrument
    if instrument.code != old.code:
        raise InvalidAmendment(f"an amendment of {old.code} can't change its code")
    for field in ("delegator", "delegate"):
        if getattr(instrument, field) != getattr(old, field):
            raise InvalidAmendment(
                f"an amendment can't change the {field} ({getattr(old, field)}); "
                "revoke this delegation and publish a new one"
            )
    if instrument == old:
        raise InvalidAmendment(f"the amendment of {old.code} changes nothing")
    if instrument.published_on < old.published_on:
        raise InvalidAmendment(
            f"the amendment is dated {instrument.published_on}, before the text it "
            f"replaces ({old.published_on})"
        )
    if instrument.published_on > china_date(at):
        raise InvalidAmendment(f"the amendment is dated {instrument.published_on}, in the future")
    payload = DelegationAmended(instrument=instrument, reason=reason)
    return [
        _event(
            "DelegationAmended",
            payload,
            instrument=instrument,
            actor=actor,
            occurred_at=at,
            event_id=event_id,
            correlation_id=correlation_id,
        )
    ]


def _status_change(
    kind: Literal["suspend", "resume", "revoke"],
    state: DelegationState | None,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime,
    event_id: uuid.UUID | None,
    correlation_id: str | None,
) -> list[NewEvent]:
    current = _open(state, code, kind)
    _not_before(current, _aware(at))
    payload: BaseModel
    if kind == "suspend":
        if current.status is not DelegationStatus.ACTIVE:
            raise IllegalDelegationChange(f"delegation {code} is {current.status.value} already")
        event_type, payload = "DelegationSuspended", DelegationSuspended(reason=reason)
    elif kind == "resume":
        if current.status is not DelegationStatus.SUSPENDED:
            raise IllegalDelegationChange(f"delegation {code} is not suspended")
        event_type, payload = "DelegationResumed", DelegationResumed(reason=reason)
    else:
        event_type, payload = "DelegationRevoked", DelegationRevoked(reason=reason)
    return [
        _event(
            event_type,
            payload,
            instrument=current.instrument,
            actor=actor,
            occurred_at=at,
            event_id=event_id,
            correlation_id=correlation_id,
        )
    ]


def decide_suspend(
    state: DelegationState | None,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> list[NewEvent]:
    """Suspend an active instrument from ``at`` on."""
    return _status_change(
        "suspend",
        state,
        code,
        reason=reason,
        actor=actor,
        at=at,
        event_id=event_id,
        correlation_id=correlation_id,
    )


def decide_resume(
    state: DelegationState | None,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> list[NewEvent]:
    """Put a suspended instrument back in force from ``at`` on."""
    return _status_change(
        "resume",
        state,
        code,
        reason=reason,
        actor=actor,
        at=at,
        event_id=event_id,
        correlation_id=correlation_id,
    )


def decide_revoke(
    state: DelegationState | None,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> list[NewEvent]:
    """Revoke an active or suspended instrument from ``at`` on, for good."""
    return _status_change(
        "revoke",
        state,
        code,
        reason=reason,
        actor=actor,
        at=at,
        event_id=event_id,
        correlation_id=correlation_id,
    )


# The check --------------------------------------------------------------------------


class RefusalReason(enum.StrEnum):
    """Why an action is refused (recorded with the refused attempt)."""

    OUTSIDE_DELEGATION = "outside_delegation"
    DELEGATION_SUSPENDED = "delegation_suspended"
    DELEGATION_REVOKED = "delegation_revoked"
    DELEGATION_EXPIRED = "delegation_expired"
    WRONG_ROLE = "wrong_role"
    """Not produced by :func:`check`: the workflow's role check."""
    OTHER_ORGANISATION = "other_organisation"
    """Not produced by :func:`check`: a case of another station or authority."""


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """The action may be taken, in the name of ``authority``, under this delegation."""

    authority: str
    delegation_code: str | None
    delegation_version: int | None

    def event_fields(self) -> dict[str, Any]:
        """The :class:`~shared.domain.events.NewEvent` fields that record the grant."""
        return {
            "authority": self.authority,
            "delegation_id": self.delegation_code,
            "delegation_version": self.delegation_version,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class DelegationRefusal:
    """The action may not be taken."""

    reason: RefusalReason
    message: str
    delegation_code: str | None = None
    """The instrument the refusal is about, if one came close."""
    delegation_version: int | None = None


# When several instruments come close but none grants, the reason of the one nearest to
# granting is given: it was suspended (could resume) before it is out of its period,
# before it was revoked, before it lacks the power altogether.
_REFUSAL_RANK: Final = {
    RefusalReason.DELEGATION_SUSPENDED: 0,
    RefusalReason.DELEGATION_EXPIRED: 1,
    RefusalReason.DELEGATION_REVOKED: 2,
    RefusalReason.OUTSIDE_DELEGATION: 3,
}
# Several granting instruments: acting in one's own name (authorised) first.
_MODE_RANK: Final = {Mode.AUTHORISED: 0, Mode.ENTRUSTED: 1, Mode.RECEIVE_ONLY: 2}


def _judge(state: DelegationState, power: Power, day: date) -> Grant | DelegationRefusal:
    inst = state.instrument
    where = f"delegation {state.code} (version {state.version}, {inst.document_number})"
    if state.status is DelegationStatus.REVOKED:
        return DelegationRefusal(
            RefusalReason.DELEGATION_REVOKED,
            f"{where} was revoked",
            state.code,
            state.version,
        )
    if state.status is DelegationStatus.SUSPENDED:
        return DelegationRefusal(
            RefusalReason.DELEGATION_SUSPENDED,
            f"{where} is suspended",
            state.code,
            state.version,
        )
    if not inst.in_force_on(day):
        if day < inst.valid_from:
            text = f"{where} is in force only from {inst.valid_from}"
        else:
            text = f"{where} expired after {inst.valid_until}"
        return DelegationRefusal(RefusalReason.DELEGATION_EXPIRED, text, state.code, state.version)
    if power not in inst.powers:
        granted = ", ".join(p.value for p in inst.powers)
        return DelegationRefusal(
            RefusalReason.OUTSIDE_DELEGATION,
            f"{where} grants {inst.delegate} only {granted}, not {power.value}",
            state.code,
            state.version,
        )
    authority = inst.delegate if inst.mode is Mode.AUTHORISED else inst.delegator
    return Grant(authority, state.code, state.version)


def check(
    delegations: Iterable[DelegationState],
    *,
    org: str,
    competent_authority: str,
    item_code: str,
    power: Power,
    at: datetime,
) -> Grant | DelegationRefusal:
    """May ``org`` exercise ``power`` over ``item_code`` at the moment ``at``?

    - The competent authority itself: granted in its own name, no delegation.
    - Otherwise an instrument that, as it stood at ``at`` (see
      :meth:`DelegationState.as_of`), was issued by the competent authority to ``org``,
      covers the item and the power, is active, and whose validity period contains the
      local date of ``at`` in China. Entrusted and receive-only instruments grant in the
      delegator's name, authorised ones in the delegate's.
    - No sub-delegation: an instrument whose delegator is not the item's competent
      authority grants nothing, even if that delegator holds a delegation itself.
    """
    day = china_date(at)
    if org == competent_authority:
        return Grant(org, None, None)
    grants: list[tuple[int, str, Grant]] = []
    refusals: list[DelegationRefusal] = []
    indirect: list[DelegationState] = []
    for delegation in delegations:
        state = delegation.as_of(at)
        if state is None:
            continue
        inst = state.instrument
        if inst.delegate != org or item_code not in inst.items:
            continue
        if inst.delegator != competent_authority:
            indirect.append(state)
            continue
        verdict = _judge(state, power, day)
        if isinstance(verdict, Grant):
            grants.append((_MODE_RANK[inst.mode], state.code, verdict))
        else:
            refusals.append(verdict)
    if grants:
        return min(grants, key=lambda g: g[:2])[2]
    if refusals:
        return min(refusals, key=lambda r: (_REFUSAL_RANK[r.reason], r.delegation_code or ""))
    if indirect:
        first = min(indirect, key=lambda s: s.code)
        return DelegationRefusal(
            RefusalReason.OUTSIDE_DELEGATION,
            f"{org} holds {item_code} only through delegation {first.code} from "
            f"{first.instrument.delegator}, which is not the competent authority "
            f"{competent_authority}; sub-delegation is not allowed (§24)",
            first.code,
            first.version,
        )
    return DelegationRefusal(
        RefusalReason.OUTSIDE_DELEGATION,
        f"{org} holds no delegation from {competent_authority} for {item_code}",
    )
