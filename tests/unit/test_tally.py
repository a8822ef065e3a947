"""What each event adds to the station statistics (issue 17's figures), on hand-built
events: people helped by an assistance matter, police cases solved, acts entered later from
paper records, decisions entered without their moment, and visitors as people."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.tally import RECEPTION, VISITOR, CaseTally, StatisticsTally, person_key
from shared.domain.workflow.reference import load_reference
from tests.audit_helpers import stored

REFERENCE = load_reference()
TALLY = StatisticsTally(REFERENCE.workflows, REFERENCE.calendar, REFERENCE.catalogue)
NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


def event(
    kind: str,
    version: int,
    event_type: str,
    payload: dict[str, Any],
    occurred: datetime,
    recorded: datetime | None = None,
    case_id: uuid.UUID | None = None,
) -> StoredEvent:
    clerk = Actor(user="li.clerk", role="window_clerk", station="xuefeng_station")
    new = NewEvent(
        event_type=event_type,
        occurred_at=occurred,
        actor=clerk,
        authority="banqiao_town",
        payload=payload,
    )
    case = case_id or uuid.uuid4()
    return stored(
        new, case_id=case, case_kind=kind, version=version, position=version, recorded_at=recorded
    )


Step = tuple[str, dict[str, Any], datetime, datetime | None]


def run(kind: str, steps: Sequence[Step]) -> list[Any]:
    """Fold one case's events; what each adds."""
    case, case_id, added = CaseTally(), uuid.uuid4(), []
    if kind == "application":
        item = REFERENCE.catalogue.get("pension_enrolment")
        workflow = REFERENCE.workflows.published(item.workflow, item.workflow_version)
    else:
        workflow = REFERENCE.workflows.for_kind(kind)
    pinned = {"name": workflow.name, "version": workflow.version}
    for version, (event_type, payload, occurred, recorded) in enumerate(steps, start=1):
        if version == 1:
            payload = {"workflow": pinned, "station": "xuefeng_station", **payload}
        added.append(
            TALLY.step(case, event(kind, version, event_type, payload, occurred, recorded, case_id))
        )
    return added


def test_an_assistance_matter_counts_the_people_it_helped_when_help_is_given() -> None:
    day = NOW - timedelta(days=3)
    counted = run(
        "assistance",
        [
            ("AssistanceRequested", {"person_name": "赵大爷", "people_helped": 3}, day, None),
            ("AssistanceProvided", {"description": "送去取暖物资"}, day, None),
        ],
    )
    assert counted[0][1] == {"received": 1}
    assert counted[1][1] == {"completed_at_station": 1, "people_helped": 3}
    one = run(
        "assistance",
        [
            ("AssistanceRequested", {"person_name": "钱奶奶"}, day, None),
            ("AssistanceProvided", {"description": "代办药品"}, day, None),
        ],
    )
    assert one[1][1]["people_helped"] == 1  # a matter from before the field: one person


def test_police_assistance_counts_a_case_solved_only_when_it_was() -> None:
    day = NOW - timedelta(days=3)
    for solved, expected in ((True, 1), (False, None), (None, None)):
        body = {"description": "协助找回"} | ({} if solved is None else {"case_solved": solved})
        counted = run(
            "police_assistance",
            [
                ("PoliceAssistanceRequested", {"police_unit": "板桥派出所"}, day, None),
                ("PoliceAssistanceProvided", body, day, None),
            ],
        )
        assert counted[1][1].get("cases_solved") == expected, solved


def test_acts_entered_later_are_counted_and_an_undated_decision_after_them_too() -> None:
    handed_in = datetime(2021, 12, 6, 1, 0, tzinfo=UTC)
    item = REFERENCE.catalogue.get("pension_enrolment")
    opened = {"item_code": item.code, "item_version": item.version}
    steps: list[tuple[str, dict[str, Any], datetime, datetime | None]] = [
        ("CaseReceived", opened, handed_in, NOW),
        ("CaseAccepted", {"committed_limit_days": 1, "legal_limit_days": 20}, handed_in, NOW),
        ("ReviewStarted", {}, handed_in + timedelta(hours=1), NOW),
        ("ReviewCompleted", {"recommendation": "approve"}, handed_in + timedelta(hours=2), NOW),
    ]
    dated = run("application", [*steps, ("CaseApproved", {}, handed_in + timedelta(days=1), NOW)])
    assert [c[1].get("backfilled") for c in dated] == [1, 1, 1, 1, 1]  # the reviews too
    assert dated[-1][1]["on_time_committed"] == 1 and "undated_decisions" not in dated[-1][1]
    undated = run("application", [*steps, ("CaseApproved", {}, NOW, NOW)])
    assert undated[-1][1]["undated_decisions"] == 1
    assert undated[-1][1]["on_time_committed"] == 0 and "backfilled" not in undated[-1][1]
    # Decided live days after its paper file was entered: a decision of its own time.
    later = NOW + timedelta(days=3)
    live_after = run("application", [*steps, ("CaseApproved", {}, later, later)])
    assert "undated_decisions" not in live_after[-1][1]
    live = run(
        "application",
        [(t, p, NOW - timedelta(minutes=5), NOW) for t, p, _, _ in steps]
        + [("CaseApproved", {}, NOW, NOW)],
    )
    assert not any("backfilled" in c[1] or "undated_decisions" in c[1] for c in live if c)


def test_a_visit_counts_once_under_its_purpose_and_once_under_the_person() -> None:
    payload = {"visitor_name": "薛 老汉", "purpose": "enquiry", "station": "xuefeng_station"}
    counted = TALLY.visit(event(RECEPTION, 1, "VisitorReceived", payload, NOW))
    (purpose_key, purpose), (person, visits) = counted
    assert purpose_key[2:] == (RECEPTION, "enquiry") and purpose == {"received": 1}
    assert person[2] == VISITOR and visits == {"received": 1}
    assert person[3] == person_key({"visitor_name": "薛老汉"})  # spaces typed don't matter
    assert person_key({"visitor_name": "薛老汉", "village": "gongyu"}) != person[3]
    by_id = person_key({"visitor_name": "薛老汉", "id_number": "11010519491231002x"})
    assert by_id == person_key({"visitor_name": "薛老汉（父）", "id_number": "11010519491231002X"})
    assert "11010519491231002X" not in by_id and len(by_id) == 32
    late = TALLY.visit(
        event(RECEPTION, 1, "VisitorReceived", payload, NOW - timedelta(days=9), NOW)
    )
    assert late[0][1] == {"received": 1, "backfilled": 1}
