"""Random command sequences against the workflow engine, through ``CaseService.act`` on a
real (SQLite) log with the seed delegations — every action of station_item v1 and
forwarded_item v1, task claims and releases, ratings, withdrawals, call-backs, retries with
the same Idempotency-Key, and the facts the timers record (clock warnings, an overdue
forwarding), by random staff of the station, another station, departments and the system.

After every step:

(a) every stored event that moves the case is a (status, event) pair of the pinned
    workflow's table, its recorded status_before/after agree with the fold, and folding
    never raises; an action the table does not offer from the status is never recorded;
(b) the state the service returned, the state kept by applying each new event, and the
    state folded from scratch are equal; ``write_rows`` of either gives the same
    ``case_index`` row and tasks, and they say what the fold says;
(c) a refused attempt (wrong role, outside the delegation) leaves the status alone and
    records exactly one ``ActionRefused``; a rejected request (409/422/404) records nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.db import create_engine
from shared.adapters.delegations import publish_seed
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.workflow import case_index, tasks
from shared.application.projections.cases import summary, write_rows
from shared.application.workflow.service import (
    ActionRefusedError,
    BodyInvalid,
    CaseService,
    NotFound,
    Outcome,
)
from shared.application.workflow.wiring import case_service
from shared.domain.events import NewEvent, StoredEvent
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow import engine
from shared.domain.workflow.definitions import Workflow
from shared.domain.workflow.payloads import BODIES, TASK_ACTIONS
from shared.domain.workflow.reference import load_reference
from shared.domain.workflow.state import CaseState, apply, fold
from tests.conftest import fresh_sqlite_db
from tests.keys import sent

T = TypeVar("T")

REFERENCE = load_reference()
WORKFLOWS = REFERENCE.workflows
STATION = WORKFLOWS.get("station_item", 1)
FORWARDED = WORKFLOWS.get("forwarded_item", 1)
ITEMS = [
    "pension_enrolment",  # station, hc_hrss
    "medical_insurance_enrolment",  # station, hc_medical_security
    "logging_permit",  # forwarded to hc_forestry
    "minimum_living_allowance",  # forwarded to banqiao_town (decides under delegation)
    "birth_certificate",  # forwarded to hc_health
    "funeral_subsidy",  # station, hc_hrss (a second item of the same workflow)
]
ACTIONS = sorted(STATION.actions() | FORWARDED.actions() | TASK_ACTIONS | set(BODIES))
"""Every action of the two workflows, and every other action there is (a matter's steps,
never an application's)."""
STAFF = [
    engine.Staff("li.clerk", "window_clerk", "xuefeng_station"),
    engine.Staff("zhou.clerk", "window_clerk", "xuefeng_station"),
    engine.Staff("wang.reviewer", "reviewer", "xuefeng_station"),
    engine.Staff("sun.reviewer", "reviewer", "xuefeng_station"),
    engine.Staff("zhao.head", "station_head", "xuefeng_station", frozenset({"reopen"})),
    engine.Staff("qian.head", "station_head", "xuefeng_station"),
    engine.Staff("liu.forestry", "department_officer", "hc_forestry"),
    engine.Staff("ma.town", "department_officer", "banqiao_town"),
    engine.Staff("he.health", "department_officer", "hc_health"),
    engine.Staff("chen.clerk", "window_clerk", "longmen_station"),
    engine.Staff("gao.audit", "auditor", "hc_audit"),
    engine.SYSTEM,
]
TASK_KINDS = [
    "review",
    "decide",
    "forward",
    "answer",
    "deliver",
    "call_back",
    "escalation",
    "chase_department",
    "nonsense",
]
REASON = st.sampled_from(["申请人要求", "材料需核实", "情况复杂需延期", "x"])  # "x" is too short
SIDETRACKS = frozenset({"withdraw", "refuse", "reject", "suspend", "extend", "rate"})
"""Lawful steps that end or sidetrack a case: drawn less often, so that cases get far."""
REACHED: set[str] = set()
"""Statuses some example reached: the machine must take cases far, not only refuse."""
MOVED: set[str] = set()
"""Actions some example recorded successfully."""
START = datetime(2026, 2, 10, 9, 0, tzinfo=CHINA_TZ)  # the week before the Spring Festival


def body_for(action: str, materials: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed bodies for ``action`` (their content may still not fit the case)."""
    codes = st.sampled_from([*materials, "photo"])
    valid: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "request_correction": st.fixed_dictionaries(
            {
                "defective": st.lists(
                    st.fixed_dictionaries({"code": codes, "reason": REASON}), max_size=2
                )
            }
        ),
        "submit_correction": st.fixed_dictionaries(
            {"materials": st.lists(codes, min_size=1, max_size=6, unique=True)}
        ),
        "refuse": st.fixed_dictionaries({"reason": REASON}),
        "suspend": st.fixed_dictionaries(
            {"kind": st.sampled_from(["hearing", "testing", "expert_review"]), "reason": REASON}
        ),
        "extend": st.fixed_dictionaries({"reason": REASON}),
        "withdraw": st.fixed_dictionaries({"reason": REASON}),
        "reopen": st.fixed_dictionaries({"reason": REASON}),
        "complete_review": st.fixed_dictionaries(
            {"recommendation": st.sampled_from(["approve", "reject"]), "opinion": REASON}
        ),
        "approve": st.just({}) | st.just({"decision_number": "韩人社决〔2026〕12号"}),
        "reject": st.fixed_dictionaries({"reasons": st.lists(REASON, min_size=1, max_size=2)}),
        "deliver": st.fixed_dictionaries(
            {"method": st.sampled_from(["in_person", "post", "electronic", "by_proxy"])}
        ),
        "rate": st.fixed_dictionaries({"score": st.integers(1, 5)}),
        "claim": st.just({}) | st.fixed_dictionaries({"task": st.sampled_from(TASK_KINDS)}),
        "release": st.just({}) | st.fixed_dictionaries({"task": st.sampled_from(TASK_KINDS)}),
        "complete_callback": st.fixed_dictionaries({"notes": REASON}),
    }
    return valid.get(action, st.just({}))


GARBAGE: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [{"nonsense": 1}, {"score": 9}, {"reason": ""}, {"materials": []}]
)


class WorkflowMachine(RuleBasedStateMachine):
    """One case, driven by random staff taking random actions at advancing times."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db: AsyncEngine = create_engine(url)
        self.service: CaseService = case_service(EventLog(self.db), REFERENCE)
        self.case_id = uuid.uuid4()
        """The case's id, a random one until it is opened."""
        self.now = START
        self.kept = CaseState()
        """The state kept by applying each new event once, as the service does."""
        self.last: tuple[str, dict[str, Any], engine.Staff, str, Outcome] | None = None

    def teardown(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- helpers -------------------------------------------------------------------------

    def events(self) -> list[StoredEvent]:
        return self.run(self.service.log.read_case(self.case_id))

    def keep(self) -> CaseState:
        """Apply the events recorded since the kept state; return the kept state."""
        for event in self.events()[self.kept.version :]:
            self.kept = apply(self.kept, event, WORKFLOWS)
        return self.kept

    @property
    def workflow(self) -> Workflow:
        return self.service.workflow_of(self.kept)

    def tick(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    # -- rules ---------------------------------------------------------------------------

    @initialize(
        item_code=st.sampled_from(ITEMS),
        handed_in=st.integers(0, 5),
        decide=st.sampled_from(["now", "later"]),
    )
    def open_case(self, item_code: str, handed_in: int, decide: str) -> None:
        item = REFERENCE.catalogue.get(item_code)
        materials = [m.code for m in item.materials][: handed_in or None]
        complete = len(materials) == len(item.materials)
        follow_up = None
        if decide == "now":
            follow_up = "accept" if complete else "request_correction"
        payload = {
            "item_code": item.code,
            "item_version": item.version,
            "applicant": {"name": "王秀英", "phone": "13812345678", "village": "gongyu"},
            "materials": materials,
        }
        outcome = self.run(
            self.service.open_case(
                case_kind="application",
                workflow=WORKFLOWS.get(item.workflow, item.workflow_version),
                staff=STAFF[0],
                start_payload=payload,
                item=item,
                follow_up=follow_up,
                correlation_id=None,
                occurred_at=self.now,
                request=sent(STAFF[0], uuid.uuid4().hex, payload),
            )
        )
        self.case_id = outcome.events[0].case_id
        assert outcome.state == self.keep()
        expected = (
            "received"
            if follow_up is None
            else STATION.table[("received", "CaseAccepted" if complete else "CorrectionRequested")]
        )
        assert self.kept.status == expected
        REACHED.add(self.kept.status)

    @rule(data=st.data(), hours=st.integers(0, 30))
    def act(self, data: st.DataObject, hours: int) -> None:
        """Any action, mostly one the status offers."""
        self.take(data, hours, data.draw(st.integers(0, 9), label="kind of step"))

    @rule(data=st.data(), hours=st.integers(0, 30))
    def advance(self, data: st.DataObject, hours: int) -> None:
        """A step the status offers that takes the case onwards (so that cases get far)."""
        self.take(data, hours, 9)

    def take(self, data: st.DataObject, hours: int, choice: int) -> None:
        """Draw an action, who takes it and its body: 0-3 anything, 4-5 a step the status
        offers, 6-9 one that takes the case onwards."""
        self.tick(hours)
        before = self.keep()
        workflow = self.workflow
        lawful = workflow.open_actions(before.status)
        onward = [a for a in lawful if a not in SIDETRACKS] or lawful
        if lawful and choice >= 4:
            action = data.draw(st.sampled_from(onward if choice >= 6 else lawful), label="action")
            step = workflow.step(before.status, action)
            assert step is not None
            item = self.service.item_of(before)
            likely = [
                s
                for s in STAFF
                if s.role in step.roles
                and s.org in {"xuefeng_station", "system", item and item.forward_to}
            ]
            fitting = [s for s in STAFF if s.role in step.roles]
            who = data.draw(
                st.sampled_from(likely or STAFF) | st.sampled_from(fitting), label="who"
            )
        else:
            action = data.draw(st.sampled_from(ACTIONS), label="action")
            who = data.draw(st.sampled_from(STAFF), label="who")
        item = self.service.item_of(before)
        materials = [m.code for m in item.materials] if item else []
        malformed = data.draw(st.integers(0, 9), label="malformed") == 0
        body = data.draw(GARBAGE if malformed else body_for(action, materials), label="body")
        self.attempt(action, body, who)

    @precondition(lambda self: self.kept.exists and bool(self.kept.tasks(self.workflow)))
    @rule(data=st.data(), hours=st.integers(0, 30))
    def work_a_task(self, data: st.DataObject, hours: int) -> None:
        """Claim or release one of the case's open tasks, mostly as someone who works it."""
        self.tick(hours)
        task = data.draw(st.sampled_from(self.kept.tasks(self.workflow)), label="task")
        fitting = [s for s in STAFF if s.role == task.role and s.org == task.org]
        who = data.draw(st.sampled_from(fitting or STAFF) | st.sampled_from(STAFF), label="who")
        action = data.draw(st.sampled_from(["claim", "claim", "release"]), label="action")
        body = data.draw(st.sampled_from([{"task": task.kind}, {}]), label="body")
        self.attempt(action, body, who)

    def attempt(self, action: str, body: dict[str, Any], who: engine.Staff) -> None:
        """Take ``action`` through the service and check what it did to the case."""
        before = self.keep()
        workflow = self.workflow
        key = uuid.uuid4().hex
        step = workflow.step(before.status, action)
        visible = self.service.visible(who, before)
        try:
            outcome = self.run(
                self.service.act(self.case_id, action, body, who, idempotency_key=key, at=self.now)
            )
        except ActionRefusedError as refused:
            # (c): recorded, and nothing else moved
            after = self.keep()
            assert refused.state == after
            assert after.status == before.status, "a refused attempt moved the case"
            assert after.version == before.version + 1
            assert after.refusals == before.refusals + 1
            last = self.events()[-1]
            assert last.event_type == "ActionRefused"
            assert last.payload["action"] == action
            assert last.payload["status"] == before.status
            assert last.actor_user == who.user
            if action not in TASK_ACTIONS:
                assert step is not None
                if who.role not in step.roles:
                    assert refused.refusal.reason == "wrong_role"
            return
        except (engine.NotAllowed, engine.Invalid, BodyInvalid, NotFound) as err:
            after = self.keep()
            assert after.version == before.version, f"{type(err).__name__} recorded something"
            assert isinstance(err, NotFound) is (not visible), err
            return
        # (a): what the table doesn't offer is never recorded, and a step goes where it says
        after = self.keep()
        assert visible
        assert outcome.state == after, "the service's state differs from the log's"
        assert not outcome.replayed
        assert [e.version for e in outcome.events] == list(
            range(before.version + 1, after.version + 1)
        )
        if action in TASK_ACTIONS:
            assert after.status == before.status
        else:
            assert step is not None, f"{action} was recorded from {before.status}"
            assert who.role in step.roles
            if who.role == "department_officer":  # seeing a case is not deciding it
                assert who.org == before.forward_to, (action, who.org, before.forward_to)
            assert after.status == step.target(before.status)
        MOVED.add(action)
        REACHED.add(after.status)
        self.last = (action, body, who, key, outcome)

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry_the_last_request(self) -> None:
        """The same Idempotency-Key gives the same answer and records nothing more."""
        assert self.last is not None
        action, body, who, key, first = self.last
        before = self.keep()
        again = self.run(self.service.act(self.case_id, action, body, who, idempotency_key=key))
        assert again.replayed
        assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
        assert self.keep().version == before.version

    @precondition(lambda self: self.kept.clock.running)
    @rule(level=st.sampled_from(["yellow", "red"]), hours=st.integers(0, 30))
    def a_clock_warning_fires(self, level: str, hours: int) -> None:
        """What the clock-warning timer records (at most once per level and epoch)."""
        self.tick(hours)
        state = self.keep()
        if f"{level}@{state.clock.epoch}" in state.warnings:
            return
        self.record(
            "ClockWarningRaised",
            {"level": level, "epoch": state.clock.epoch, "escalated_to": "station_head"},
        )
        after = self.keep()
        assert after.status == state.status
        assert after.warning_level() in ("yellow", "red")
        if after.clock.running:
            assert any(t.kind == "escalation" for t in after.tasks(self.workflow))

    @precondition(lambda self: self.kept.status == "forwarded" and not self.kept.forward_overdue)
    @rule(hours=st.integers(0, 30))
    def the_forwarding_falls_overdue(self, hours: int) -> None:
        """What the forwarding-deadline timer records."""
        self.tick(hours)
        state = self.keep()
        self.record("ForwardOverdue", {"to": state.forward_to})
        after = self.keep()
        assert after.status == "forwarded"
        assert any(t.kind == "chase_department" for t in after.tasks(self.workflow))

    def record(self, event_type: str, payload: dict[str, Any]) -> None:
        event = NewEvent(
            event_type=event_type,
            occurred_at=self.now,
            actor=engine.SYSTEM.actor(),
            authority=self.kept.authority,
            payload=payload,
        )
        self.run(
            self.service.log.append(
                self.case_id, self.kept.version, [event], case_kind="application"
            )
        )

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def every_move_is_in_the_table(self) -> None:
        """(a) Replaying the log: each moving event is allowed from the status before it."""
        events = self.events()
        workflow = self.workflow
        status = ""
        for event in events:
            moves = event.event_type in workflow.event_types
            if moves:
                key = (status, event.event_type)
                assert key in workflow.table, f"{key} is not in {workflow.name}'s table"
                after = workflow.table[key]
            else:
                after = status
            if "status_before" in event.payload:
                assert moves, event.event_type
                assert (event.payload["status_before"], event.payload["status_after"]) == (
                    status,
                    after,
                )
            status = after
        scratch = fold(events, WORKFLOWS)  # never raises IllegalTransition
        assert scratch.status == status
        assert scratch.status in workflow.statuses

    @invariant()
    def the_read_model_equals_the_fold(self) -> None:
        """(b) kept state = fold from scratch; both project to the same rows, and the rows
        say what the fold says."""
        kept = self.keep()
        scratch = fold(self.events(), WORKFLOWS)
        assert kept == scratch
        workflow = self.workflow
        rows = self.run(self.project(kept, scratch, workflow))
        from_kept, from_scratch = rows
        assert from_kept == from_scratch
        row, task_rows = from_kept
        expected_row = {
            "case_id": scratch.case_id,
            "case_number": scratch.case_number,
            "case_kind": "application",
            "station": "xuefeng_station",
            "authority": scratch.authority,
            "forward_to": scratch.forward_to,
            "item_code": scratch.item_code,
            "item_version": scratch.item_version,
            "workflow": workflow.name,
            "workflow_version": workflow.version,
            "status": scratch.status,
            "version": scratch.version,
            "applicant_name": "王秀英",
            "warning": scratch.warning_level(),
            "summary": summary(scratch),
        }
        assert {k: row[k] for k in expected_row} == expected_row
        assert row["opened_at"] is not None and row["updated_at"] is not None
        expected_tasks = {
            (t.kind, t.role, t.org, t.claimed_by, scratch.status, scratch.warning_level())
            for t in scratch.tasks(workflow)
        }
        assert task_rows == expected_tasks
        assert len(task_rows) == len(scratch.tasks(workflow))  # no kind twice

    async def project(
        self, kept: CaseState, scratch: CaseState, workflow: Workflow
    ) -> tuple[tuple[dict[str, Any], set[tuple[Any, ...]]], ...]:
        results = []
        for state in (kept, scratch):
            async with self.service.log.writer.begin() as conn:
                await write_rows(conn, state, workflow)
                results.append(await self.read_rows(conn))
        return tuple(results)

    async def read_rows(self, conn: AsyncConnection) -> tuple[dict[str, Any], set[tuple[Any, ...]]]:
        row = (
            (await conn.execute(sa.select(case_index).where(case_index.c.case_id == self.case_id)))
            .mappings()
            .one()
        )
        found = await conn.execute(
            sa.select(
                tasks.c.kind,
                tasks.c.role,
                tasks.c.org,
                tasks.c.claimed_by,
                tasks.c.status,
                tasks.c.warning,
            ).where(tasks.c.case_id == self.case_id)
        )
        return dict(row), {tuple(r) for r in found}


@pytest.fixture
def seeded_sqlite(tmp_path: Path) -> str:
    """A migrated SQLite log with the seed delegations published."""
    url = fresh_sqlite_db(tmp_path)

    async def seed() -> None:
        db = create_engine(url)
        try:
            await publish_seed(EventLog(db))
        finally:
            await db.dispose()

    asyncio.run(seed())
    return url


def test_random_command_sequences_stay_in_the_table_and_in_the_read_model(
    seeded_sqlite: str,
) -> None:
    REACHED.clear()
    MOVED.clear()

    class OnTheSeededLog(WorkflowMachine):
        def __init__(self) -> None:
            super().__init__(seeded_sqlite)

    run_state_machine_as_test(
        OnTheSeededLog,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            # The same examples every run: the assertion below on how far they got must
            # not depend on luck (a random run once missed "forwarded").
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    # the examples got far: every lifecycle stage, both workflows' decisions, the side steps
    assert {
        "received",
        "correction_requested",
        "accepted",
        "in_review",
        "reviewed",
        "forwarded",
        "approved",
        "delivered",
        "closed",
    } <= REACHED, REACHED
    assert {"accept", "start_review", "complete_review", "forward", "deliver", "claim"} <= MOVED, (
        MOVED
    )
