"""A month at the Xuefeng station, put through the case service with the moments each
step happened (November 2026), for the statistics tests; and a helper that fills the
statistics tables from a log by calling the projections directly.

The expected figures are worked out by hand below from the steps taken, not by the code
under test: working days are counted on the 2026 calendar (November has no holidays;
1 November is a Sunday).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.delegations import publish_seed, resume, suspend
from shared.adapters.eventlog import EventLog
from shared.application.projections.runner import ProjectionRunner
from shared.application.statistics.projection import (
    DelegationUsageProjection,
    StatisticsProjection,
)
from shared.application.workflow.service import ActionRefusedError, CaseService
from shared.application.workflow.wiring import case_service
from shared.domain.events import Actor, NewEvent
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow import engine
from shared.domain.workflow.reference import Reference, load_reference
from tests.keys import sent

REFERENCE = load_reference()
STATION = "xuefeng_station"
CLERK = engine.Staff("li.clerk", "window_clerk", STATION)
REVIEWER = engine.Staff("wang.reviewer", "reviewer", STATION)
HEAD = engine.Staff("zhao.head", "station_head", STATION)
LM_CLERK = engine.Staff("chen.clerk", "window_clerk", "longmen_station")
FORESTRY = engine.Staff("liu.forestry", "department_officer", "hc_forestry")
TOWN = engine.Staff("ma.town", "department_officer", "banqiao_town")
APPLICANT = {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"}
SUSPENDED_DELEGATION = "health-xuefeng-2021-station"


def at(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    """A moment at the station in 2026."""
    return datetime(2026, month, day, hour, minute, tzinfo=CHINA_TZ)


def nov(day: int, hour: int = 9, minute: int = 0) -> datetime:
    return at(11, day, hour, minute)


class Desk:
    """Opens cases and takes actions at given moments through the case service."""

    def __init__(self, service: CaseService) -> None:
        self.service = service
        self.keys = 0

    def key(self) -> str:
        self.keys += 1
        return f"story-{self.keys}"

    async def apply(
        self,
        item_code: str,
        when: datetime,
        *,
        complete: bool = True,
        decide: bool = True,
        staff: engine.Staff = CLERK,
    ) -> uuid.UUID:
        item = self.service.catalogue.get(item_code)
        materials = [m.code for m in item.materials]
        if not complete:
            materials = materials[:1]
        follow_up = ("accept" if complete else "request_correction") if decide else None
        payload = {
            "item_code": item.code,
            "item_version": item.version,
            "applicant": APPLICANT,
            "materials": materials,
            "originals_checked": materials,
            "channels": ["sms"],
            "language": "zh-CN",
        }
        outcome = await self.service.open_case(
            case_kind="application",
            workflow=self.service.workflows.published(item.workflow, item.workflow_version),
            staff=staff,
            start_payload=payload,
            item=item,
            follow_up=follow_up,
            correlation_id=None,
            occurred_at=when,
            request=sent(staff, self.key(), payload),
        )
        return outcome.events[0].case_id

    async def matter(
        self, kind: str, payload: dict[str, Any], when: datetime, staff: engine.Staff = CLERK
    ) -> uuid.UUID:
        outcome = await self.service.open_case(
            case_kind=kind,
            workflow=self.service.workflows.for_kind(kind),
            staff=staff,
            start_payload=payload,
            item=None,
            follow_up=None,
            correlation_id=None,
            occurred_at=when,
            request=sent(staff, self.key(), payload, f"POST /matters/{kind}"),
        )
        return outcome.events[0].case_id

    async def act(
        self,
        case_id: uuid.UUID,
        action: str,
        staff: engine.Staff,
        when: datetime,
        body: dict[str, Any] | None = None,
    ) -> None:
        await self.service.act(
            case_id, action, body or {}, staff, idempotency_key=self.key(), at=when
        )

    async def refused(
        self, case_id: uuid.UUID, action: str, staff: engine.Staff, when: datetime
    ) -> str:
        try:
            await self.act(case_id, action, staff, when)
        except ActionRefusedError as refused:
            return refused.refusal.reason
        raise AssertionError(f"{action} by {staff.role} was not refused")

    async def visit(self, purpose: str, when: datetime, staff: engine.Staff = CLERK) -> None:
        payload = {"visitor_name": "张三", "purpose": purpose, "station": staff.org}
        event = NewEvent(
            event_type="VisitorReceived",
            occurred_at=when,
            actor=staff.actor(),
            authority=self.service.own_authority(staff.org),
            payload=payload,
        )
        await self.service.open_stream(
            case_kind="reception",
            event=event,
            staff=staff,
            request=sent(staff, self.key(), payload, "POST /reception"),
        )


async def review(desk: Desk, case_id: uuid.UUID, when: datetime) -> None:
    await desk.act(case_id, "start_review", REVIEWER, when)
    await desk.act(
        case_id,
        "complete_review",
        REVIEWER,
        when,
        {"recommendation": "approve", "opinion": "材料齐全，符合条件"},
    )


async def put_through(log: EventLog) -> None:
    """The station's November (and one case from the end of October)."""
    await publish_seed(log, at=at(1, 1))
    desk = Desk(case_service(log, REFERENCE))
    officer = Actor(user="seed", role="department_officer", station="hc_health")

    # L: received on Friday 30 October, decided Monday 2 November: 1 working day, on time.
    late_october = await desk.apply("pension_enrolment", at(10, 30, 15))
    await review(desk, late_october, nov(2, 8))
    await desk.act(late_october, "approve", HEAD, nov(2, 9))

    # A: decided the next working day (1 ≤ committed 1); a window clerk tries to decide
    # first (wrong role: refused, citing no delegation); delivered and rated 5.
    a = await desk.apply("pension_enrolment", nov(2, 9))
    await review(desk, a, nov(2, 10))
    assert await desk.refused(a, "approve", CLERK, nov(2, 11)) == "wrong_role"
    await desk.act(a, "approve", HEAD, nov(3, 9))
    await desk.act(a, "deliver", CLERK, nov(3, 10), {"method": "in_person"})
    await desk.act(a, "rate", CLERK, nov(3, 10, 5), {"score": 5})

    # B: 3 working days for a 1-day promise: late on the committed limit, not the legal.
    b = await desk.apply("pension_enrolment", nov(2, 9, 30))
    await review(desk, b, nov(2, 10))
    await desk.act(b, "approve", HEAD, nov(5, 9))
    await desk.act(b, "deliver", CLERK, nov(5, 10), {"method": "post"})
    await desk.act(b, "rate", CLERK, nov(5, 11), {"score": 2})

    # C: suspended 3 → 10 November (5 working days off the clock): 7 elapsed, 2 used.
    c = await desk.apply("funeral_subsidy", nov(2, 10))
    await desk.act(c, "start_review", REVIEWER, nov(2, 11))
    await desk.act(
        c, "suspend", REVIEWER, nov(3, 9), {"kind": "expert_review", "reason": "需专家评审"}
    )
    await desk.act(c, "resume", REVIEWER, nov(10, 9))
    await desk.act(
        c,
        "complete_review",
        REVIEWER,
        nov(10, 10),
        {"recommendation": "approve", "opinion": "评审通过"},
    )
    await desk.act(c, "approve", HEAD, nov(11, 9))

    # D: forwarded to the forestry bureau on 4 November, approved there on 30 November:
    # 20 working days (3–30 November): late on committed 5, on time on legal 20.
    d = await desk.apply("logging_permit", nov(2, 11))
    await review(desk, d, nov(3, 9))
    await desk.act(d, "forward", REVIEWER, nov(4, 9))
    await desk.act(d, "approve", FORESTRY, nov(30, 9))
    await desk.act(d, "deliver", CLERK, nov(30, 15), {"method": "in_person"})

    # E: forwarded to the town the same day, rejected there after 4 working days.
    e = await desk.apply("minimum_living_allowance", nov(2, 14))
    await review(desk, e, nov(2, 15))
    await desk.act(e, "forward", REVIEWER, nov(2, 16))
    await desk.act(e, "reject", TOWN, nov(6, 9), {"reasons": ["家庭收入超过低保标准"]})

    # F: accepted, then withdrawn.
    f = await desk.apply("medical_reimbursement", nov(3, 9))
    await desk.act(f, "withdraw", CLERK, nov(4, 9), {"reason": "申请人撤回申请"})

    # G: received only, then not accepted.
    g = await desk.apply("pension_benefit_claim", nov(4, 9), decide=False)
    await desk.act(g, "refuse", CLERK, nov(4, 10), {"reason": "不属于本站受理范围"})

    # H: incomplete (the one-time notice), corrected and accepted on 9 November,
    # decided on 12 November: 3 working days of 5.
    h = await desk.apply("funeral_subsidy", nov(5, 9), complete=False)
    item = desk.service.catalogue.get("funeral_subsidy")
    await desk.act(
        h, "submit_correction", CLERK, nov(9, 9), {"materials": [m.code for m in item.materials]}
    )
    await desk.act(h, "accept", CLERK, nov(9, 10))
    await review(desk, h, nov(10, 9))
    await desk.act(h, "approve", HEAD, nov(12, 9))

    # I: extended by 10 days (limit 1 + 10): 4 working days is on time.
    i = await desk.apply("pension_enrolment", nov(16, 9))
    await desk.act(i, "start_review", REVIEWER, nov(16, 10))
    await desk.act(i, "extend", HEAD, nov(17, 9), {"reason": "情况复杂需核实"})
    await desk.act(
        i,
        "complete_review",
        REVIEWER,
        nov(19, 9),
        {"recommendation": "approve", "opinion": "核实无误"},
    )
    await desk.act(i, "approve", HEAD, nov(20, 9))

    # J: the health bureau suspends its delegation on 17 November: the head's decision is
    # refused citing it; resumed on 18 November, decided then (2 days of 1: late).
    j = await desk.apply("maternal_health_handbook", nov(16, 11))
    await review(desk, j, nov(16, 14))
    await suspend(
        log, SUSPENDED_DELEGATION, reason="整改检查期间暂停", actor=officer, at=nov(17, 8)
    )
    assert await desk.refused(j, "approve", HEAD, nov(17, 9)) == "delegation_suspended"
    await resume(log, SUSPENDED_DELEGATION, reason="整改完成恢复", actor=officer, at=nov(18, 8))
    await desk.act(j, "approve", HEAD, nov(18, 9))

    # The station's other matters.
    m1 = await desk.matter(
        "mediation",
        {"title": "宅基地边界纠纷", "parties": ["张三", "李四"], "summary": "相邻宅基地界址争议"},
        nov(2, 14),
    )
    await desk.act(m1, "hold_session", HEAD, nov(3, 14), {"notes": "双方到场陈述"})
    await desk.act(
        m1, "conclude", HEAD, nov(4, 14), {"outcome": "agreement", "summary": "达成调解协议"}
    )
    await desk.act(m1, "close", HEAD, nov(4, 15))
    m2 = await desk.matter(
        "mediation",
        {"title": "赡养纠纷", "parties": ["王五", "王六"], "summary": "赡养费分担"},
        nov(5, 14),
    )
    await desk.act(m2, "withdraw", HEAD, nov(6, 9), {"reason": "双方自行和解"})
    p = await desk.matter(
        "legal_publicity", {"topic": "民法典进村", "planned_on": "2026-11-13"}, nov(6, 9)
    )
    await desk.act(p, "hold", CLERK, nov(13, 15), {"attendees": 45})
    s = await desk.matter(
        "assistance", {"person_name": "赵大爷", "need": "独居老人冬季取暖"}, nov(9, 9)
    )
    await desk.act(s, "provide", HEAD, nov(9, 16), {"description": "送去取暖物资"})
    q = await desk.matter(
        "police_assistance",
        {"police_unit": "板桥派出所", "summary": "协助查找走失老人"},
        nov(10, 9),
    )
    await desk.act(q, "provide", HEAD, nov(12, 9), {"description": "协助找回", "case_solved": True})

    # Visitors: six at Xuefeng, one at Longmen; Longmen also helps someone.
    for purpose, when in (
        ("enquiry", nov(2, 8)),
        ("enquiry", nov(2, 8, 30)),
        ("application", nov(2, 9)),
        ("application", nov(3, 9)),
        ("mediation", nov(5, 13)),
        ("application", nov(16, 9)),
    ):
        await desk.visit(purpose, when)
    await desk.visit("assistance", nov(2, 10), LM_CLERK)
    await desk.matter(
        "assistance", {"person_name": "钱奶奶", "need": "代办药品"}, nov(3, 9), LM_CLERK
    )


