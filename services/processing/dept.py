"""Forwarding over the bus: requests to departments, and their answers.

A forwarded case is published on ``caseflow.dept.<authority>.requests`` (``Nats-Msg-Id``
= the ``CaseForwarded`` event id, so a redelivery is dropped by JetStream). The request
carries the applicant in full (the department decides on them), so the same unit of work
records ``PersonalDataDisclosed`` on the case: to which authority, which fields, over
which subject, why; its event id derives from the ``CaseForwarded`` event's, so a
redelivery records it once. A department system answers on
``caseflow.dept.<authority>.answers``; processing records the answer as that authority's
decision, exactly as a department officer's ``approve``/``reject`` over HTTP would be,
with the message id as the Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import nats.errors
import orjson
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from pydantic import ValidationError

from shared.bus.consumer import UnitOfWork
from shared.bus.headers import (
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
    MSG_ID_HEADER,
)
from shared.bus.streams import DEPT_STREAM, dept_subject, dlq_subject
from shared.events import NewEvent, StoredEvent, utcnow
from shared.messages import DepartmentAnswer, DepartmentRequest
from shared.workflow import engine
from shared.workflow.payloads import Approve, Reject
from shared.workflow.service import ActionRefusedError, CaseService, NotFound
from shared.workflow.state import fold

log = structlog.get_logger("caseflow.processing.dept")

DISCLOSURE_REASON = (
    "转办：部门依申请人信息作出决定 / forwarded: the department decides on the application"
)
"""Why a forwarding discloses the applicant (the reason recorded on the case)."""

ANSWERS_CONSUMER = "processing-dept-answers"
ANSWERS_FILTER = "caseflow.dept.*.answers"
"""Every department's answers."""


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


class AnswerListener:
    """A durable pull consumer of ``caseflow.dept.*.answers``."""

    def __init__(self, service: CaseService, nc: NATS) -> None:
        self.service = service
        self.nc = nc
        self.js = nc.jetstream()

    async def run(self, stop: asyncio.Event) -> None:
        config = api.ConsumerConfig(
            durable_name=ANSWERS_CONSUMER,
            filter_subject=ANSWERS_FILTER,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_deliver=5,
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
                    msgs = await sub.fetch(20, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                except Exception as err:
                    log.warning("answers fetch failed", error=repr(err))
                    break  # recreate the subscription (a server restart loses it)
                for msg in msgs:
                    await self.handle(msg)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def handle(self, msg: Msg) -> None:
        authority = msg.subject.split(".")[2]
        msg_id = (msg.headers or {}).get(MSG_ID_HEADER) or f"seq:{msg.metadata.sequence.stream}"
        try:
            answer = DepartmentAnswer.model_validate(orjson.loads(msg.data))
        except (ValidationError, orjson.JSONDecodeError) as err:
            await self._dead(msg, f"undecodable answer: {err}")
            return
        officer = engine.Staff(user=answer.officer, role="department_officer", org=authority)
        body = (
            Approve(decision_number=answer.decision_number, opinion=answer.opinion)
            if answer.outcome == "approve"
            else Reject(
                reasons=answer.reasons or ["(no reason given)"],
                decision_number=answer.decision_number,
            )
        )
        try:
            await self.service.act(
                uuid.UUID(answer.case_id),
                answer.outcome,
                body,
                officer,
                idempotency_key=f"dept-answer:{msg_id}",
            )
        except (NotFound, engine.NotAllowed, engine.Invalid, ActionRefusedError) as err:
            await self._dead(msg, f"answer not taken: {err}")
            return
        except Exception as err:  # database down, conflict: try again later
            log.warning("answer failed; will retry", error=repr(err))
            await msg.nak(delay=1.0)
            return
        await msg.ack()
        log.info("department answered", case_id=str(answer.case_id), outcome=answer.outcome)

    async def _dead(self, msg: Msg, reason: str) -> None:
        log.warning("answer dead-lettered", reason=reason[:300])
        await self.js.publish(
            dlq_subject(ANSWERS_CONSUMER),
            msg.data,
            headers={
                DLQ_REASON_HEADER: reason[:1000],
                DLQ_SUBJECT_HEADER: msg.subject,
                DLQ_CONSUMER_HEADER: ANSWERS_CONSUMER,
            },
        )
        await msg.term()
