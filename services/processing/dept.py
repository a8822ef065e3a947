"""Forwarding over the bus: requests to departments, and their answers.

A forwarded case is published on ``caseflow.dept.<authority>.requests`` (``Nats-Msg-Id``
= the ``CaseForwarded`` event id, so a redelivery is dropped by JetStream). Processing
keeps one durable pull consumer per authority on that stream, ``dept_<authority>``,
filtered on its requests: the only one the authority's department systems may read. The
request carries the applicant in full (the department decides on them), so the same unit
of work records ``PersonalDataDisclosed`` on the case: to which authority, which fields,
over which subject, why; its event id derives from the ``CaseForwarded`` event's, so a
redelivery records it once.

A department system answers on ``caseflow.dept.<authority>.answers.<credential>``, a
subject only that credential may publish on (``shared.adapters.bus.access``), so the subject says
who delivered the answer. Processing records it as that authority's decision, exactly as
a department officer's ``approve``/``reject`` over HTTP would be, with the credential in
``delivered_by`` and an idempotency key from the credential and the message id. An answer
for a case not forwarded to that authority or not awaiting its answer, or naming an
officer of another organisation, is refused and dead-lettered, never retried; the refusal
(``ActionRefused`` naming the credential and why) is recorded on the case while the case
waits for that authority, else in an attempt stream of its own, so that no department
writes into a case that is not waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence

import orjson
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from shared.adapters.bus.durables import CONSUMERS
from shared.adapters.bus.headers import (
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
    MSG_ID_HEADER,
    header_value,
)
from shared.adapters.bus.streams import DEPT_STREAM, dept_durable, dept_subject, dlq_subject
from shared.adapters.eventlog import UnitOfWork
from shared.adapters.eventlog.errors import ConcurrencyError
from shared.adapters.outages import unavailable_dependency
from shared.application.workflow.service import (
    APPLICATION,
    ActionRefusedError,
    CaseService,
    IdempotencyConflict,
    NotFound,
)
from shared.domain.events import NewEvent, StoredEvent, utcnow
from shared.domain.messages import DeliveredBy, DepartmentAnswer, DepartmentRequest
from shared.domain.workflow import engine
from shared.domain.workflow.engine import Refusal
from shared.domain.workflow.payloads import Approve, Reject
from shared.domain.workflow.state import fold

log = structlog.get_logger("caseflow.processing.dept")

DISCLOSURE_REASON = (
    "转办：部门依申请人信息作出决定 / forwarded: the department decides on the application"
)
"""Why a forwarding discloses the applicant (the reason recorded on the case)."""

ANSWERS_CONSUMER = "processing-dept-answers"
ANSWERS_FILTER = next(c for c in CONSUMERS if c.name == ANSWERS_CONSUMER).subjects[0]
"""Every department's answers: ``caseflow.dept.*.answers.*``."""
DEPARTMENT_ACK_WAIT = 60.0
"""Seconds a department system has to answer a request before it comes again."""


def request_publisher(
    service: CaseService, get_nc: Callable[[], NATS | None]
) -> Callable[[StoredEvent, UnitOfWork], Awaitable[None]]:
    """A consumer handler publishing each ``CaseForwarded`` to its department."""

    async def publish_request(event: StoredEvent, uow: UnitOfWork) -> None:
        nc = get_nc()
        if nc is None:
            raise RuntimeError("not connected to NATS yet")
        history = await uow.read_case(event.case_id)
        state = fold(history, service.workflows)
        authority = str(event.payload["to"])
        request = DepartmentRequest(
            case_id=str(event.case_id),
            case_number=state.case_number,
            item_code=state.item_code,
            item_version=state.item_version,
            station=state.station,
            authority=authority,
            deadline=event.payload.get("deadline"),
            applicant=dict(state.applicant) if state.applicant else None,
            materials=list(state.materials),
            answer_subject=dept_subject(authority, "answers"),
        )
        subject = dept_subject(authority, "requests")
        disclosed = disclosure(event, state.authority, authority, subject, request.applicant)
        if disclosed is not None and all(e.event_id != disclosed.event_id for e in history):
            # Recorded before the publish, committed after it: a failed publish records
            # nothing, and a commit that fails after the publish is retried (JetStream
            # drops the repeated request by its Nats-Msg-Id; the id finds the record).
            await uow.append(event.case_id, state.version, [disclosed], case_kind=event.case_kind)
        await nc.jetstream().publish(
            subject,
            request.model_dump_json().encode(),
            headers={MSG_ID_HEADER: str(event.event_id)},
        )
        log.info("forwarded to department", case_id=str(event.case_id), authority=authority)

    return publish_request


