"""Taking actions on cases: load, check, record. The application layer between the HTTP
APIs (intake, processing), timers and consumers on one side and the pure engine on the
other.

Every action follows the same path: fold the case; is it visible to the actor (404
otherwise); does the workflow allow the action now (409, nothing recorded); may this
role take it and does a delegation valid *now* cover it (403, and the refused attempt is
recorded as ``ActionRefused``); then the engine's events are appended at the version
that was read (a concurrent change is a 409).

Idempotency-Keys belong to their sender. An HTTP request passes its sender's key (a
:class:`~shared.adapters.idempotency.KeyedRequest`; for an action a
:class:`~shared.adapters.idempotency.SenderKey`, fingerprinted once the case is known to be visible
and the body valid), recorded in the transaction that writes what it asked for; a replay
is answered only to the same sender, after the same visibility check as anything else.
Internal callers (timers, consumers) pass a plain key: their event ids are derived from
the case, the actor's organisation and user and the key, so a repeated delivery appends
nothing twice and nobody else's key can ever name those events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, NoReturn, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters import idempotency, numbers
from shared.adapters.eventlog import (
    AppendResult,
    ConcurrencyError,
    DuplicateEventError,
    EventLog,
    UnitOfWork,
)
from shared.adapters.eventlog.store import read_case_in
from shared.domain.delegation import Power
from shared.domain.events import NewEvent, StoredEvent, utcnow
from shared.domain.messages import DeliveredBy
from shared.domain.moments import BACKFILL_PERMISSION, aware
from shared.domain.upcasting import current_version
from shared.domain.workcalendar import CHINA_TZ, local_date
from shared.domain.workflow import clock as clocks
from shared.domain.workflow import engine
from shared.domain.workflow.definitions import SYSTEM_ROLE, Workflow, WorkflowRegistry
from shared.domain.workflow.engine import Authority, Refusal, Staff, Step
from shared.domain.workflow.payloads import ActionBody, body_for
from shared.domain.workflow.state import CaseState, apply, fold

NAMESPACE = uuid.UUID("0b6f1c2e-7a43-4f1e-9a51-3f0d2c8e6b17")

APPLICATION = "application"
ATTEMPT = "attempt"
"""The kind of the stream a refused attempt to open a case is kept in."""
RETRIES = 12
"""How often an action is checked again when another event lands on the case first
(a notice recorded, a timer fired): the rounds are apart by a short random pause that
grows, so a burst of notices on a busy machine does not outlast them."""


async def pause_before_retry(attempt: int) -> None:
    """Wait a little before round ``attempt + 1``: up to 5 ms, doubling, at most 200 ms."""
    await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311


MATTER_KINDS = ("mediation", "legal_publicity", "assistance", "police_assistance")
CASE_KINDS = frozenset((APPLICATION, *MATTER_KINDS))
"""The kinds of stream that are cases with a workflow. Visits, delegations and refused
openings are streams of the same log, but nothing done to a case is done to them."""
RECEPTION = "reception"
READABLE_KINDS = CASE_KINDS | {RECEPTION}
"""What ``GET /cases/{id}`` shows: cases, and a station's visits (to its own staff)."""


class NotFound(LookupError):
    """No such case, or not one the actor may see (HTTP 404)."""


class ActionRefusedError(Exception):
    """A refused attempt, recorded on the case (HTTP 403)."""

    def __init__(self, refusal: Refusal, state: CaseState) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
        self.state = state


IdempotencyConflict = idempotency.KeyReused
"""An Idempotency-Key reused by its sender for a different request (HTTP 409)."""


class CatalogueLike(Protocol):
    def get(self, code: str, version: int | None = None) -> Any: ...

    def published(self) -> list[Any]: ...


class OrganisationsLike(Protocol):
    def get(self, code: str) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class DelegationsLike(Protocol):
    async def for_delegate(self, org: str, *, conn: AsyncConnection | None = None) -> list[Any]: ...


CheckFn = Any
"""``shared.domain.delegation.check``: (delegations, *, org, competent_authority, item_code, power,
at) → Grant | Refusal."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an action left behind: the case's new state and the events it recorded."""

    state: CaseState
    events: Sequence[StoredEvent]
    replayed: bool = False


