"""Random command sequences against the engine, through the case service, on a real
(SQLite) log: no sequence reaches a state the transition table does not allow, a refused
attempt never moves the case, and the read model always equals the fold."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from shared.adapters.db import create_engine
from shared.adapters.delegations import publish_seed
from shared.adapters.eventlog import EventLog
from shared.adapters.eventlog.store import read_case_in
from shared.adapters.tables.workflow import case_index, tasks
from shared.application.projections.cases import write_rows
from shared.application.workflow.service import (
    ActionRefusedError,
    BodyInvalid,
    CaseService,
    NotFound,
)
from shared.application.workflow.wiring import case_service
from shared.domain.workflow import engine
from shared.domain.workflow.payloads import BODIES
from shared.domain.workflow.reference import load_reference
from shared.domain.workflow.state import CaseState, fold
from tests.conftest import fresh_sqlite_db
from tests.keys import sent

REFERENCE = load_reference()
ITEMS = ["pension_enrolment", "funeral_subsidy", "logging_permit", "minimum_living_allowance"]
STAFF = [
    engine.Staff("li.clerk", "window_clerk", "xuefeng_station"),
    engine.Staff("wang.reviewer", "reviewer", "xuefeng_station"),
    engine.Staff("sun.reviewer", "reviewer", "xuefeng_station"),
    engine.Staff("zhao.head", "station_head", "xuefeng_station", frozenset({"reopen"})),
    engine.Staff("liu.forestry", "department_officer", "hc_forestry"),
    engine.Staff("ma.town", "department_officer", "banqiao_town"),
    engine.Staff("chen.clerk", "window_clerk", "longmen_station"),
    engine.Staff("gao.audit", "auditor", "hc_audit"),
]
SAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "request_correction": {},
    "submit_correction": {"materials": ["id_card"]},
    "refuse": {"reason": "不属于受理范围"},
    "suspend": {"kind": "expert_review", "reason": "需专家评审"},
    "resume": {},
    "extend": {"reason": "情况复杂"},
    "complete_review": {"recommendation": "approve", "opinion": "材料齐全"},
    "reject": {"reasons": ["不符合条件"]},
    "deliver": {"method": "in_person"},
    "rate": {"score": 2},
    "withdraw": {"reason": "申请人撤回"},
    "reopen": {"reason": "复核发现错误"},
    "complete_callback": {"notes": "已回访"},
}
ACTIONS = sorted(BODIES)
ENDINGS = frozenset({"withdraw", "refuse", "reject", "rate"})
"""Steps that end or sidetrack a case: still taken, but less often than the others."""
REACHED: set[str] = set()
"""Every status some example reached: the machine must get cases far, not only refuse."""


class _Database:
    url = ""


DB = _Database()


class CaseMachine(RuleBasedStateMachine):
    """One case, driven by random staff taking random actions."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = create_engine(DB.url)
        self.service: CaseService = case_service(EventLog(self.db), REFERENCE)
        self.case_id = uuid.uuid4()
        self.refused = 0

    def teardown(self) -> None:
        self.loop.run_until_complete(self.db.dispose())
        self.loop.close()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize(
        item_code=st.sampled_from(ITEMS),
        complete=st.booleans(),
        decide=st.sampled_from(["now", "later"]),
    )
    def open_case(self, item_code: str, complete: bool, decide: str) -> None:
        item = REFERENCE.catalogue.get(item_code)
        materials = [m.code for m in item.materials]
        if not complete:
            materials = materials[:1]
        follow_up = None
        if decide == "now":
            follow_up = "accept" if complete else "request_correction"
        workflow = REFERENCE.workflows.get(item.workflow, item.workflow_version)
        payload = {
            "item_code": item.code,
            "item_version": item.version,
            "applicant": {"name": "王秀英", "phone": "13812345678"},
            "materials": materials,
        }
        opened = self.run(
            self.service.open_case(
                case_kind="application",
                workflow=workflow,
                staff=STAFF[0],
                start_payload=payload,
                item=item,
                follow_up=follow_up,
                correlation_id=None,
                occurred_at=None,
                request=sent(STAFF[0], uuid.uuid4().hex, payload),
            )
        )
        self.case_id = opened.events[0].case_id

    def state(self) -> tuple[list[Any], CaseState]:
        events, state = self.run(self.service.load(self.case_id))
        return events, state

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        _, before = self.state()
        workflow = self.service.workflow_of(before)
        open_now = workflow.open_actions(before.status)
        # Mostly a step the case allows now, by someone whose role may take it (so that
        # sequences get far); sometimes anything, by anyone.
        forward = [a for a in open_now if a not in ENDINGS] or open_now
        if open_now and data.draw(st.integers(0, 9), label="lawful") > 0:
            action = data.draw(st.sampled_from(forward), label="action")
            step = workflow.step(before.status, action)
            roles = step.roles if step else ()
            fitting = [s for s in STAFF if s.role in roles] or STAFF
            who = data.draw(st.sampled_from(fitting), label="who")
            garbage = False
        else:
            action = data.draw(st.sampled_from(ACTIONS), label="action")
            who = data.draw(st.sampled_from(STAFF), label="who")
            garbage = data.draw(st.booleans(), label="garbage")
        body = {"nonsense": 1} if garbage else SAMPLE_BODIES.get(action, {})
        try:
            self.run(
                self.service.act(self.case_id, action, body, who, idempotency_key=uuid.uuid4().hex)
            )
        except ActionRefusedError:
            self.refused += 1
            _, after = self.state()
            assert after.status == before.status, "a refused attempt moved the case"
            assert after.refusals == before.refusals + 1
        except (engine.NotAllowed, engine.Invalid, BodyInvalid, NotFound):
            _, after = self.state()
            assert after.version == before.version, "a rejected request recorded something"
        REACHED.add(self.state()[1].status)

    @invariant()
    def every_event_is_a_transition_the_table_allows(self) -> None:
        events, state = self.state()  # folding raises IllegalTransition otherwise
        workflow = self.service.workflow_of(state)
        for event in events:
            payload = event.payload
            if "status_after" in payload and event.event_type in workflow.event_types:
                key = (payload["status_before"], event.event_type)
                assert workflow.table[key] == payload["status_after"], event
        assert state.status in workflow.statuses

    @invariant()
    def the_read_model_equals_the_fold(self) -> None:
        async def project() -> tuple[dict[str, Any], set[tuple[str, str, str]]]:
            async with self.service.log.writer.begin() as conn:
                state = fold(await read_case_in(conn, self.case_id), REFERENCE.workflows)
                await write_rows(conn, state, self.service.workflow_of(state))
            async with self.db.connect() as conn:
                row = (
                    (
                        await conn.execute(
                            sa.select(case_index).where(case_index.c.case_id == self.case_id)
                        )
                    )
                    .mappings()
                    .one()
                )
                task_rows = await conn.execute(
                    sa.select(tasks.c.kind, tasks.c.role, tasks.c.org).where(
                        tasks.c.case_id == self.case_id
                    )
                )
                return dict(row), {tuple(r) for r in task_rows}

        row, task_rows = self.run(project())
        _, state = self.state()
        assert (row["status"], row["version"], row["warning"]) == (
            state.status,
            state.version,
            state.warning_level(),
        )
        expected = {(t.kind, t.role, t.org) for t in state.tasks(self.service.workflow_of(state))}
        assert task_rows == expected


@pytest.fixture
def seeded_sqlite(tmp_path: Path) -> str:
    url = fresh_sqlite_db(tmp_path)
    db = create_engine(url)

    async def seed() -> None:
        try:
            await publish_seed(EventLog(db))
        finally:
            await db.dispose()

    asyncio.run(seed())
    return url


def test_random_command_sequences_keep_the_engine_lawful(seeded_sqlite: str) -> None:
    DB.url = seeded_sqlite
    CaseMachine.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    CaseMachine.TestCase().runTest()
    assert {"in_review", "reviewed", "approved", "delivered", "closed"} <= REACHED, REACHED