def disclosure(
    forwarded: StoredEvent,
    authority: str | None,
    to: str,
    subject: str,
    applicant: dict[str, object] | None,
) -> NewEvent | None:
    """``PersonalDataDisclosed`` for the request of ``forwarded`` (None if it names nobody).

    ``authority`` is the one the case is handled for (the discloser), ``to`` the
    department's; the event id derives from the ``CaseForwarded`` event's."""
    fields = sorted(k for k, v in (applicant or {}).items() if v not in (None, ""))
    if not fields:
        return None
    return NewEvent(
        event_id=engine.deterministic_id(forwarded.event_id, "PersonalDataDisclosed"),
        event_type="PersonalDataDisclosed",
        occurred_at=utcnow(),
        actor=engine.SYSTEM.actor(),
        authority=authority,
        correlation_id=forwarded.correlation_id,
        causation_id=str(forwarded.event_id),
        payload={
            "to": to,
            "fields": fields,
            "channel": subject,
            "reason": DISCLOSURE_REASON,
            "request_id": str(forwarded.event_id),
        },
    )


def department_consumer(authority: str) -> api.ConsumerConfig:
    """The pull consumer of ``authority``'s requests that its department systems read."""
    durable = dept_durable(authority)
    return api.ConsumerConfig(
        durable_name=durable,
        name=durable,
        description=f"requests forwarded to {authority}, read by its department systems",
        filter_subject=dept_subject(authority, "requests"),
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=DEPARTMENT_ACK_WAIT,
        max_ack_pending=1000,
    )


async def declare_department_consumers(
    js: JetStreamContext, authorities: Sequence[str]
) -> list[str]:
    """Create (or bring up to date) every authority's consumer; the authorities whose
    consumer could not be declared (e.g. while the server's config does not name them)."""
    failed = []
    for authority in authorities:
        try:
            await js.add_consumer(DEPT_STREAM, department_consumer(authority))
        except Exception as err:
            log.warning("department consumer not declared", authority=authority, error=repr(err))
            failed.append(authority)
    return failed


async def keep_department_consumers(
    js: JetStreamContext, authorities: Sequence[str], stop: asyncio.Event, every: float = 60.0
) -> None:
    """Declare the authorities' consumers now and again every minute (every few seconds
    while some fail), so that a server that lost its state or a config that now names a
    new authority gets them without a restart of processing."""
    while not stop.is_set():
        failed = await declare_department_consumers(js, authorities)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0 if failed else every)


