"""A realistic, seeded mix of cases put through ``CaseService`` on a real log, for the
projection tests: applications of station and forwarded items (complete, needing
correction, decided later) taken along random lawful paths by fitting staff (with task
claims, refused attempts by the wrong role, ratings and call-backs, clock warnings and
an overdue forwarding as the timers record them), the four kinds of matter, and visitors
in the reception log. Cases advance in turns, several at once, so their events interleave
in the log (on PostgreSQL, in concurrent transactions)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from services.intake.domain import (
    AssistanceIn,
    MediationIn,
    PoliceAssistanceIn,
    PublicityIn,
    start_payload,
)
from shared.adapters.delegations import publish_seed
from shared.adapters.eventlog import EventLog
from shared.adapters.idempotency import KeyedRequest
from shared.application.workflow.service import (
    ActionRefusedError,
    BodyInvalid,
    CaseService,
    NotFound,
)
from shared.application.workflow.wiring import case_service
from shared.domain.events import NewEvent
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow import engine
from shared.domain.workflow.reference import Reference

ITEMS = [
    "pension_enrolment",
    "medical_insurance_enrolment",
    "logging_permit",
    "minimum_living_allowance",
    "birth_certificate",
]
STAFF = [
    engine.Staff("li.clerk", "window_clerk", "xuefeng_station"),
    engine.Staff("wang.reviewer", "reviewer", "xuefeng_station"),
    engine.Staff("sun.reviewer", "reviewer", "xuefeng_station"),
    engine.Staff("zhao.head", "station_head", "xuefeng_station", frozenset({"reopen"})),
    engine.Staff("liu.forestry", "department_officer", "hc_forestry"),
    engine.Staff("ma.town", "department_officer", "banqiao_town"),
    engine.Staff("he.health", "department_officer", "hc_health"),
    engine.SYSTEM,
]
START = datetime(2026, 3, 2, 9, 0, tzinfo=CHINA_TZ)
SIDETRACKS = frozenset({"withdraw", "refuse", "reject", "suspend", "extend"})


def body_for(action: str, materials: list[str], rng: random.Random) -> dict[str, Any]:
    """A well-formed body for ``action``."""
    reason = rng.choice(["申请人要求", "材料需核实", "情况复杂需延期"])
    bodies: dict[str, dict[str, Any]] = {
        "request_correction": {"defective": [{"code": rng.choice(materials), "reason": reason}]},
        "submit_correction": {"materials": materials},
        "refuse": {"reason": reason},
        "suspend": {"kind": "hearing", "reason": reason},
        "extend": {"reason": reason},
        "withdraw": {"reason": reason},
        "reopen": {"reason": reason},
        "complete_review": {"recommendation": rng.choice(["approve", "reject"]), "opinion": reason},
        "reject": {"reasons": [reason]},
        "deliver": {"method": rng.choice(["in_person", "post", "electronic"])},
        "rate": {"score": rng.randint(1, 5)},
        "complete_callback": {"notes": reason},
    }
    return bodies.get(action, {})


class Mix:
    """Drives the cases; ``run()`` puts them all through."""

    def __init__(self, log: EventLog, reference: Reference, *, seed: int = 5) -> None:
        self.log = log
        self.ref = reference
        self.service: CaseService = case_service(log, reference)
        self.rng = random.Random(seed)
        self.key = 0

    def next_key(self) -> str:
        self.key += 1
        return f"mix-{self.rng.random()}-{self.key}"

    async def run(self, *, applications: int = 30, matters: int = 8, visits: int = 6) -> None:
        await publish_seed(self.log)
        walks = [self.application(i) for i in range(applications)]
        walks += [self.matter(i) for i in range(matters)]
        walks += [self.visit(i) for i in range(visits)]
        self.rng.shuffle(walks)
        # several at once: their events interleave (and their transactions overlap)
        for start in range(0, len(walks), 6):
            await asyncio.gather(*walks[start : start + 6])

    async def visit(self, i: int) -> None:
        clerk = STAFF[0]
        visit_id = uuid.uuid4()
        event = NewEvent(
            event_type="VisitorReceived",
            occurred_at=START + timedelta(hours=i),
            actor=clerk.actor(),
            authority="banqiao_town",
            payload={"visitor_name": f"访客{i}", "purpose": "enquiry", "station": clerk.org},
        )
        await self.log.append(visit_id, 0, [event], case_kind="reception")

    async def matter(self, i: int) -> None:
        kind, model = [
            (
                "mediation",
                MediationIn(
                    title="邻里纠纷", parties=["甲", "乙"], summary="宅基地", occurred_at=None
                ),
            ),
            (
                "legal_publicity",
                PublicityIn(topic="民法典", planned_on=START.date(), occurred_at=None),
            ),
            ("assistance", AssistanceIn(person_name="张三", need="生活困难", occurred_at=None)),
            (
                "police_assistance",
                PoliceAssistanceIn(police_unit="派出所", summary="寻人", occurred_at=None),
            ),
        ][i % 4]
        workflow = self.service.workflows.for_kind(kind)
        payload = start_payload(model)
        opened_at = START + timedelta(hours=i)
        opened = await self.service.open_case(
            case_kind=kind,
            workflow=workflow,
            staff=STAFF[3],
            start_payload=payload,
            item=None,
            follow_up=None,
            correlation_id=None,
            occurred_at=opened_at,
            request=_sent(STAFF[3], self.next_key(), payload, f"POST /matters/{kind}"),
        )
        await self.walk(
            opened.events[0].case_id, steps=self.rng.randint(0, 5), item=None, since=opened_at
        )

    async def application(self, i: int) -> None:
        item = self.ref.catalogue.get(self.rng.choice(ITEMS))
        materials = [m.code for m in item.materials]
        handed_in = materials if self.rng.random() < 0.7 else materials[:-1]
        decide = self.rng.random() < 0.8
        follow_up = None
        if decide:
            follow_up = "accept" if handed_in == materials else "request_correction"
        payload = {
            "item_code": item.code,
            "item_version": item.version,
            "applicant": {"name": f"申请人{i}", "phone": "13812345678"},
            "materials": handed_in,
        }
        opened_at = START + timedelta(hours=i)
        opened = await self.service.open_case(
            case_kind="application",
            workflow=self.ref.workflows.get(item.workflow, item.workflow_version),
            staff=STAFF[0],
            start_payload=payload,
            item=item,
            follow_up=follow_up,
            correlation_id=None,
            occurred_at=opened_at,
            request=_sent(STAFF[0], self.next_key(), payload, "POST /cases"),
        )
        await self.walk(
            opened.events[0].case_id, steps=self.rng.randint(0, 14), item=item, since=opened_at
        )

    async def walk(self, case_id: uuid.UUID, *, steps: int, item: Any, since: datetime) -> None:
        """Up to ``steps`` random steps on the case from ``since`` (its opening), yielding
        between them: each act dated later than the one before, as a case's acts are."""
        rng = self.rng
        materials = [m.code for m in item.materials] if item else ["x"]
        now = since
        for _ in range(steps):
            await asyncio.sleep(0)
            now += timedelta(hours=rng.randint(1, 30))
            _, state = await self.service.load(case_id)
            workflow = self.service.workflow_of(state)
            lawful = workflow.open_actions(state.status)
            roll = rng.random()
            if roll < 0.08 and state.clock.running:
                level = rng.choice(["yellow", "red"])
                if f"{level}@{state.clock.epoch}" not in state.warnings:
                    await self.record(
                        case_id,
                        state,
                        now,
                        "ClockWarningRaised",
                        {
                            "level": level,
                            "epoch": state.clock.epoch,
                            "escalated_to": "station_head",
                        },
                    )
                continue
            if roll < 0.12 and state.status == "forwarded" and not state.forward_overdue:
                await self.record(case_id, state, now, "ForwardOverdue", {"to": state.forward_to})
                continue
            if roll < 0.2 and state.tasks(workflow):
                task = rng.choice(state.tasks(workflow))
                who = next((s for s in STAFF if s.role == task.role and s.org == task.org), None)
                action = "claim" if task.claimed_by is None else "release"
                await self.attempt(case_id, action, {"task": task.kind}, who or STAFF[3], now)
                continue
            if not lawful:
                return
            onward = [a for a in lawful if a not in SIDETRACKS] or lawful
            action = rng.choice(lawful if roll < 0.3 else onward)
            step = workflow.step(state.status, action)
            assert step is not None
            fitting = [s for s in STAFF if s.role in step.roles]
            likely = [
                s for s in fitting if s.org in {"xuefeng_station", "system", state.forward_to}
            ]
            who = rng.choice(likely or fitting) if roll > 0.25 else rng.choice(STAFF)
            await self.attempt(case_id, action, body_for(action, materials, rng), who, now)

    async def attempt(
        self,
        case_id: uuid.UUID,
        action: str,
        body: dict[str, Any],
        who: engine.Staff,
        at: datetime,
    ) -> None:
        # a refused attempt is in the log; the others record nothing
        with contextlib.suppress(
            ActionRefusedError, engine.NotAllowed, engine.Invalid, BodyInvalid, NotFound
        ):
            await self.service.act(
                case_id, action, body, who, idempotency_key=self.next_key(), at=at
            )

    async def record(
        self, case_id: uuid.UUID, state: Any, at: datetime, event_type: str, payload: dict[str, Any]
    ) -> None:
        event = NewEvent(
            event_type=event_type,
            occurred_at=at,
            actor=engine.SYSTEM.actor(),
            authority=state.authority,
            payload=payload,
        )
        await self.log.append(case_id, state.version, [event], case_kind=state.case_kind)


def _sent(staff: engine.Staff, key: str, body: dict[str, Any], operation: str) -> KeyedRequest:
    """``body`` as ``staff`` would have sent it under ``key``."""
    return KeyedRequest.of(
        organisation=staff.org, user=staff.user, key=key, operation=operation, body=body
    )