@dataclasses.dataclass
class CaseService:
    """Everything an action needs, wired once per process."""

    log: EventLog
    workflows: WorkflowRegistry
    catalogue: CatalogueLike
    calendar: clocks.Calendar
    organisations: OrganisationsLike
    delegations: DelegationsLike
    check: CheckFn

    # -- reading -----------------------------------------------------------------------

    async def load(self, case_id: uuid.UUID) -> tuple[list[StoredEvent], CaseState]:
        """The case's (or visit's) events and folded state; NotFound if it has none, or if
        the id is of a stream that is neither: a delegation's, a refused opening's."""
        events = await self.log.read_case(case_id)
        if not events or events[0].case_kind not in READABLE_KINDS:
            raise NotFound(f"no case {case_id}")
        return events, fold(events, self.workflows)

    def workflow_of(self, state: CaseState) -> Workflow:
        """The workflow version the case pinned at intake."""
        if not state.workflow or not state.workflow_version:
            raise NotFound(f"case {state.case_id} has no workflow")
        return self.workflows.get(state.workflow, state.workflow_version)

    def item_of(self, state: CaseState) -> Any | None:
        """The catalogue item version the case pinned at intake (None for matters)."""
        if state.item_code is None:
            return None
        return self.catalogue.get(state.item_code, state.item_version)

    def visible(self, staff: Staff, state: CaseState) -> bool:
        """Whether ``staff`` may see the case: its own station's, an authority's own or
        forwarded ones, and every case for the city's auditors."""
        if staff.role in ("auditor", SYSTEM_ROLE):
            return True
        if staff.org == state.station:
            return True
        if staff.role == "department_officer":
            item = self.item_of(state)
            return staff.org in {state.forward_to, state.authority, item and item.authority}
        return False

    # -- acting ------------------------------------------------------------------------

    async def authorise(
        self,
        staff: Staff,
        state: CaseState,
        step: Step,
        at: datetime,
        conn: AsyncConnection | None = None,
        register: list[Any] | None = None,
    ) -> Authority | Refusal:
        """In whose name ``staff`` may take ``step`` now, or why not.

        Inside a transaction, pass its ``conn``: checking out a second pooled connection
        while holding one deadlocks the pool under load (every request waits for a
        connection that only another waiting request could give back). ``register`` is
        the staff's organisation's instruments as read in that transaction already."""
        item = self.item_of(state)
        if staff.role == "system":
            return Authority(state.authority, state.delegation_id, state.delegation_version)
        if step.power is None or item is None:
            return Authority(self.own_authority(staff.org))
        found = (
            register
            if register is not None
            else await self.delegations.for_delegate(staff.org, conn=conn)
        )
        result = self.check(
            found,
            org=staff.org,
            competent_authority=item.authority,
            item_code=item.code,
            power=Power(step.power),
            at=at,
        )
        if hasattr(result, "authority"):
            return Authority(result.authority, result.delegation_code, result.delegation_version)
        return Refusal(
            str(result.reason),
            result.message,
            getattr(result, "delegation_code", None),
            getattr(result, "delegation_version", None),
            step.power,
        )

    def own_authority(self, org: str) -> str:
        """A station acts for its town in its own matters; others for themselves."""
        organisation = self.organisations.get(org)
        if getattr(organisation, "kind", None) == "station" and organisation.parent:
            return str(organisation.parent)
        return org

    async def act(
        self,
        case_id: uuid.UUID,
        action: str,
        body: dict[str, Any] | ActionBody,
        staff: Staff,
        *,
        idempotency_key: str,
        sender: idempotency.SenderKey | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        at: datetime | None = None,
        uow: UnitOfWork | None = None,
        delivered_by: DeliveredBy | None = None,
    ) -> Outcome:
        """Take ``action`` on the case for ``staff``; see the module's docstring.

        ``delivered_by`` (a department's answer over NATS: the credential that sent it) is
        recorded in the payload of what the action records, decision or refusal.

        The caller names no version: the case is read here, and if another event lands
        between that read and the append (a notification, a timer), the action is checked
        again against the new state and retried — the same checks, on fresher facts.
        With ``uow`` the case is read and written in that transaction (timers, consumers),
        whose caller retries the whole transaction instead.

        ``sender`` is whose key it is and the route it came with, for an HTTP request:
        once the case is known to be visible and the body valid, the request (with its
        fingerprint over body, case and action) is recorded with the events; only
        without ``uow``.
        """
        if sender is not None and (uow is not None or sender.key != idempotency_key):
            raise ValueError("a keyed request is recorded in a transaction of its own")
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._act_once(
                    case_id,
                    action,
                    body,
                    staff,
                    idempotency_key=idempotency_key,
                    sender=sender,
                    correlation_id=correlation_id,
                    causation_id=causation_id,
                    at=at,
                    uow=uow,
                    stamp=_stamp(delivered_by),
                )
            except ConcurrencyError:
                if uow is not None or attempt >= RETRIES:
                    raise
                await pause_before_retry(attempt)
            except idempotency.AlreadyAnswered:
                pass  # the sender's twin request committed first: the next round replays it

    async def record_refusal(
        self,
        case_id: uuid.UUID,
        action: str,
        refusal: Refusal,
        staff: Staff,
        *,
        idempotency_key: str,
        delivered_by: DeliveredBy | None = None,
    ) -> Outcome:
        """Record that ``staff``'s ``action`` was refused for a reason found before the
        workflow's checks (a department's answer that is not its to give); ``NotFound`` if
        there is no such case. Once per idempotency key. On the case if ``staff`` has a
        part in it (the case waits for their organisation), else in an attempt stream of
        its own: nobody outside writes into a station's case, however often they try."""
        for attempt in range(1, RETRIES + 1):
            events, state = await self.load(case_id)
            if state.case_kind not in CASE_KINDS:
                raise NotFound(f"no case {case_id}")  # a visit is no case to refuse on
            if not self.is_party(staff, state):
                return await self._refusal_apart(
                    case_id, state, action, refusal, staff, idempotency_key, delivered_by
                )
            ids = _ids(case_id, staff, idempotency_key)
            replay = [e for e in events if e.event_id in ids]
            if replay:
                return Outcome(state, replay, replayed=True)
            ctx = engine.Context(at=utcnow(), calendar=self.calendar)
            refused = engine.refusal_event(state, action, refusal, staff, ctx)
            refused = refused.model_copy(
                update={"event_id": ids[0], "payload": {**refused.payload, **_stamp(delivered_by)}}
            )
            try:
                result = await self._append(None, case_id, state, [refused])
            except ConcurrencyError:
                if attempt == RETRIES:
                    raise
                await pause_before_retry(attempt)
                continue
            return Outcome(_advance(state, result.events, self.workflows), result.events)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _act_once(
        self,
        case_id: uuid.UUID,
        action: str,
        body: dict[str, Any] | ActionBody,
        staff: Staff,
        *,
        idempotency_key: str,
        sender: idempotency.SenderKey | None,
        correlation_id: str | None,
        causation_id: str | None,
        at: datetime | None,
        uow: UnitOfWork | None,
        stamp: dict[str, Any],
    ) -> Outcome:
        if uow is not None:
            events = await uow.read_case(case_id)
            if not events or events[0].case_kind not in CASE_KINDS:
                raise NotFound(f"no case {case_id}")
            state = fold(events, self.workflows)
        else:
            events, state = await self.load(case_id)
        if state.case_kind not in CASE_KINDS:
            raise NotFound(f"no case {case_id}")  # a visit: no action is taken on it
        # Nothing is answered, not even a replay or a 409, about a case the actor may not
        # see: the sender's own key is looked at only after this.
        if not self.visible(staff, state):
            raise NotFound(f"no case {case_id}")
        parsed = body if isinstance(body, ActionBody) else _parse(action, body)
        request = None
        answered = False
        if sender is not None:
            extra: dict[str, Any] = {"case_id": case_id, "action": action}
            if at is not None:  # the moment is part of what was asked
                extra["occurred_at"] = aware(at).astimezone(UTC).isoformat()
            request = sender.keyed(parsed, extra)
            # Their key used for another request (another body, action or case) is a 409.
            made = await idempotency.answered(self.log.reader, request)
            answered = made is not None
            if made is not None and made != case_id:
                await self._refused_again(made)  # an outsider's refused attempt, kept apart
        ids = _ids(case_id, staff, idempotency_key)
        replay = [e for e in events if e.event_id in ids]
        if answered and not replay:
            # A twin committed its events with its key after this read: read again.
            events, state = await self.load(case_id)
            replay = [e for e in events if e.event_id in ids]
        if replay or answered:
            if replay and replay[0].payload.get("action") != action:
                raise IdempotencyConflict()
            return Outcome(state, replay, replayed=True)
        workflow = self.workflow_of(state)
        dated = at is not None and staff.role != SYSTEM_ROLE
        # A request dates an act only under the special permission; without it the attempt
        # is refused and recorded, and any refusal of a dated request is recorded when it
        # was tried. In-process callers that replay a story (no sender) give ``at`` as
        # their clock: their refusals happen then.
        unpermitted = dated and sender is not None and BACKFILL_PERMISSION not in staff.permissions
        if dated and not unpermitted:
            assert at is not None
            _after_previous_act(events, workflow, at)
        now = utcnow()
        at = at or now
        ctx = engine.Context(
            at=at,
            calendar=self.calendar,
            item=self.item_of(state),
            correlation_id=correlation_id,
            causation_id=causation_id,
            now=now if dated and sender is not None else None,
        )
        planned = engine.plan(state, workflow, action, staff)
        if unpermitted:
            planned = Refusal(
                "missing_permission",
                f"dating an act in the past (occurred_at) needs the special permission "
                f"'{BACKFILL_PERMISSION}' (补录需要授权); leave occurred_at out to act now",
            )
        if isinstance(planned, Step) and staff.role != "system":
            holder = engine.claimed_by_other(state, workflow, planned, staff)
            if holder is not None:
                raise engine.NotAllowed(f"the task is claimed by {holder}; ask them or the head")
        if uow is None and request is not None:
            return await self._act_keyed(
                case_id, events, state, action, planned, parsed, staff, ctx, request, ids, stamp
            )
        acting: Authority | Refusal = (
            await self.authorise(staff, state, planned, at, uow.conn if uow else None)
            if isinstance(planned, Step)
            else planned
        )
        if isinstance(acting, Refusal):
            refused = self._refusal(state, action, acting, staff, ctx, ids, stamp)
            result = await self._append(uow, case_id, state, [refused])
            raise ActionRefusedError(acting, _advance(state, result.events, self.workflows))
        assert isinstance(planned, Step)
        new = self._decided(state, action, planned, parsed, staff, acting, ctx, ids, stamp)
        result = await self._append(uow, case_id, state, new)
        return Outcome(_advance(state, result.events, self.workflows), result.events)

    async def _act_keyed(
        self,
        case_id: uuid.UUID,
        events: list[StoredEvent],
        state: CaseState,
        action: str,
        planned: Step | Refusal,
        parsed: ActionBody,
        staff: Staff,
        ctx: engine.Context,
        request: idempotency.KeyedRequest,
        ids: list[uuid.UUID],
        stamp: dict[str, Any],
    ) -> Outcome:
        """A sender's keyed action (an HTTP request) in one transaction: the delegation
        register read and judged in it (at the moment of the act), the key kept and the
        events appended after the head that was read. A refusal is recorded in the case
        the same way, or apart if the sender has no part in the case."""
        kind = state.case_kind or APPLICATION
        acting: Authority | Refusal = planned if isinstance(planned, Refusal) else Refusal("", "")
        new: list[NewEvent] = []
        try:
            async with self.log.transaction() as tx:
                if isinstance(planned, Step):
                    acting = await self.authorise(staff, state, planned, ctx.at, tx.conn)
                if isinstance(acting, Refusal):
                    if not self.is_party(staff, state):
                        raise _RefusedApart(acting)  # rolled back: kept apart, below
                    new = [self._refusal(state, action, acting, staff, ctx, ids, stamp)]
                else:
                    assert isinstance(planned, Step)
                    new = self._decided(
                        state, action, planned, parsed, staff, acting, ctx, ids, stamp
                    )
                await idempotency.remember(tx.conn, request, case_id)
                result = await tx.append_at_head(
                    case_id, state.version, events[-1].hash, new, case_kind=kind
                )
        except _RefusedApart as outsider:
            # Someone who may see the case but has no part in it (an auditor, the competent
            # authority of a delegated item): the attempt is theirs to answer for, not the
            # station's case to carry. Kept in a stream of its own, like refused openings.
            await self._refuse_outsider(
                case_id, state, action, outsider.refusal, staff, ctx, request
            )
        except IntegrityError:
            # Another writer took the version meanwhile: a ConcurrencyError, and act
            # checks the action again on the new state.
            result = await self.log.resolve_conflict(case_id, state.version, new)
        if isinstance(acting, Refusal):
            raise ActionRefusedError(acting, _advance(state, result.events, self.workflows))
        return Outcome(_advance(state, result.events, self.workflows), result.events)

    def _refusal(
        self,
        state: CaseState,
        action: str,
        refusal: Refusal,
        staff: Staff,
        ctx: engine.Context,
        ids: list[uuid.UUID],
        stamp: dict[str, Any],
    ) -> NewEvent:
        """The refused attempt as the case records it."""
        refused = engine.refusal_event(state, action, refusal, staff, ctx)
        return refused.model_copy(
            update={"event_id": ids[0], "payload": {**refused.payload, **stamp}}
        )

    def _decided(
        self,
        state: CaseState,
        action: str,
        planned: Step,
        parsed: ActionBody,
        staff: Staff,
        acting: Authority,
        ctx: engine.Context,
        ids: list[uuid.UUID],
        stamp: dict[str, Any],
    ) -> list[NewEvent]:
        """The events the action records, with their ids and the action named."""
        new = engine.decide(state, self.workflow_of(state), planned, parsed, staff, acting, ctx)
        return [
            e.model_copy(
                update={"event_id": i, "payload": {**e.payload, "action": action, **stamp}}
            )
            for e, i in zip(new, ids, strict=False)
        ]

    async def _append(
        self,
        uow: UnitOfWork | None,
        case_id: uuid.UUID,
        state: CaseState,
        events: list[NewEvent],
    ) -> AppendResult:
        """Append after the state's version: in ``uow``'s transaction, or in one of its own
        (a keyed request appends in :meth:`_act_keyed` instead)."""
        kind = state.case_kind or APPLICATION
        if uow is not None:
            return await uow.append(case_id, state.version, events, case_kind=kind)
        return await self.log.append(case_id, state.version, events, case_kind=kind)

    # -- opening cases -----------------------------------------------------------------

    async def open_case(
        self,
        *,
        case_kind: str,
        workflow: Workflow,
        staff: Staff,
        start_payload: dict[str, Any],
        item: Any | None,
        follow_up: str | None,
        follow_body: ActionBody | None = None,
        correlation_id: str | None,
        occurred_at: datetime | None,
        request: idempotency.KeyedRequest,
    ) -> Outcome:
        """Open a case with its workflow's start event and, for applications, the
        window's decision in the same transaction (acceptance or the one-time notice).

        The case gets a new random id (UUIDv7). The sender's key is recorded in that
        transaction too: their retry answers with the case as it is now; two identical
        requests at once open one case (the key's primary key lets one in, the other
        answers with its case).

        The case number is drawn in that transaction too: a refused or repeated request
        leaves no gap in the numbering. A refused opening is recorded with the key as
        well, so the sender's retry is refused again without a second record.
        """
        prior = await idempotency.answered(self.log.reader, request)
        if prior is not None:
            return await self._opened(prior, staff, request.key)
        try:
            return await self._open_new(
                case_kind=case_kind,
                workflow=workflow,
                staff=staff,
                start_payload=start_payload,
                item=item,
                follow_up=follow_up,
                follow_body=follow_body,
                correlation_id=correlation_id,
                occurred_at=occurred_at,
                request=request,
            )
        except idempotency.AlreadyAnswered as twin:
            # The sender's twin request was recorded first: answer with what it made.
            return await self._opened(twin.resource_id, staff, request.key)

    async def _open_new(
        self,
        *,
        case_kind: str,
        workflow: Workflow,
        staff: Staff,
        start_payload: dict[str, Any],
        item: Any | None,
        follow_up: str | None,
        follow_body: ActionBody | None,
        correlation_id: str | None,
        occurred_at: datetime | None,
        request: idempotency.KeyedRequest,
    ) -> Outcome:
        case_id = idempotency.new_id()
        at = utcnow()
        moment = occurred_at or at
        start = workflow.start
        if staff.role not in start.roles:
            refusal = Refusal(
                "wrong_role",
                f"{start.action} must be done by: {', '.join(start.roles)} (not {staff.role})",
            )
            await self._refuse_opening(
                case_id, start.action, refusal, staff, at, correlation_id, request
            )
        station = staff.org
        organisation = self.organisations.get(station)
        prefix = getattr(organisation, "case_prefix", None) or station[:2].upper()
        ids = _ids(case_id, staff, request.key)
        # The delegation register is read once, in the transaction, for the opening and
        # the window's decision (checked at the moment of the act); a refused opening
        # rolls back (nothing written) and is recorded apart.
        try:
            async with self.log.transaction() as tx:
                conn = tx.conn
                register = None
                acting: Authority | Refusal = Authority(self.own_authority(staff.org))
                if start.power is not None and item is not None:
                    register = await self.delegations.for_delegate(staff.org, conn=conn)
                    step = Step(start.action, start.event, start.power, start)
                    probe = CaseState(item_code=item.code, item_version=item.version)
                    acting = await self.authorise(staff, probe, step, at, conn, register)
                if isinstance(acting, Refusal):
                    raise _RefusedApart(acting)
                # First, so that a concurrent twin waits here, before drawing a number.
                await idempotency.remember(conn, request, case_id)
                number = await numbers.allocate(conn, prefix, local_date(moment).year)
                payload = {
                    **start_payload,
                    "case_number": number,
                    "station": station,
                    "workflow": {"name": workflow.name, "version": workflow.version},
                    "status_before": "",
                    "status_after": start.target(""),
                    "action": start.action,
                }
                first = NewEvent(
                    event_id=ids[0],
                    event_type=start.event,
                    schema_version=current_version(start.event),
                    occurred_at=moment,
                    actor=staff.actor(),
                    authority=acting.authority,
                    delegation_id=acting.delegation_id,
                    delegation_version=acting.delegation_version,
                    correlation_id=correlation_id,
                    payload=payload,
                )
                new = [first]
                state = apply(CaseState(), _draft(case_id, case_kind, first, 1), self.workflows)
                if follow_up is not None:
                    new += await self._follow_up(
                        state,
                        workflow,
                        follow_up,
                        follow_body,
                        staff,
                        item,
                        moment,
                        correlation_id,
                        conn,
                        register,
                    )
                new = [e.model_copy(update={"event_id": i}) for e, i in zip(new, ids, strict=False)]
                # a new random id: no head to read
                result = await tx.append_at_head(case_id, 0, None, new, case_kind=case_kind)
            return Outcome(fold(result.events, self.workflows), result.events)
        except _RefusedApart as refused:  # rolled back: recorded apart, and raised
            await self._refuse_opening(
                case_id,
                start.action,
                refused.refusal,
                staff,
                at,
                correlation_id,
                request,
                item.code if item is not None else None,
            )

    async def open_stream(
        self,
        *,
        case_kind: str,
        event: NewEvent,
        staff: Staff,
        request: idempotency.KeyedRequest,
    ) -> tuple[StoredEvent, bool]:
        """A stream of one event that a sender's request opens (a visitor in the
        station's reception log), under a new random id; the stored event, and whether
        this is the sender's retry (then nothing is recorded, and the event is answered
        only while it is their station's)."""
        prior = await idempotency.answered(self.log.reader, request)
        if prior is None:
            stream_id = idempotency.new_id()
            event = event.model_copy(update={"event_id": _ids(stream_id, staff, request.key)[0]})
            try:
                async with self.log.transaction() as tx:
                    await idempotency.remember(tx.conn, request, stream_id)
                    result = await tx.append(stream_id, 0, [event], case_kind=case_kind)
            except idempotency.AlreadyAnswered as twin:
                prior = twin.resource_id
            else:
                return result.events[0], False
        events = await self.log.read_case(prior)
        if not events or events[0].payload.get("station") != staff.org:
            raise NotFound(f"no {case_kind} {prior}")
        return events[0], True

    async def _follow_up(
        self,
        state: CaseState,
        workflow: Workflow,
        action: str,
        body: ActionBody | None,
        staff: Staff,
        item: Any,
        at: datetime,
        correlation_id: str | None,
        conn: AsyncConnection,
        register: list[Any] | None = None,
    ) -> list[NewEvent]:
        """The window's decision on a fresh application, if the clerk may take it (checked
        in the caller's transaction ``conn``, against ``register`` if it was read there)."""
        try:
            planned = engine.plan(state, workflow, action, staff)
        except engine.NotAllowed:
            return []
        if isinstance(planned, Refusal):
            return []
        acting = await self.authorise(staff, state, planned, utcnow(), conn, register)
        if isinstance(acting, Refusal):
            return []  # e.g. a receive-only delegation: the case waits for whoever accepts
        ctx = engine.Context(
            at=at, calendar=self.calendar, item=item, correlation_id=correlation_id
        )
        parsed = body or body_for(action)()
        events = engine.decide(state, workflow, planned, parsed, staff, acting, ctx)
        return [e.model_copy(update={"payload": {**e.payload, "action": action}}) for e in events]

    async def _opened(self, case_id: uuid.UUID, staff: Staff, key: str) -> Outcome:
        """The answer to the sender's retry of an opening: the case as it is now, with
        the events that opening recorded, if the sender may (still) see it; or the same
        refusal again if the opening was refused (recorded once)."""
        events = await self.log.read_case(case_id)
        if not events:
            raise NotFound(f"no case {case_id}")
        if events[0].case_kind == ATTEMPT:
            refused = events[0]
            if refused.actor_station != staff.org or refused.actor_user != staff.user:
                raise NotFound(f"no case {case_id}")
            raise ActionRefusedError(Refusal.recorded(refused.payload), CaseState())
        state = fold(events, self.workflows)
        if not self.visible(staff, state):
            raise NotFound(f"no case {case_id}")
        ids = _ids(case_id, staff, key)
        return Outcome(state, [e for e in events if e.event_id in ids], replayed=True)

    async def _refuse_opening(
        self,
        case_id: uuid.UUID,
        action: str,
        refusal: Refusal,
        staff: Staff,
        at: datetime,
        correlation_id: str | None,
        request: idempotency.KeyedRequest,
        item_code: str | None = None,
    ) -> NoReturn:
        """Record a refused attempt to open a case, in a stream of its own with the
        sender's key (their retry is refused again, recorded once), and raise it."""
        attempt_id = idempotency.new_id()
        event = NewEvent(
            event_id=_ids(attempt_id, staff, request.key)[0],
            event_type="ActionRefused",
            occurred_at=at,
            actor=staff.actor(),
            correlation_id=correlation_id,
            payload={
                "action": action,
                "reason": refusal.reason,
                "message": refusal.message,
                "status": "",
                "would_be_case_id": str(case_id),
                **refusal.cited(),
                **({"item_code": item_code} if item_code else {}),
            },
        )
        await self._keep_attempt(attempt_id, event, request)  # AlreadyAnswered: a twin
        raise ActionRefusedError(refusal, CaseState())

    async def _keep_attempt(
        self, attempt_id: uuid.UUID, event: NewEvent, request: idempotency.KeyedRequest
    ) -> None:
        """Append a refused attempt as the first event of a stream of its own, with the
        sender's key (:class:`idempotency.AlreadyAnswered` if their twin got there first)."""
        async with self.log.transaction() as tx:
            await idempotency.remember(tx.conn, request, attempt_id)
            await tx.append(attempt_id, 0, [event], case_kind=ATTEMPT)

    async def taken_before(self, case_id: uuid.UUID, staff: Staff, key: str) -> bool:
        """Whether ``staff``'s action under ``key`` is recorded on the case already (its
        events' ids derive from the case, the actor and the key): a message delivered again
        after it was handled."""
        ids = set(_ids(case_id, staff, key))
        return any(e.event_id in ids for e in await self.log.read_case(case_id))

    def is_party(self, staff: Staff, state: CaseState) -> bool:
        """Whether ``staff`` has a part in the case now: its station's staff, or an
        organisation one of its open tasks waits for (the department it is forwarded to)."""
        if staff.role == SYSTEM_ROLE or staff.org == state.station:
            return True
        return any(task.org == staff.org for task in state.tasks(self.workflow_of(state)))

    async def _refuse_outsider(
        self,
        case_id: uuid.UUID,
        state: CaseState,
        action: str,
        refusal: Refusal,
        staff: Staff,
        ctx: engine.Context,
        request: idempotency.KeyedRequest,
    ) -> NoReturn:
        """Record an outsider's refused attempt on ``case_id`` in a stream of its own with
        the sender's key (their retry is refused again, recorded once), and raise it."""
        attempt_id = idempotency.new_id()
        event = engine.refusal_event(state, action, refusal, staff, ctx)
        event = event.model_copy(
            update={
                "event_id": _ids(attempt_id, staff, request.key)[0],
                "payload": {**event.payload, "case_id": str(case_id)},
            }
        )
        try:
            await self._keep_attempt(attempt_id, event, request)
        except idempotency.AlreadyAnswered as twin:
            await self._refused_again(twin.resource_id)
        raise ActionRefusedError(refusal, state)

    async def _refusal_apart(
        self,
        case_id: uuid.UUID,
        state: CaseState,
        action: str,
        refusal: Refusal,
        staff: Staff,
        key: str,
        delivered_by: DeliveredBy | None,
    ) -> Outcome:
        """:meth:`record_refusal` for one with no part in the case: an attempt stream whose
        id derives from the case, the sender and the key (a redelivery records nothing)."""
        attempt_id = _ids(case_id, staff, f"attempt:{key}")[0]
        ctx = engine.Context(at=utcnow(), calendar=self.calendar)
        event = engine.refusal_event(state, action, refusal, staff, ctx)
        event = event.model_copy(
            update={
                "event_id": _ids(attempt_id, staff, key)[0],
                "payload": {**event.payload, "case_id": str(case_id), **_stamp(delivered_by)},
            }
        )
        try:
            result = await self.log.append(attempt_id, 0, [event], case_kind=ATTEMPT)
        except (ConcurrencyError, DuplicateEventError):
            return Outcome(state, [], replayed=True)  # recorded by the first delivery
        return Outcome(state, result.events, replayed=result.replayed)

    async def _refused_again(self, attempt_id: uuid.UUID) -> NoReturn:
        """The sender's retry of a refused attempt kept apart: the same refusal again."""
        events = await self.log.read_case(attempt_id)
        if not events or events[0].case_kind != ATTEMPT:
            raise AssertionError(f"key answered by {attempt_id}, which is no refused attempt")
        raise ActionRefusedError(Refusal.recorded(events[0].payload), CaseState())

    async def read_in(self, conn: AsyncConnection, case_id: uuid.UUID) -> CaseState:
        """The case's state as a transaction sees it."""
        return fold(await read_case_in(conn, case_id), self.workflows)