def answer_origin(subject: str) -> tuple[str, str]:
    """The authority and the credential an answer's subject names."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[:2] != ["caseflow", "dept"] or parts[3] != "answers":
        raise ValueError(f"{subject} is not caseflow.dept.<authority>.answers.<credential>")
    return parts[2], parts[4]


def officer_of(named: str, authority: str, credential: str) -> tuple[str, Refusal | None]:
    """The deciding officer's user id (``user`` or ``user@<authority>``), or why the answer
    can't be taken: an officer of another organisation can't decide for ``authority``."""
    user, at, org = named.partition("@")
    if at and org != authority:
        return named, Refusal(
            "officer_of_another_organisation",
            f"the answer names {named}, an officer of {org}, but credential {credential} "
            f"answers for {authority}; refused",
        )
    return user, None


class AnswerListener:
    """A durable pull consumer of every department's answers."""

    def __init__(self, service: CaseService, nc: NATS, *, fetch_timeout: float = 0.5) -> None:
        self.service = service
        self.nc = nc
        self.js = nc.jetstream()
        self.fetch_timeout = fetch_timeout
        """Seconds an idle fetch waits (then the listener looks at ``stop`` and fetches again)."""

    async def run(self, stop: asyncio.Event) -> None:
        config = api.ConsumerConfig(
            durable_name=ANSWERS_CONSUMER,
            name=ANSWERS_CONSUMER,
            filter_subject=ANSWERS_FILTER,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_deliver=-1,  # outages are waited out; an answer's own failure is dead-lettered
            ack_wait=30,
        )
        while not stop.is_set():
            try:
                await self.js.add_consumer(DEPT_STREAM, config)
                sub = await self.js.pull_subscribe_bind(ANSWERS_CONSUMER, stream=DEPT_STREAM)
            except Exception as err:
                log.warning("answers subscribe failed", error=repr(err))
                await asyncio.sleep(1)
                continue
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(20, timeout=self.fetch_timeout)
                except TimeoutError:
                    # nats-py raises its own TimeoutError or asyncio's (the built-in one)
                    # on an idle fetch: both are nothing to answer, not a broken subscription.
                    continue
                except Exception as err:
                    log.warning("answers fetch failed", error=repr(err))
                    break  # recreate the subscription (a server restart loses it)
                try:
                    for msg in msgs:
                        await self.handle(msg)
                except Exception as err:  # NATS went away mid-answer: it comes again
                    log.warning("answers interrupted", error=repr(err)[:300])
                    break
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def handle(self, msg: Msg) -> None:
        """Take one answer, or refuse it (recorded on the case and dead-lettered), or leave
        it for later while the database can't be reached. Nothing in an answer stops the
        listener: a failure of its own goes to the dead letter with its reason."""
        try:
            await self._handle(msg)
        except Exception as err:
            if _waits(err):
                log.warning("answer waits for the database; will retry", error=repr(err)[:300])
                await msg.nak(delay=1.0)
                return
            log.exception("answer failed", subject=msg.subject)
            await self._dead(msg, f"answer not taken: {type(err).__name__}: {err}"[:1000])

    async def _handle(self, msg: Msg) -> None:
        try:
            authority, credential = answer_origin(msg.subject)
        except ValueError as err:
            await self._dead(msg, str(err))
            return
        delivered_by = DeliveredBy(channel="nats", credential=credential)
        msg_id = (msg.headers or {}).get(MSG_ID_HEADER) or f"seq:{msg.metadata.sequence.stream}"
        try:
            answer = DepartmentAnswer.model_validate(orjson.loads(msg.data))
        except orjson.JSONDecodeError as err:
            await self._dead(msg, f"undecodable answer from credential {credential}: {err}")
            return
        except ValidationError as err:
            # What is wrong where, without the values (they may be personal data).
            wrong = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in err.errors(include_input=False, include_url=False)
            )
            await self._dead(msg, f"undecodable answer from credential {credential}: {wrong}")
            return
        case_id = answer.case_id
        user, refusal = officer_of(answer.officer, authority, credential)
        officer = engine.Staff(user=user, role="department_officer", org=authority)
        key = f"dept-answer:{credential}:{msg_id}"
        if refusal is None and await self.service.taken_before(case_id, officer, key):
            # This very answer was taken and recorded, but its acknowledgement never reached
            # NATS (a node went away): it comes again. Not a second answer to refuse.
            await msg.ack()
            log.info("department answer taken before; acknowledged", case_id=str(case_id))
            return
        try:
            refusal = refusal or await self._not_forwarded(case_id, authority, credential)
            if refusal is None:
                await self.service.act(
                    case_id,
                    answer.outcome,
                    _body(answer),
                    officer,
                    idempotency_key=key,
                    delivered_by=delivered_by,
                )
        except engine.NotAllowed as err:
            # The workflow allows no decision now: the case is not awaiting this answer.
            refusal = Refusal(
                "not_awaiting_answer",
                f"{err}: the case is not awaiting {authority}'s answer; answer delivered by "
                f"credential {credential} refused",
            )
        except (
            NotFound,
            engine.Invalid,
            ActionRefusedError,
            IdempotencyConflict,
            ValidationError,
        ) as err:
            # No such case (a visit's or a delegation's id is none either), or a refusal
            # by the workflow's own checks, already recorded on the case.
            await self._dead(msg, f"answer from credential {credential} not taken: {err}")
            return
        if refusal is not None:
            # No such case: nothing to record it on; the dead letter says why.
            with contextlib.suppress(NotFound):
                await self.service.record_refusal(
                    case_id,
                    answer.outcome,
                    refusal,
                    officer,
                    idempotency_key=key,
                    delivered_by=delivered_by,
                )
            await self._dead(msg, f"answer refused ({refusal.reason}): {refusal.message}")
            return
        await msg.ack()
        log.info(
            "department answered",
            case_id=str(answer.case_id),
            outcome=answer.outcome,
            credential=credential,
        )

    async def _not_forwarded(
        self, case_id: uuid.UUID, authority: str, credential: str
    ) -> Refusal | None:
        """Why the case is not ``authority``'s to decide now, if it isn't (NotFound if
        there is no such case): it must be an application waiting for its answer."""
        _, state = await self.service.load(case_id)
        if state.case_kind != APPLICATION:
            raise NotFound(f"no case {case_id}")  # a visit, a matter: never forwarded
        officer = engine.Staff(user="answer", role="department_officer", org=authority)
        if self.service.is_party(officer, state):
            return None
        if state.forward_to == authority:
            return Refusal(
                "not_awaiting_answer",
                f"case {state.case_number or case_id} is {state.status}: it is not awaiting "
                f"{authority}'s answer; answer delivered by credential {credential} refused",
            )
        where = f"it was forwarded to {state.forward_to}" if state.forward_to else "it never was"
        return Refusal(
            "not_forwarded_to_authority",
            f"case {state.case_number or case_id} was not forwarded to {authority} ({where}); "
            f"answer delivered by credential {credential} refused",
        )

    async def _dead(self, msg: Msg, reason: str) -> None:
        log.warning("answer dead-lettered", reason=reason[:300])
        await self.js.publish(
            dlq_subject(ANSWERS_CONSUMER),
            msg.data,
            headers={
                DLQ_REASON_HEADER: header_value(reason),
                DLQ_SUBJECT_HEADER: msg.subject,
                DLQ_CONSUMER_HEADER: ANSWERS_CONSUMER,
            },
        )
        await msg.term()


def _waits(err: BaseException) -> bool:
    """Whether ``err`` says nothing about the answer: the database (or NATS) can't be
    reached, or other events kept landing on the case first. Try again later."""
    return isinstance(err, ConcurrencyError) or unavailable_dependency(err) is not None


def _body(answer: DepartmentAnswer) -> Approve | Reject:
    if answer.outcome == "approve":
        return Approve(decision_number=answer.decision_number, opinion=answer.opinion)
    return Reject(
        reasons=answer.reasons or ["(no reason given)"], decision_number=answer.decision_number
    )
