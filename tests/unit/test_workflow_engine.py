"""The workflow engine, pure: definitions, the transition table, plan(), decide(), the fold.

Cases are built the way the service builds them — plan, decide, store, fold — with the
real working calendar (2026 Spring Festival: 15-23 Feb off, Saturdays 14 and 28 Feb worked).
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.domain.events import NewEvent, StoredEvent
from shared.domain.workcalendar import CHINA_TZ, load_calendar
from shared.domain.workflow import engine
from shared.domain.workflow.definitions import (
    DATA_DIR,
    UnknownWorkflow,
    Workflow,
    WorkflowError,
    load_workflows,
)
from shared.domain.workflow.engine import Authority, Context, NotAllowed, Refusal, Staff, Step
from shared.domain.workflow.payloads import (
    APPEAL_NOTICE_EN,
    APPEAL_NOTICE_ZH,
    ActionBody,
    body_for,
)
from shared.domain.workflow.state import CaseState, IllegalTransition, Task, fold

CAL = load_calendar()
WORKFLOWS = load_workflows()
STATION = WORKFLOWS.get("station_item", 1)
FORWARDED = WORKFLOWS.get("forwarded_item", 1)

CLERK = Staff("li.clerk", "window_clerk", "xuefeng_station")
REVIEWER = Staff("wang.reviewer", "reviewer", "xuefeng_station")
HEAD = Staff("zhao.head", "station_head", "xuefeng_station")
HEAD_REOPEN = Staff("zhao.head", "station_head", "xuefeng_station", frozenset({"reopen"}))
FORESTRY = Staff("liu.forestry", "department_officer", "hc_forestry")
ACTING = Authority("hc_hrss", "hrss-xuefeng-2021", 1)


@dataclasses.dataclass(frozen=True)
class Material:
    code: str
    name_zh: str
    name_en: str


@dataclasses.dataclass(frozen=True)
class Item:
    code: str = "pension_enrolment"
    version: int = 1
    authority: str = "hc_hrss"
    committed_limit_days: int = 5
    legal_limit_days: int = 20
    forward_to: str | None = None
    materials: tuple[Material, ...] = (
        Material("id_card", "居民身份证", "resident identity card"),
        Material("household_register", "户口簿", "household register"),
        Material("application_form", "申请表", "application form"),
    )


ITEM = Item()
LOGGING = Item(
    code="logging_permit", authority="hc_forestry", forward_to="hc_forestry", legal_limit_days=20
)
ALL = ("id_card", "household_register", "application_form")


def cst(day: date, hour: int = 10) -> datetime:
    """A moment at the station on ``day``."""
    return datetime.combine(day, time(hour), tzinfo=CHINA_TZ)


D = date
RECEIVED = cst(D(2026, 2, 12), 9)  # Thursday before the Spring Festival


class History:
    """A case's events, built through the engine and folded after each one."""

    def __init__(
        self,
        workflow: Workflow = STATION,
        item: Item = ITEM,
        materials: tuple[str, ...] = ALL,
        received: datetime = RECEIVED,
    ) -> None:
        self.workflow = workflow
        self.item = item
        self.case_id = uuid.uuid4()
        self.events: list[StoredEvent] = []
        self.record(
            NewEvent(
                event_type="CaseReceived",
                occurred_at=received,
                actor=CLERK.actor(),
                authority="hc_hrss",
                payload={
                    "item_code": item.code,
                    "item_version": item.version,
                    "case_number": "XF-2026-000001",
                    "station": "xuefeng_station",
                    "materials": list(materials),
                    "workflow": {"name": workflow.name, "version": workflow.version},
                },
            )
        )

    @property
    def state(self) -> CaseState:
        return fold(self.events, WORKFLOWS)

    def record(self, event: NewEvent) -> CaseState:
        """Store ``event`` as the log would and fold the case again."""
        at = event.occurred_at or RECEIVED
        self.events.append(
            StoredEvent(
                position=len(self.events) + 1,
                event_id=event.event_id,
                case_id=self.case_id,
                case_kind="application",
                version=len(self.events) + 1,
                event_type=event.event_type,
                schema_version=1,
                occurred_at=at,
                recorded_at=at,
                actor_user=event.actor.user,
                actor_role=event.actor.role,
                actor_station=event.actor.station,
                authority=event.authority,
                delegation_id=event.delegation_id,
                delegation_version=event.delegation_version,
                correlation_id=None,
                causation_id=None,
                payload=event.payload,
                prev_hash=None,
                hash="",
            )
        )
        return self.state

    def fact(self, event_type: str, at: datetime, **payload: Any) -> CaseState:
        """A system fact (warning, overdue forwarding) the timers record."""
        return self.record(NewEvent(event_type=event_type, occurred_at=at, payload=payload))

    def decide(self, action: str, staff: Staff, at: datetime, **body: Any) -> list[NewEvent]:
        """What the engine would record for ``action`` now (nothing is stored)."""
        state = self.state
        step = engine.plan(state, self.workflow, action, staff)
        assert isinstance(step, Step), step
        parsed = body_for(action).model_validate(body)
        ctx = Context(at=at, calendar=CAL, item=self.item)
        return engine.decide(state, self.workflow, step, parsed, staff, ACTING, ctx)

    def act(self, action: str, staff: Staff, at: datetime, **body: Any) -> CaseState:
        """Take ``action`` and store its events."""
        for event in self.decide(action, staff, at, **body):
            self.record(event)
        return self.state