class _RefusedApart(Exception):
    """A refusal recorded apart from the case (an opening not allowed, someone with no
    part in the case): raised to roll its transaction back."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _ids(case_id: uuid.UUID, staff: Staff, key: str) -> list[uuid.UUID]:
    """The ids of the events one request records: derived from the case, the sender and
    their key, so that a retry appends nothing twice and another sender's identical key
    names other events."""
    sender = f"{len(staff.org)}:{staff.org}:{len(staff.user)}:{staff.user}"
    return [uuid.uuid5(NAMESPACE, f"{case_id}:{sender}:{key}:{i}") for i in range(4)]


def _stamp(delivered_by: DeliveredBy | None) -> dict[str, Any]:
    """What an action records besides its body about how it reached caseflow."""
    return {"delivered_by": delivered_by.model_dump()} if delivered_by else {}


def _parse(action: str, raw: dict[str, Any]) -> ActionBody:
    return parse_model(body_for(action), raw)


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], raw: Any) -> M:
    """Validate a request body; a fault is a :class:`BodyInvalid` (HTTP 422)."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise BodyInvalid(err) from None


class FieldInvalid(Exception):
    """One field of a request names something that doesn't exist (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.errors = [{"loc": tuple(field.split(".")), "msg": message}]


class BodyInvalid(Exception):
    """The action's body failed validation (HTTP 422)."""

    def __init__(self, err: ValidationError) -> None:
        super().__init__(str(err))
        self.errors = err.errors(include_url=False, include_context=False)