EXPECTED_XUEFENG_NOVEMBER = {
    "people_received": 6,
    "applications": {
        "received": 10,  # A B C D E F G H I J (L was received in October)
        "accepted": 9,  # all but G
        "corrections": 1,
        "not_accepted": 1,
        "withdrawn": 1,
        "forwarded": 2,
        "completed_at_station": 7,  # L A B C H I J
        "completed_upstream": 2,  # D E
        "approved": 8,
        "rejected": 1,
        "delivered": 3,
        "timed": 9,
        "on_time_committed": 6,  # L A C E H I
        "on_time_legal": 9,
        "working_days": 1 + 1 + 3 + 2 + 20 + 4 + 3 + 4 + 2,
        "ratings": 2,
        "rating_sum": 7,
        "poor_ratings": 1,
    },
    "matters": {
        "mediation": {"received": 2, "completed_at_station": 1, "withdrawn": 1},
        "legal_publicity": {"received": 1, "completed_at_station": 1},
        "assistance": {"received": 1, "completed_at_station": 1},
        "police_assistance": {"received": 1, "completed_at_station": 1},
    },
}
"""What the station's November report must say (1–30 November, days in China)."""


async def project(
    engine_: AsyncEngine,
    reference: Reference = REFERENCE,
    *,
    batch: int = 500,
    projections: Sequence[StatisticsProjection | DelegationUsageProjection] | None = None,
) -> None:
    """Fill the statistics tables from the whole log in batches, as the live runner does
    (its checkpoints too: the report knows the counting is complete)."""
    chosen = projections or [StatisticsProjection(reference), DelegationUsageProjection(reference)]
    log = EventLog(engine_)
    for projection in chosen:
        await ProjectionRunner(log, projection, batch_size=batch).catch_up()


async def table_rows(engine_: AsyncEngine, table: sa.Table) -> list[tuple[Any, ...]]:
    """Every row of ``table``, sorted."""
    async with engine_.connect() as conn:
        rows = (await conn.execute(sa.select(table))).all()
    return sorted(tuple(r) for r in rows)
