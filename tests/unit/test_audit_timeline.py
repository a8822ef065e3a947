"""The case timeline and the case as of a moment, without a database: every event with its
delegation checked again at its moment, the status and the clock after it; and the two
senses of "as of" for a paper form entered late."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from shared.domain.audit.judge import Use, register_from, step_of
from shared.domain.audit.timeline import Basis, TimelineError, build_timeline, counted
from shared.domain.delegation import decide_publish, decide_resume, decide_revoke, decide_suspend
from shared.domain.events import Actor
from shared.domain.workflow.reference import Reference, load_reference
from tests.audit_helpers import (
    CLERK,
    HEAD,
    ID_NUMBER,
    OFFICER,
    PHONE,
    REVIEWER,
    CaseScript,
    Stream,
    china,
    instrument,
    received_and_accepted,
)

CODE = "hrss-audit-2026"


@pytest.fixture(scope="module")
def reference() -> Reference:
    return load_reference()


def troubled_delegation() -> Stream:
    """Published in January; suspended on 18 Nov, resumed on 19 Nov, revoked on 25 Nov."""
    stream = Stream(CODE)
    stream.do(lambda s: decide_publish(s, instrument(CODE), actor=OFFICER, at=china(1, 6)))
    stream.do(
        lambda s: decide_suspend(s, CODE, reason="内部审查", actor=OFFICER, at=china(11, 18, 10))
    )
    stream.do(
        lambda s: decide_resume(s, CODE, reason="审查结束", actor=OFFICER, at=china(11, 19, 10))
    )
    stream.do(
        lambda s: decide_revoke(s, CODE, reason="站点撤并", actor=OFFICER, at=china(11, 25, 10))
    )
    return stream


def test_every_event_with_its_delegation_checked_status_and_clock(reference: Reference) -> None:
    stream = troubled_delegation()
    script = received_and_accepted(CaseScript("XF-2026-000501"), china(11, 16), (CODE, 1))
    script.add(
        "ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=(CODE, 1)
    )
    script.add(
        "PersonalDataViewed",
        china(11, 17, 10),
        CLERK,
        authority=None,
        reason="申请人来电 / the applicant called",
        fields=["id_number", "name", "phone"],
    )
    script.add(
        "ReviewCompleted",
        china(11, 18, 11),  # the delegation is suspended since 10:00
        REVIEWER,
        action="complete_review",
        delegation=(CODE, 1),
        recommendation="approve",
    )
    script.add(
        "ActionRefused",
        china(11, 18, 12),
        HEAD,
        authority=None,
        action="approve",
        reason="delegation_suspended",
        message="suspended",
        status="reviewed",
    )
    script.add("CaseApproved", china(11, 20), HEAD, action="approve", delegation=(CODE, 3))
    script.add("CaseDelivered", china(11, 26), CLERK, action="deliver", delegation=(CODE, 3))

    timeline = build_timeline(script.stored(), reference, stream.events)

    rows = [
        (e.event_type, e.status_before, e.status_after, e.delegation_valid)
        for e in timeline.entries
    ]
    assert rows == [
        ("CaseReceived", "", "received", True),
        ("CaseAccepted", "received", "accepted", True),
        ("ReviewStarted", "accepted", "in_review", True),
        ("PersonalDataViewed", "in_review", "in_review", None),
        ("ReviewCompleted", "in_review", "reviewed", False),
        ("ActionRefused", "reviewed", "reviewed", None),
        ("CaseApproved", "reviewed", "approved", True),
        ("CaseDelivered", "approved", "delivered", False),
    ]
    uses = {e.event_type: e.judgement.use for e in timeline.entries if e.judgement}
    assert uses["ReviewCompleted"] is Use.WHILE_SUSPENDED
    assert uses["CaseApproved"] is Use.WITHIN
    assert uses["CaseDelivered"] is Use.AFTER_REVOCATION
    approved = timeline.entries[6]
    assert approved.judgement is not None
    assert (approved.judgement.power, approved.judgement.in_force_version) == ("decide", 3)

    # The clock (funeral subsidy: 5 working days) counts from Monday 16 Nov.
    clocks = {e.event_type: e.clock for e in timeline.entries}
    assert clocks["CaseAccepted"] is not None and clocks["CaseAccepted"].used == 0
    assert clocks["ReviewStarted"] is not None and clocks["ReviewStarted"].used == 1
    approved_clock = clocks["CaseApproved"]
    assert approved_clock is not None
    assert (approved_clock.used, approved_clock.remaining, approved_clock.running) == (4, 1, False)
    delivered_clock = clocks["CaseDelivered"]
    assert delivered_clock is not None and delivered_clock.used == 4  # stopped at the decision

    # The reading is in the timeline, with its reason; personal data is not.
    viewed = timeline.entries[3]
    assert viewed.details["reason"] == "申请人来电 / the applicant called"
    assert (viewed.actor_user, viewed.actor_role, viewed.actor_station) == (
        "li.clerk",
        "window_clerk",
        "xuefeng_station",
    )
    text = json.dumps(timeline.as_json(), ensure_ascii=False)
    assert ID_NUMBER not in text and PHONE not in text
    # The end: as of the latest event's day, not today.
    standing = timeline.standing
    assert (standing.status, standing.events_counted, standing.known) == ("delivered", 8, True)
    assert standing.clock_as_of == china(11, 26).date()
    assert standing.tasks == ()


def test_an_event_that_names_an_older_version_than_the_one_in_force_is_not_valid(
    reference: Reference,
) -> None:
    stream = troubled_delegation()
    script = received_and_accepted(CaseScript("XF-2026-000502"), china(11, 20), (CODE, 1))
    timeline = build_timeline(script.stored(), reference, stream.events)
    received = timeline.entries[0]
    assert received.judgement is not None
    assert received.judgement.use is Use.WRONG_INSTRUMENT  # covered, but by version 3 by then
    assert received.judgement.in_force_version == 3
    assert received.delegation_valid is False
    assert "recorded hrss-audit-2026 (version 1)" in received.judgement.message


def test_a_late_entered_paper_form_as_of_a_moment_in_both_senses(reference: Reference) -> None:
    # Handed in on Monday 16 Nov at 09:00, typed in on Thursday 19 Nov at 15:00; the
    # review starts on Friday. The instrument it was accepted under dates from 2 Nov, but
    # was itself entered only on Thursday at 16:00.
    stream = Stream("hrss-paper-2026")
    stream.do(
        lambda s: decide_publish(
            s,
            instrument(
                "hrss-paper-2026",
                published_on=china(11, 2).date(),
                valid_from=china(11, 2).date(),
            ),
            actor=OFFICER,
            at=china(11, 19, 16),
        ),
        recorded_at=china(11, 19, 16),
    )
    assert stream.events[0].occurred_at == china(11, 2, 0)  # takes effect on its date
    entered = china(11, 19, 15)
    script = received_and_accepted(
        CaseScript("XF-2026-000503"), china(11, 16), ("hrss-paper-2026", 1), recorded_at=entered
    )
    script.add(
        "ReviewStarted",
        china(11, 20),
        REVIEWER,
        action="start_review",
        delegation=("hrss-paper-2026", 1),
    )
    events = script.stored()

    wednesday = china(11, 18, 12)
    happened = build_timeline(events, reference, stream.events, as_of=wednesday)
    known = build_timeline(events, reference, stream.events, as_of=wednesday, basis=Basis.RECORDED)
    assert (happened.standing.status, happened.standing.events_counted) == ("accepted", 2)
    assert happened.standing.clock is not None
    assert (happened.standing.clock.used, happened.standing.clock.remaining) == (2, 3)
    assert happened.standing.tasks == (
        {"kind": "review", "role": "reviewer", "org": "xuefeng_station", "claimed_by": None},
    )
    assert [v for v, *_ in happened.standing.not_counted] == [3]
    assert (known.standing.known, known.standing.status, known.standing.events_counted) == (
        False,
        "",
        0,
    )
    assert known.entries == () and known.standing.tasks == ()
    assert known.case_number == "XF-2026-000503"  # the case is still named

    # Thursday 15:30: the form is in, the instrument not yet — the system then knew of no
    # delegation covering the acceptance; as things stood, it was covered.
    thursday = china(11, 19, 15, 30)
    happened = build_timeline(events, reference, stream.events, as_of=thursday)
    known = build_timeline(events, reference, stream.events, as_of=thursday, basis=Basis.RECORDED)
    assert happened.standing.status == known.standing.status == "accepted"
    assert [e.delegation_valid for e in happened.entries] == [True, True]
    assert [e.delegation_valid for e in known.entries] == [False, False]
    assert known.entries[1].judgement is not None
    assert known.entries[1].judgement.use is Use.OUTSIDE

    # Friday: both senses agree.
    friday = china(11, 20, 10)
    for basis in Basis:
        then = build_timeline(events, reference, stream.events, as_of=friday, basis=basis)
        assert (then.standing.status, then.standing.events_counted) == ("in_review", 3)
        assert all(e.delegation_valid for e in then.entries)


def test_counting_needs_an_aware_moment_and_an_impossible_history_is_named(
    reference: Reference,
) -> None:
    script = CaseScript("XF-2026-000504").add(
        "CaseReceived", china(11, 16), CLERK, action="receive", delegation=(CODE, 1)
    )
    events = script.stored()
    with pytest.raises(TimelineError, match="time zone"):
        counted(events, datetime(2026, 11, 16, 9), Basis.OCCURRED)
    for basis in Basis:
        assert counted(events, china(11, 16, 8, 59), basis) == []
        assert counted(events, datetime(2026, 11, 16, 1, 0, tzinfo=UTC), basis) == events
    script.add("CaseApproved", china(11, 17), HEAD, action="approve", delegation=(CODE, 1))
    approved = build_timeline(script.stored(), reference, []).entries[1]
    assert approved.not_allowed is not None
    assert "from status received" in approved.not_allowed
    assert approved.status_after == "received"


def test_the_step_is_found_by_status_and_action(reference: Reference) -> None:
    workflow = reference.workflows.get("station_item", 1)
    events = (
        received_and_accepted(CaseScript("XF-2026-000505"), china(11, 16), (CODE, 1))
        .add("ReviewStarted", china(11, 17), REVIEWER, action="start_review")
        .add("DeadlineExtended", china(11, 17, 11), HEAD, action="extend", days=10)
        .stored()
    )
    start = step_of(workflow, "", events[0])
    assert start is not None and start.power == "receive"
    extend = step_of(workflow, "in_review", events[3])
    assert extend is not None and (extend.action, extend.power) == ("extend", "decide")
    bare = dataclasses.replace(events[1], payload={})
    accept = step_of(workflow, "received", bare)
    assert accept is not None and accept.action == "accept"
    assert step_of(workflow, "accepted", events[1]) is None  # not from that status
    assert register_from([]) == []


def test_an_action_entered_while_its_delegation_was_suspended_says_so(
    reference: Reference,
) -> None:
    stream = troubled_delegation()
    entered = china(11, 18, 11)  # suspended since 10:00
    script = received_and_accepted(
        CaseScript("XF-2026-000506"), china(11, 17), (CODE, 1), recorded_at=entered
    )
    timeline = build_timeline(script.stored(), reference, stream.events)
    judged = [e.judgement for e in timeline.entries]
    assert [(j.use, j.when_recorded) for j in judged if j] == [
        (Use.WITHIN, Use.WHILE_SUSPENDED),
        (Use.WITHIN, Use.WHILE_SUSPENDED),
    ]
    assert all(e.delegation_valid for e in timeline.entries)  # valid when it happened
    # As things stood before the entry, the entry's moment is not yet part of the story.
    before_entry = build_timeline(script.stored(), reference, stream.events, as_of=china(11, 18))
    assert [e.judgement.when_recorded for e in before_entry.entries if e.judgement] == [None, None]


def test_a_disclosure_and_free_text_are_shown_without_personal_data(
    reference: Reference,
) -> None:
    stream = troubled_delegation()
    script = received_and_accepted(CaseScript("XF-2026-000502"), china(11, 16), (CODE, 1))
    script.add(
        "PersonalDataViewed",
        china(11, 16, 10),
        CLERK,
        authority=None,
        reason=f"申请人来电 {PHONE}，改用邮箱 wang.xiuying@example.cn",
        fields=["email", "id_number", "name", "phone"],
    )
    script.add(
        "PersonalDataDisclosed",
        china(11, 16, 11),
        Actor(user="system", role="system", station="system"),
        to="hc_forestry",
        fields=["id_number", "name", "phone"],
        channel="caseflow.dept.hc_forestry.requests",
        reason="转办 / forwarded",
        request_id="3b6f0c2e-7a43-4f1e-9a51-3f0d2c8e6b17",
    )
    timeline = build_timeline(script.stored(), reference, stream.events)
    viewed, disclosed = timeline.entries[2:]
    assert viewed.details["reason"] == "申请人来电 138****5678，改用邮箱 w***@example.cn"
    assert (disclosed.status_before, disclosed.status_after) == ("accepted", "accepted")
    assert disclosed.judgement is None and disclosed.delegation_valid is None
    assert disclosed.details == {
        "to": "hc_forestry",
        "fields": ["id_number", "name", "phone"],
        "channel": "caseflow.dept.hc_forestry.requests",
        "reason": "转办 / forwarded",
    }
    text = json.dumps(timeline.as_json(), ensure_ascii=False)
    assert PHONE not in text and "wang.xiuying" not in text