def _draft(case_id: uuid.UUID, case_kind: str, event: NewEvent, version: int) -> StoredEvent:
    """A not-yet-stored event, to fold the state the window's decision starts from."""
    at = event.occurred_at or utcnow()
    return StoredEvent(
        position=0,
        event_id=event.event_id,
        case_id=case_id,
        case_kind=case_kind,
        version=version,
        event_type=event.event_type,
        schema_version=event.schema_version,
        occurred_at=at,
        recorded_at=at,
        actor_user=event.actor.user,
        actor_role=event.actor.role,
        actor_station=event.actor.station,
        authority=event.authority,
        delegation_id=event.delegation_id,
        delegation_version=event.delegation_version,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        payload=event.payload,
        prev_hash=None,
        hash="",
    )


def _advance(
    state: CaseState, events: Sequence[StoredEvent], workflows: WorkflowRegistry
) -> CaseState:
    for event in events:
        state = apply(state, event, workflows)
    return state


def _after_previous_act(events: Sequence[StoredEvent], workflow: Workflow, at: datetime) -> None:
    """An act dated by staff (补录) happened no earlier than the case's previous act: the
    last event that moved it in its workflow. Notices, warnings and readings recorded
    meanwhile are the system's or a reader's, at the time they were recorded: they don't
    stand in the way of entering the rest of a paper file."""
    acts = [e.occurred_at for e in events if e.event_type in workflow.event_types]
    if not acts:
        return
    previous = max(aware(moment) for moment in acts)
    if aware(at) < previous:
        shown = previous.astimezone(CHINA_TZ).isoformat(timespec="minutes")
        raise FieldInvalid(
            "occurred_at",
            f"can't be before the case's previous act ({shown}); acts are entered in the "
            f"order they happened (补录时间不能早于上一办理环节)",
        )


def today_in_china(at: datetime | None = None) -> date:
    """Today's date at the station."""
    return local_date(at or utcnow())