def decide_on(
    state: CaseState,
    action: str,
    staff: Staff,
    body: ActionBody,
    *,
    workflow: Workflow = STATION,
    at: datetime = RECEIVED,
    item: Item = ITEM,
) -> list[NewEvent]:
    step = engine.plan(state, workflow, action, staff)
    assert isinstance(step, Step), step
    return engine.decide(
        state, workflow, step, body, staff, ACTING, Context(at=at, calendar=CAL, item=item)
    )


# -- definitions ---------------------------------------------------------------------------


def test_packaged_workflows_load_with_v2_of_station_item_a_draft() -> None:
    keys = {(w.name, w.version, w.status) for w in WORKFLOWS}
    assert {
        ("station_item", 1, "published"),
        ("station_item", 2, "draft"),
        ("forwarded_item", 1, "published"),
        ("mediation", 1, "published"),
        ("legal_publicity", 1, "published"),
        ("assistance", 1, "published"),
        ("police_assistance", 1, "published"),
    } <= keys
    assert WORKFLOWS.latest("station_item").version == 1
    assert WORKFLOWS.get("station_item", 2).step("reviewed", "sign_off") is not None
    with pytest.raises(UnknownWorkflow, match="draft"):
        WORKFLOWS.published("station_item", 2)
    with pytest.raises(UnknownWorkflow, match="no workflow station_item version 9"):
        WORKFLOWS.get("station_item", 9)
    assert WORKFLOWS.for_kind("mediation").name == "mediation"
    with pytest.raises(UnknownWorkflow):
        WORKFLOWS.for_kind("application")  # two workflows: the item says which


def _station_item_data() -> dict[str, Any]:
    data = yaml.safe_load((DATA_DIR / "workflows" / "station_item.v1.yaml").read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def _with_transition(**changes: Any) -> dict[str, Any]:
    data = _station_item_data()
    data["transitions"].append(
        {
            "action": "teleport",
            "from": ["received"],
            "event": "CaseTeleported",
            "to": "closed",
            "roles": ["window_clerk"],
            **changes,
        }
    )
    return data


BAD_DEFINITIONS: dict[str, tuple[str, Any, str]] = {
    "yaml_syntax": ("broken.v1.yaml", "name: [station_item\nversion: 1\n", "broken.v1.yaml"),
    "unknown_status": (
        "station_item.v1.yaml",
        _with_transition(**{"from": ["nowhere"]}),
        "status 'nowhere' is never reached",
    ),
    "action_twice_from_one_status": (
        "station_item.v1.yaml",
        _with_transition(action="accept", event="CaseAccepted", to="accepted"),
        "action 'accept' is defined twice from 'received'",
    ),
    "event_to_two_statuses": (
        "station_item.v1.yaml",
        _with_transition(event="CaseAccepted", to="closed"),
        "CaseAccepted from 'received' leads to two statuses",
    ),
    "no_roles": ("station_item.v1.yaml", _with_transition(roles=[]), "roles"),
    "unknown_power": ("station_item.v1.yaml", _with_transition(power="rule"), "power"),
    "unknown_field": ("station_item.v1.yaml", _with_transition(colour="red"), "colour"),
    "empty_from": ("station_item.v1.yaml", _with_transition(**{"from": []}), "teleport"),
    "task_for_unknown_status": (
        "station_item.v1.yaml",
        {**_station_item_data(), "tasks": {"limbo": {"kind": "x", "role": "reviewer"}}},
        "task for unknown status 'limbo'",
    ),
    "misnamed_file": (
        "other_item.v1.yaml",
        _station_item_data(),
        "must be named station_item.v1.yaml",
    ),
}


@pytest.mark.parametrize("fault", sorted(BAD_DEFINITIONS))
def test_a_bad_definition_stops_loading_naming_its_file(fault: str, tmp_path: Path) -> None:
    shutil.copytree(DATA_DIR / "workflows", tmp_path / "workflows")
    assert load_workflows(tmp_path).get("station_item", 1) == STATION  # the copy is sound
    name, content, message = BAD_DEFINITIONS[fault]
    text = content if isinstance(content, str) else yaml.safe_dump(content, allow_unicode=True)
    (tmp_path / "workflows" / name).write_text(text, "utf-8")
    with pytest.raises(WorkflowError) as err:
        load_workflows(tmp_path)
    assert str(err.value).startswith(f"{name}: ")
    assert message in str(err.value)


def test_a_folder_without_definitions_is_refused(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    with pytest.raises(WorkflowError, match="no workflow definitions"):
        load_workflows(tmp_path)


def test_the_transition_table_maps_status_and_event_to_the_next_status() -> None:
    table = STATION.table
    assert table[("", "CaseReceived")] == "received"
    assert table[("received", "CaseAccepted")] == "accepted"
    assert table[("corrected", "CaseAccepted")] == "accepted"
    assert table[("received", "CorrectionRequested")] == "correction_requested"
    assert table[("suspended", "CaseResumed")] == "in_review"
    assert table[("in_review", "DeadlineExtended")] == "in_review"  # no 'to': stays
    assert table[("closed", "SatisfactionRated")] == "closed"
    assert table[("closed", "CaseReopened")] == "in_review"
    assert ("received", "CaseApproved") not in table
    assert ("correction_requested", "CorrectionRequested") not in table  # one notice only
    assert ("withdrawn", "CaseWithdrawn") not in table
    assert ("reviewed", "CaseForwarded") not in table
    assert FORWARDED.table[("reviewed", "CaseForwarded")] == "forwarded"
    assert FORWARDED.table[("forwarded", "CaseApproved")] == "approved"
    assert ("reviewed", "CaseApproved") not in FORWARDED.table  # the department decides
    assert STATION.statuses >= {"received", "accepted", "closed", "withdrawn", "not_accepted"}
    assert "TaskClaimed" not in STATION.event_types  # facts about the case, not moves
    assert STATION.open_actions("received") == [
        "accept",
        "deem_accepted",
        "request_correction",
        "refuse",
        "withdraw",
    ]
    assert STATION.open_actions("withdrawn") == []


@pytest.mark.parametrize("workflow", [STATION, FORWARDED], ids=lambda w: w.name)
def test_every_step_of_the_table_is_what_plan_and_decide_record(workflow: Workflow) -> None:
    for step in workflow.transitions:
        for status in step.from_:
            assert workflow.table[(status, step.event)] == step.target(status)
            assert workflow.step(status, step.action) == step


# -- plan ---------------------------------------------------------------------------------


def test_plan_refuses_a_wrong_role_naming_who_may() -> None:
    refusal = engine.plan(CaseState(status="received"), STATION, "accept", REVIEWER)
    assert refusal == Refusal(
        "wrong_role", "accept must be done by: window_clerk, station_head (not reviewer)"
    )
    assert isinstance(engine.plan(CaseState(status="reviewed"), STATION, "approve", CLERK), Refusal)
    forwarded = CaseState(status="forwarded", forward_to="hc_forestry")
    assert isinstance(engine.plan(forwarded, FORWARDED, "approve", HEAD), Refusal)
    step = engine.plan(forwarded, FORWARDED, "approve", FORESTRY)
    assert step == Step("approve", "CaseApproved", "decide", FORWARDED.step("forwarded", "approve"))


def test_only_the_authority_the_case_was_forwarded_to_decides_or_extends_it() -> None:
    elsewhere = CaseState(status="forwarded", forward_to="banqiao_town")
    refusal = engine.plan(elsewhere, FORWARDED, "approve", FORESTRY)
    assert isinstance(refusal, Refusal) and refusal.reason == "not_forwarded_to_authority"
    assert "banqiao_town" in refusal.message
    in_review = CaseState(status="in_review")
    refusal = engine.plan(in_review, FORWARDED, "extend", FORESTRY)
    assert isinstance(refusal, Refusal) and refusal.reason == "not_forwarded_to_authority"
    assert isinstance(engine.plan(in_review, FORWARDED, "extend", HEAD), Step)
    # Reopened after the department's decision: forward_to stays, the wait for it does not.
    reopened = CaseState(status="in_review", forward_to="hc_forestry")
    refusal = engine.plan(reopened, FORWARDED, "extend", FORESTRY)
    assert isinstance(refusal, Refusal) and refusal.reason == "not_forwarded_to_authority"
    forwarded = CaseState(status="forwarded", forward_to="hc_forestry")
    assert isinstance(engine.plan(forwarded, FORWARDED, "extend", FORESTRY), Step)


def test_only_the_system_deems_a_case_accepted() -> None:
    received = CaseState(status="received")
    assert isinstance(engine.plan(received, STATION, "deem_accepted", HEAD), Refusal)
    step = engine.plan(received, STATION, "deem_accepted", engine.SYSTEM)
    assert isinstance(step, Step) and step.event == "CaseDeemedAccepted" and step.power is None


def test_plan_refuses_reopening_without_the_special_permission() -> None:
    closed = CaseState(status="closed")
    assert engine.plan(closed, STATION, "reopen", HEAD) == Refusal(
        "missing_permission", "reopen needs the special permission 'reopen'"
    )
    step = engine.plan(closed, STATION, "reopen", HEAD_REOPEN)
    assert isinstance(step, Step) and step.event == "CaseReopened"


def test_plan_raises_not_allowed_for_an_action_the_status_does_not_offer() -> None:
    with pytest.raises(NotAllowed) as err:
        engine.plan(CaseState(status="received"), STATION, "approve", HEAD)
    assert str(err.value) == (
        "approve is not possible while the case is received "
        "(actions now: accept, deem_accepted, request_correction, refuse, withdraw)"
    )
    with pytest.raises(NotAllowed, match="actions now: none"):
        engine.plan(CaseState(status="withdrawn"), STATION, "withdraw", CLERK)
    with pytest.raises(NotAllowed, match="station_item v1 has no action 'sign_off'"):
        engine.plan(CaseState(status="reviewed"), STATION, "sign_off", HEAD)
    with pytest.raises(NotAllowed, match="has no action 'forward'"):
        engine.plan(CaseState(status="reviewed"), STATION, "forward", REVIEWER)
    # the role check comes after the status check: 409 before 403
    with pytest.raises(NotAllowed):
        engine.plan(CaseState(status="received"), STATION, "approve", REVIEWER)


def test_task_actions_are_open_in_every_status_but_only_the_head_calls_back() -> None:
    for status in ("received", "closed", "withdrawn"):
        state = CaseState(status=status)
        claim = engine.plan(state, STATION, "claim", CLERK)
        assert claim == Step("claim", "TaskClaimed", None, None)
        assert engine.plan(state, STATION, "release", CLERK) == Step(
            "release", "TaskReleased", None, None
        )
    refused = engine.plan(CaseState(status="delivered"), STATION, "complete_callback", CLERK)
    assert isinstance(refused, Refusal) and refused.reason == "wrong_role"
    assert isinstance(
        engine.plan(CaseState(status="delivered"), STATION, "complete_callback", HEAD), Step
    )


def test_a_refused_attempt_is_recorded_with_the_status_it_was_tried_in() -> None:
    refusal = Refusal("wrong_role", "nope")
    event = engine.refusal_event(
        CaseState(status="reviewed"), "approve", refusal, CLERK, Context(at=RECEIVED, calendar=CAL)
    )
    assert event.event_type == "ActionRefused"
    assert event.payload == {
        "action": "approve",
        "reason": "wrong_role",
        "message": "nope",
        "status": "reviewed",
    }
    assert event.actor.user == "li.clerk"


# -- decide -------------------------------------------------------------------------------


def test_acceptance_receipt_dates_committed_and_legal_deadlines_by_the_working_calendar() -> None:
    case = History()
    [event] = case.decide("accept", CLERK, cst(D(2026, 2, 12), 15))
    assert event.event_type == "CaseAccepted"
    assert (event.authority, event.delegation_id, event.delegation_version) == (
        "hc_hrss",
        "hrss-xuefeng-2021",
        1,
    )
    assert event.payload == {
        "status_before": "received",
        "status_after": "accepted",
        "case_number": "XF-2026-000001",
        "item_code": "pension_enrolment",
        "accepted_on": "2026-02-12",
        # 13, 14 (Saturday worked), 24, 25, 26 Feb: the Spring Festival week doesn't count
        "committed_deadline": "2026-02-26",
        # … 27, 28 (Saturday worked) Feb, then 2-6, 9-13, 16-18 Mar
        "legal_deadline": "2026-03-18",
        "committed_limit_days": 5,
        "legal_limit_days": 20,
    }


def test_acceptance_uses_the_date_at_the_station_not_in_utc() -> None:
    late_evening_utc = datetime(2026, 2, 12, 17, 30, tzinfo=UTC)  # 01:30 on 13 Feb in China
    [event] = History().decide("accept", CLERK, late_evening_utc)
    assert event.payload["accepted_on"] == "2026-02-13"
    assert event.payload["committed_deadline"] == "2026-02-27"


def test_acceptance_with_materials_missing_is_refused_as_invalid() -> None:
    case = History(materials=("id_card",))
    with pytest.raises(engine.Invalid, match="户口簿、申请表"):
        case.decide("accept", CLERK, RECEIVED)


def test_one_correction_notice_lists_missing_and_defective_materials_with_a_deadline() -> None:
    case = History(materials=("id_card", "household_register"))
    at = cst(D(2026, 2, 13))
    [event] = case.decide(
        "request_correction",
        CLERK,
        at,
        defective=[{"code": "id_card", "reason": "身份证已过期"}],
    )
    assert event.event_type == "CorrectionRequested"
    assert event.payload == {
        "status_before": "received",
        "status_after": "correction_requested",
        "case_number": "XF-2026-000001",
        "item_code": "pension_enrolment",
        "missing": [
            {
                "code": "application_form",
                "name_zh": "申请表",
                "name_en": "application form",
                "problem": "missing",
            },
            {
                "code": "id_card",
                "name_zh": "居民身份证",
                "name_en": "resident identity card",
                "problem": "defective",
                "reason": "身份证已过期",
            },
        ],
        # 20 working days after Friday 13 Feb, the festival week left out
        "deadline": "2026-03-19",
    }
    state = case.record(event)
    assert state.status == "correction_requested"
    assert state.correction_requested
    assert state.missing == ("application_form", "id_card")
    assert state.correction_deadline == D(2026, 3, 19)
    assert not state.clock.started_on  # the clock starts at acceptance


def test_a_correction_notice_needs_something_missing_or_defective() -> None:
    case = History()
    with pytest.raises(engine.Invalid, match="nothing is missing"):
        case.decide("request_correction", CLERK, RECEIVED)
    with pytest.raises(engine.Invalid, match="'photo' is not a material of pension_enrolment"):
        case.decide(
            "request_correction", CLERK, RECEIVED, defective=[{"code": "photo", "reason": "模糊"}]
        )


def test_a_second_correction_notice_is_refused() -> None:
    case = History(materials=("id_card",))
    case.act("request_correction", CLERK, RECEIVED)
    with pytest.raises(NotAllowed):  # the table has no second notice…
        case.decide("request_correction", CLERK, RECEIVED)
    state = case.act(
        "submit_correction",
        CLERK,
        cst(D(2026, 2, 24)),
        materials=["household_register", "application_form"],
    )
    assert state.status == "corrected"
    with pytest.raises(NotAllowed, match="request_correction is not possible while"):
        case.decide("request_correction", CLERK, RECEIVED)
    # …and the engine refuses it even from a status that would allow one
    again = dataclasses.replace(case.state, status="received")
    with pytest.raises(NotAllowed, match="already sent"):
        decide_on(again, "request_correction", CLERK, body_for("request_correction")())


def test_a_correction_must_bring_everything_the_notice_listed() -> None:
    case = History(materials=("id_card",))
    case.act("request_correction", CLERK, RECEIVED)
    with pytest.raises(engine.Invalid, match="also listed: application_form"):
        case.decide("submit_correction", CLERK, RECEIVED, materials=["household_register"])
    state = case.act(
        "submit_correction",
        CLERK,
        cst(D(2026, 2, 24)),
        materials=["household_register", "application_form"],
    )
    assert (state.status, state.missing, state.materials) == ("corrected", (), tuple(sorted(ALL)))
    state = case.act("accept", CLERK, cst(D(2026, 2, 24)))
    assert (state.status, state.accepted_on, state.clock.started_on) == (
        "accepted",
        D(2026, 2, 24),
        D(2026, 2, 24),
    )


def test_the_deadline_is_extended_once_by_ten_working_days() -> None:
    case = History()
    case.act("accept", CLERK, RECEIVED)
    case.act("start_review", REVIEWER, RECEIVED)
    [event] = case.decide("extend", HEAD, cst(D(2026, 2, 24)), reason="需实地核查")
    assert event.event_type == "DeadlineExtended"
    assert event.payload == {
        "reason": "需实地核查",
        "status_before": "in_review",
        "status_after": "in_review",
        "days": 10,
        "approved_by": "zhao.head",
    }
    state = case.record(event)
    assert (state.status, state.extended, state.clock.extension_days) == ("in_review", True, 10)
    with pytest.raises(NotAllowed, match="already extended once"):
        case.decide("extend", HEAD, cst(D(2026, 2, 25)), reason="再次延期")
    assert isinstance(engine.plan(case.state, STATION, "extend", REVIEWER), Refusal)


def test_deemed_acceptance_is_dated_from_the_day_of_receipt() -> None:
    received_utc = datetime(2026, 2, 11, 20, 0, tzinfo=UTC)  # 04:00 on 12 Feb in China
    case = History(received=received_utc)
    [event] = case.decide("deem_accepted", engine.SYSTEM, cst(D(2026, 2, 27), 0))
    assert event.payload["deemed"] is True
    assert "§32" in event.payload["reason"]
    assert event.payload["accepted_on"] == "2026-02-12"
    assert event.payload["committed_deadline"] == "2026-02-26"
    assert event.payload["legal_deadline"] == "2026-03-18"
    state = case.record(event)
    assert (state.status, state.accepted_on, state.clock.started_on) == (
        "accepted",
        D(2026, 2, 12),
        D(2026, 2, 12),
    )


def test_refusal_and_decisions_carry_the_notice_of_appeal_rights() -> None:
    [refused] = History().decide("refuse", CLERK, RECEIVED, reason="不属于本站受理范围")
    assert refused.event_type == "CaseNotAccepted"
    assert refused.payload["appeal_notice_zh"] == APPEAL_NOTICE_ZH
    assert refused.payload["appeal_notice_en"] == APPEAL_NOTICE_EN
    assert refused.payload["decided_on"] == "2026-02-12"
    case = History()
    case.act("accept", CLERK, RECEIVED)
    case.act("start_review", REVIEWER, RECEIVED)
    case.act("complete_review", REVIEWER, RECEIVED, recommendation="reject", opinion="不符合条件")
    [rejected] = case.decide("reject", HEAD, cst(D(2026, 2, 13)), reasons=["年龄不符"])
    assert rejected.payload["reasons"] == ["年龄不符"]
    assert rejected.payload["appeal_notice_zh"] == APPEAL_NOTICE_ZH
    assert case.record(rejected).outcome == "rejected"


def test_forwarding_names_the_authority_and_its_own_deadline() -> None:
    case = History(FORWARDED, LOGGING)
    case.act("accept", CLERK, RECEIVED)
    case.act("start_review", REVIEWER, RECEIVED)
    case.act("complete_review", REVIEWER, RECEIVED, recommendation="approve", opinion="材料齐全")
    [event] = case.decide("forward", REVIEWER, cst(D(2026, 2, 13)))
    assert event.payload["to"] == "hc_forestry"
    assert event.payload["deadline"] == "2026-03-19"  # 20 working days (§43)
    with pytest.raises(engine.Invalid, match="completed at the station"):
        decide_on(
            case.state,
            "forward",
            REVIEWER,
            body_for("forward")(),
            workflow=FORWARDED,
            item=ITEM,
        )


def _delivered(workflow: Workflow = STATION) -> History:
    case = History()
    case.act("accept", CLERK, RECEIVED)
    case.act("start_review", REVIEWER, RECEIVED)
    case.act("complete_review", REVIEWER, RECEIVED, recommendation="approve", opinion="符合条件")
    case.act("approve", HEAD, cst(D(2026, 2, 13)))
    case.act("deliver", CLERK, cst(D(2026, 2, 14)), method="in_person")
    return case


def test_a_case_is_rated_once() -> None:
    case = _delivered()
    case.act("rate", CLERK, cst(D(2026, 2, 14)), score=4)
    case.act("close", CLERK, cst(D(2026, 2, 14)))
    with pytest.raises(NotAllowed, match="already rated"):
        case.decide("rate", CLERK, cst(D(2026, 2, 24)), score=5)


def test_claims_and_releases_of_the_open_task() -> None:
    case = History()
    case.act("accept", CLERK, RECEIVED)
    with pytest.raises(NotAllowed, match="no open task on this case for a window_clerk"):
        case.decide("claim", CLERK, RECEIVED)
    with pytest.raises(NotAllowed, match="no open task"):
        case.decide("claim", REVIEWER, RECEIVED, task="decide")
    [claimed] = case.decide("claim", REVIEWER, RECEIVED)
    assert (claimed.event_type, claimed.payload) == (
        "TaskClaimed",
        {"task": "review", "user": "wang.reviewer"},
    )
    state = case.record(claimed)
    assert state.tasks(STATION) == [Task("review", "reviewer", "xuefeng_station", "wang.reviewer")]
    other = Staff("sun.reviewer", "reviewer", "xuefeng_station")
    with pytest.raises(NotAllowed, match=r"already claimed by wang\.reviewer"):
        case.decide("claim", other, RECEIVED)
    with pytest.raises(NotAllowed, match="only they or the head"):
        case.decide("release", other, RECEIVED)
    step = engine.plan(state, STATION, "start_review", other)
    assert isinstance(step, Step)
    assert engine.claimed_by_other(state, STATION, step, other) == "wang.reviewer"
    assert engine.claimed_by_other(state, STATION, step, REVIEWER) is None
    [released] = case.decide("release", REVIEWER, RECEIVED, task="review")
    assert released.payload == {"task": "review", "user": "wang.reviewer"}
    state = case.record(released)
    assert state.tasks(STATION)[0].claimed_by is None
    with pytest.raises(NotAllowed, match="not claimed"):
        case.decide("release", REVIEWER, RECEIVED)


def test_the_head_releases_a_task_someone_else_claimed() -> None:
    case = History()
    case.act("accept", CLERK, RECEIVED)
    case.act("claim", REVIEWER, RECEIVED)
    with pytest.raises(NotAllowed, match="no open task on this case for a window_clerk"):
        case.decide("release", CLERK, RECEIVED, task="review")  # not the clerk's task
    [released] = case.decide("release", HEAD, RECEIVED, task="review")
    assert released.payload == {"task": "review", "user": "wang.reviewer"}
    assert case.record(released).tasks(STATION)[0].claimed_by is None
    with pytest.raises(NotAllowed, match="no open task on this case for a station_head"):
        case.decide("claim", HEAD, RECEIVED, task="review")  # releasing is not working it
    case = _delivered()
    case.act("rate", CLERK, cst(D(2026, 2, 14)), score=1)
    other_head = Staff("qian.head", "station_head", "xuefeng_station")
    case.act("claim", HEAD, cst(D(2026, 2, 24)), task="call_back")
    [released] = case.decide("release", other_head, cst(D(2026, 2, 24)), task="call_back")
    assert released.payload == {"task": "call_back", "user": "zhao.head"}


# -- fold ---------------------------------------------------------------------------------


def test_the_clock_starts_pauses_resumes_and_is_extended_in_epochs() -> None:
    case = History()
    state = case.act("accept", CLERK, RECEIVED)
    assert (state.clock.started_on, state.clock.epoch, state.clock.running) == (
        D(2026, 2, 12),
        2,
        True,
    )
    case.act("start_review", REVIEWER, RECEIVED)
    state = case.fact("ClockWarningRaised", cst(D(2026, 2, 25)), level="yellow", epoch=2)
    assert state.warning_level() == "yellow"
    assert Task("escalation", "station_head", "xuefeng_station") in state.tasks(STATION)
    state = case.act(
        "suspend", REVIEWER, cst(D(2026, 2, 25)), kind="expert_review", reason="专家评审"
    )
    assert state.status == "suspended"
    assert state.clock.paused and not state.clock.running
    assert state.clock.pauses == ((D(2026, 2, 25), None),)
    assert state.clock.epoch == 2
    assert [t.kind for t in state.tasks(STATION)] == ["review"]  # no escalation while paused
    state = case.act("resume", REVIEWER, cst(D(2026, 3, 2)))
    assert state.status == "in_review"
    assert state.clock.pauses == ((D(2026, 2, 25), D(2026, 3, 2)),)
    assert (state.clock.running, state.clock.epoch) == (True, 6)
    assert state.warning_level() == "yellow"  # a pause moves the deadline, not the days used
    assert "yellow@6" in state.warnings
    state = case.act("extend", HEAD, cst(D(2026, 3, 3)), reason="情况复杂")
    assert (state.clock.extension_days, state.clock.epoch) == (10, 7)
    assert state.warning_level() is None  # the extension moved the limit
    case.act(
        "complete_review", REVIEWER, cst(D(2026, 3, 4)), recommendation="approve", opinion="可以"
    )
    state = case.act("approve", HEAD, cst(D(2026, 3, 10)))
    assert state.clock.stopped_on == D(2026, 3, 10)
    assert not state.clock.running
    # suspending again is a new pause; resuming a clock that isn't paused changes nothing
    assert state.clock.resume(D(2026, 3, 11), 99) == state.clock


def test_reopening_starts_a_new_clock() -> None:
    case = _delivered()
    case.act("close", CLERK, cst(D(2026, 2, 24)))
    state = case.act("reopen", HEAD_REOPEN, cst(D(2026, 3, 2)), reason="复核发现错误")
    assert (state.status, state.outcome) == ("in_review", None)
    assert (state.clock.started_on, state.clock.stopped_on, state.clock.running) == (
        D(2026, 3, 2),
        None,
        True,
    )
    assert state.clock.epoch == state.version


STATION_TASKS = {
    "received": [],
    "accepted": [Task("review", "reviewer", "xuefeng_station")],
    "in_review": [Task("review", "reviewer", "xuefeng_station")],
    "reviewed": [Task("decide", "station_head", "xuefeng_station")],
    "approved": [Task("deliver", "window_clerk", "xuefeng_station")],
    "delivered": [],
    "closed": [],
}


def test_each_status_opens_its_task_at_the_station() -> None:
    case = History()
    seen = {case.state.status: case.state.tasks(STATION)}
    for action, staff, body in [
        ("accept", CLERK, {}),
        ("start_review", REVIEWER, {}),
        ("complete_review", REVIEWER, {"recommendation": "approve", "opinion": "符合"}),
        ("approve", HEAD, {}),
        ("deliver", CLERK, {"method": "post"}),
        ("close", HEAD, {}),
    ]:
        state = case.act(action, staff, RECEIVED, **body)
        seen[state.status] = state.tasks(STATION)
    assert seen == STATION_TASKS


def test_a_forwarded_case_is_the_departments_task_and_overdue_the_heads() -> None:
    case = History(FORWARDED, LOGGING)
    case.act("accept", CLERK, RECEIVED)
    case.act("start_review", REVIEWER, RECEIVED)
    state = case.act(
        "complete_review", REVIEWER, RECEIVED, recommendation="approve", opinion="材料齐全"
    )
    assert state.tasks(FORWARDED) == [Task("forward", "reviewer", "xuefeng_station")]
    state = case.act("forward", REVIEWER, cst(D(2026, 2, 13)))
    assert (state.status, state.forward_to, state.forward_deadline) == (
        "forwarded",
        "hc_forestry",
        D(2026, 3, 19),
    )
    assert state.tasks(FORWARDED) == [Task("answer", "department_officer", "hc_forestry")]
    state = case.act("claim", FORESTRY, cst(D(2026, 2, 24)))
    assert state.tasks(FORWARDED)[0].claimed_by == "liu.forestry"
    state = case.fact("ForwardOverdue", cst(D(2026, 3, 20), 0), to="hc_forestry")
    assert state.status == "forwarded"
    assert state.tasks(FORWARDED) == [
        Task("answer", "department_officer", "hc_forestry", "liu.forestry"),
        Task("chase_department", "station_head", "xuefeng_station"),
    ]
    state = case.act("approve", FORESTRY, cst(D(2026, 3, 23)), decision_number="韩林采〔2026〕7号")
    assert state.tasks(FORWARDED) == [Task("deliver", "window_clerk", "xuefeng_station")]
    assert state.outcome == "approved"


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_a_rating_of_two_or_less_opens_a_call_back_for_the_head(score: int) -> None:
    case = _delivered()
    state = case.act("rate", CLERK, cst(D(2026, 2, 24)), score=score)
    assert state.rating == score
    call_back = Task("call_back", "station_head", "xuefeng_station")
    assert (call_back in state.tasks(STATION)) is (score <= 2)
    state = case.act("close", CLERK, cst(D(2026, 2, 24)))
    assert (call_back in state.tasks(STATION)) is (score <= 2)
    if score <= 2:
        state = case.act("complete_callback", HEAD, cst(D(2026, 2, 25)), notes="已电话回访")
        assert state.tasks(STATION) == []
        assert not state.callback_open
    else:
        with pytest.raises(NotAllowed, match="no call-back"):
            case.decide("complete_callback", HEAD, cst(D(2026, 2, 25)), notes="已电话回访")


def test_a_new_status_opens_its_task_unclaimed() -> None:
    case = History()
    case.act("accept", CLERK, RECEIVED)
    case.act("claim", REVIEWER, RECEIVED)
    state = case.act("start_review", REVIEWER, RECEIVED)
    assert state.claims == {}
    assert state.tasks(STATION) == [Task("review", "reviewer", "xuefeng_station")]


def test_a_claimed_call_back_stays_claimed_when_the_case_is_closed() -> None:
    case = _delivered()
    case.act("rate", CLERK, cst(D(2026, 2, 14)), score=1)
    case.act("claim", HEAD, cst(D(2026, 2, 24)), task="call_back")
    state = case.act("close", CLERK, cst(D(2026, 2, 24)))
    assert state.tasks(STATION) == [
        Task("call_back", "station_head", "xuefeng_station", "zhao.head")
    ]


def test_facts_leave_the_status_alone_and_refusals_are_counted() -> None:
    case = History()
    refusal = engine.refusal_event(
        case.state, "approve", Refusal("wrong_role", "x"), CLERK, Context(at=RECEIVED, calendar=CAL)
    )
    state = case.record(refusal)
    assert (state.status, state.version, state.refusals) == ("received", 2, 1)


@pytest.mark.parametrize(
    ("before", "event_type"),
    [
        ([], "CaseApproved"),
        (["CaseAccepted"], "CaseAccepted"),
        (["CaseAccepted", "ReviewStarted"], "CaseResumed"),
        (["CaseNotAccepted"], "CaseWithdrawn"),
        (["CorrectionRequested"], "CorrectionRequested"),
    ],
)
def test_an_event_the_table_does_not_allow_is_an_illegal_transition(
    before: list[str], event_type: str
) -> None:
    case = History()
    for kind in before:
        case.fact(kind, RECEIVED)
    status = case.state.status
    with pytest.raises(IllegalTransition, match=f"{event_type} is not allowed when the case is"):
        case.fact(event_type, RECEIVED)
    assert status in STATION.statuses


def test_the_first_event_must_be_the_workflows_start() -> None:
    case = History()
    case.events[0] = dataclasses.replace(case.events[0], event_type="CaseAccepted")
    with pytest.raises(IllegalTransition, match="CaseAccepted is not allowed when the case is new"):
        fold(case.events, WORKFLOWS)


def test_a_case_keeps_the_workflow_version_it_pinned() -> None:
    v2 = WORKFLOWS.get("station_item", 2)
    case = History(v2)
    case.act("accept", CLERK, RECEIVED)
    case.act("start_review", REVIEWER, RECEIVED)
    state = case.act(
        "complete_review", REVIEWER, RECEIVED, recommendation="approve", opinion="可以"
    )
    assert state.tasks(v2) == [Task("sign_off", "station_head", "xuefeng_station")]
    with pytest.raises(NotAllowed, match="approve is not possible while the case is reviewed"):
        engine.plan(state, v2, "approve", HEAD)  # v2 needs the sign-off first
    state = case.act("sign_off", HEAD, RECEIVED)
    assert (state.status, state.workflow_version) == ("signed_off", 2)
    assert state.tasks(v2) == [Task("decide", "station_head", "xuefeng_station")]
    assert case.act("approve", HEAD, RECEIVED).status == "approved"


def test_notices_and_readings_of_personal_data_do_not_reset_how_long_a_task_has_waited() -> None:
    case = History()
    received = case.state.updated_at
    later = cst(D(2026, 2, 13), 15)
    viewed = case.fact("PersonalDataViewed", later, reason="核对 checking", fields=["phone"])
    told = case.fact("NotificationSent", later, channel="sms", audience="applicant")
    disclosed = case.fact("PersonalDataDisclosed", later, to="hc_forestry", fields=["phone"])
    assert viewed.updated_at == told.updated_at == disclosed.updated_at == received
    assert disclosed.status == viewed.status
    claimed = case.fact("TaskClaimed", later, task="acceptance", user="li.clerk")
    assert claimed.updated_at == later, "claiming a task is work on the case"
