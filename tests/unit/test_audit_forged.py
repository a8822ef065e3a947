"""Events a faulty or bypassed writer could have forged, read by the audit without a
database: each is judged and named, and none hides the rest of the story."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import pytest

from shared.domain.audit.compliance import ComplianceError, check_period, compliance_report
from shared.domain.audit.judge import Use, register_from
from shared.domain.audit.timeline import TimelineError, build_timeline
from shared.domain.delegation import decide_publish, decide_resume, decide_revoke, decide_suspend
from shared.domain.events import Actor
from shared.domain.workflow.reference import Reference, load_reference
from tests.audit_helpers import (
    CLERK,
    HEAD,
    OFFICER,
    REVIEWER,
    CaseScript,
    Stream,
    china,
    instrument,
    received_and_accepted,
)

CODE = "hrss-audit-2026"
SYSTEM = Actor(user="system", role="system")
START, END = date(2026, 11, 1), date(2026, 11, 30)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return load_reference()


def delegation() -> Stream:
    stream = Stream(CODE)
    stream.do(lambda s: decide_publish(s, instrument(CODE), actor=OFFICER, at=china(1, 6)))
    return stream


def reviewed(number: str) -> CaseScript:
    script = received_and_accepted(CaseScript(number), china(11, 16), (CODE, 1))
    script.add(
        "ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=(CODE, 1)
    )
    return script.add(
        "ReviewCompleted", china(11, 17, 10), REVIEWER, action="complete_review",
        delegation=(CODE, 1), recommendation="approve",
    )  # fmt: skip


def test_a_decision_recorded_as_the_system_s_is_a_wrong_role(reference: Reference) -> None:
    stream = delegation()
    script = reviewed("XF-2026-000701")
    script.add("CaseApproved", china(11, 18), SYSTEM, action="approve", delegation=(CODE, 1))
    # The system's own step (deemed acceptance) stays out of the check.
    deemed = CaseScript("XF-2026-000702").add(
        "CaseReceived", china(11, 16), CLERK, action="receive", delegation=(CODE, 1)
    )
    deemed.add("CaseDeemedAccepted", china(11, 25), SYSTEM, action="deem_accepted")

    timeline = build_timeline(script.stored(), reference, stream.events)
    approved = timeline.entries[-1]
    assert approved.judgement is not None
    assert approved.judgement.use is Use.WRONG_ROLE
    assert "not system" in approved.judgement.message
    assert approved.delegation_valid is False

    report = compliance_report(
        [script.stored(), deemed.stored(first_position=50)],
        reference,
        register_from(stream.events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    assert [(a.case_number, a.event_type, a.judgement.use) for a in report.actions][-1] == (
        "XF-2026-000701",
        "CaseApproved",
        Use.WRONG_ROLE,
    )
    assert "CaseDeemedAccepted" not in [a.event_type for a in report.actions]
    assert report.counts()["wrong_role"] == 1 and not report.compliant


def forged_decision() -> CaseScript:
    """A decision written straight after acceptance (no review), then the case goes on
    as the workflow allows from where it really stood."""
    script = received_and_accepted(CaseScript("XF-2026-000703"), china(11, 16), (CODE, 1))
    script.add("CaseApproved", china(11, 16, 10), HEAD, action="approve", delegation=(CODE, 1))
    return script.add(
        "ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=(CODE, 1)
    )


def test_an_event_the_workflow_does_not_allow_is_marked_and_the_story_goes_on(
    reference: Reference,
) -> None:
    stream = delegation()
    timeline = build_timeline(forged_decision().stored(), reference, stream.events)
    assert [e.event_type for e in timeline.entries] == [
        "CaseReceived",
        "CaseAccepted",
        "CaseApproved",
        "ReviewStarted",
    ]
    forged = timeline.entries[2]
    assert forged.not_allowed is not None
    assert "not allowed by the workflow from status accepted" in forged.not_allowed
    assert (forged.status_before, forged.status_after) == ("accepted", "accepted")
    assert forged.delegation_valid is False
    assert forged.judgement is not None and forged.judgement.power == "decide"
    assert forged.as_json()["not_allowed"] == forged.not_allowed
    review = timeline.entries[3]
    assert review.not_allowed is None and review.delegation_valid is True
    assert (review.status_before, review.status_after) == ("accepted", "in_review")
    assert timeline.standing.status == "in_review" and timeline.standing.outcome is None


def test_compliance_lists_an_event_the_workflow_does_not_allow(reference: Reference) -> None:
    stream = delegation()
    clean = received_and_accepted(CaseScript("XF-2026-000704"), china(11, 18), (CODE, 1))
    report = compliance_report(
        [forged_decision().stored(), clean.stored(first_position=50)],
        reference,
        register_from(stream.events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    found = [(a.case_number, a.event_type, a.judgement.use) for a in report.actions]
    assert found == [
        ("XF-2026-000703", "CaseReceived", Use.WITHIN),
        ("XF-2026-000703", "CaseAccepted", Use.WITHIN),
        ("XF-2026-000703", "CaseApproved", Use.NOT_ALLOWED),
        ("XF-2026-000703", "ReviewStarted", Use.WITHIN),
        ("XF-2026-000704", "CaseReceived", Use.WITHIN),
        ("XF-2026-000704", "CaseAccepted", Use.WITHIN),
    ]
    assert report.counts()["not_allowed"] == 1 and not report.compliant
    assert report.as_json()["actions"][2]["use"] == "not_allowed"


def test_an_action_citing_another_instrument_than_the_one_in_force_is_not_compliant(
    reference: Reference,
) -> None:
    # Version 1 was revoked on 10 Nov; version 1 of another instrument covers the item.
    old = Stream("hrss-old-2026")
    old.do(
        lambda s: decide_publish(
            s, instrument("hrss-old-2026", document_number="韩人社发〔2026〕1号"),
            actor=OFFICER, at=china(1, 6),
        )
    )  # fmt: skip
    old.do(
        lambda s: decide_revoke(s, "hrss-old-2026", reason="替换", actor=OFFICER, at=china(11, 10))
    )
    new = delegation()
    cites_old = received_and_accepted(
        CaseScript("XF-2026-000705"), china(11, 16), ("hrss-old-2026", 1)
    )
    cites_new = received_and_accepted(CaseScript("XF-2026-000706"), china(11, 16), (CODE, 1))
    report = compliance_report(
        [cites_old.stored(), cites_new.stored(first_position=50)],
        reference,
        register_from([*old.events, *new.events]),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    found = [(a.case_number, a.judgement.use) for a in report.actions]
    assert found == [
        ("XF-2026-000705", Use.WRONG_INSTRUMENT),
        ("XF-2026-000705", Use.WRONG_INSTRUMENT),
        ("XF-2026-000706", Use.WITHIN),
        ("XF-2026-000706", Use.WITHIN),
    ]
    assert not report.compliant
    counts = report.counts()
    assert (counts["wrong_instrument"], counts["within"]) == (2, 2)
    assert report.as_json()["counts"] == counts
    rows = list(csv.DictReader(io.StringIO(report.csv())))
    assert [r["use"] for r in rows] == [u.value for _, u in found]
    wrong = report.actions[0]
    assert (wrong.judgement.in_force_id, wrong.delegation_id) == (CODE, "hrss-old-2026")
    assert "the event recorded hrss-old-2026 (version 1)" in wrong.judgement.message
    assert not wrong.judgement.valid_for(wrong.delegation_id, wrong.delegation_version)
    # The timeline says the same of the same event.
    timeline = build_timeline(cites_old.stored(), reference, [*old.events, *new.events])
    assert [e.delegation_valid for e in timeline.entries] == [False, False]
    assert timeline.entries[0].judgement is not None
    assert timeline.entries[0].judgement.use is Use.WRONG_INSTRUMENT


def test_a_case_of_an_item_the_catalogue_does_not_hold_is_a_finding(
    reference: Reference,
) -> None:
    stream = delegation()
    script = received_and_accepted(
        CaseScript("XF-2026-000707", item_code="no_such_item"), china(11, 16), (CODE, 1)
    )
    timeline = build_timeline(script.stored(), reference, stream.events)
    judged = [e.judgement for e in timeline.entries]
    assert [j.use if j else None for j in judged] == [Use.UNKNOWN_ITEM, Use.UNKNOWN_ITEM]
    assert all("no_such_item" in j.message for j in judged if j)
    assert [e.delegation_valid for e in timeline.entries] == [False, False]
    assert timeline.standing.status == "accepted" and timeline.standing.clock is None
    report = compliance_report(
        [script.stored()],
        reference,
        register_from(stream.events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    assert report.counts()["unknown_item"] == 2 and not report.compliant


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00"])
def test_a_moment_at_the_ends_of_the_calendar_is_refused(reference: Reference, moment: str) -> None:
    script = CaseScript("XF-2026-000708").add(
        "CaseReceived", china(11, 16), CLERK, action="receive", delegation=(CODE, 1)
    )
    with pytest.raises(TimelineError, match="out of range"):
        build_timeline(script.stored(), reference, [], as_of=datetime.fromisoformat(moment))


@pytest.mark.parametrize(
    ("start", "end"), [(date.min, date(2026, 11, 30)), (date(2026, 11, 1), date.max)]
)
def test_a_period_at_the_ends_of_the_calendar_is_refused(start: date, end: date) -> None:
    with pytest.raises(ComplianceError, match="out of range"):
        check_period(start, end)


def test_a_late_paper_form_citing_the_version_in_force_at_entry_is_valid_at_entry(
    reference: Reference,
) -> None:
    # Published (v1); suspended on 18 Nov at 10:00 (v2), resumed on 19 Nov at 10:00 (v3).
    stream = delegation()
    stream.do(lambda s: decide_suspend(s, CODE, reason="审查", actor=OFFICER, at=china(11, 18, 10)))
    stream.do(lambda s: decide_resume(s, CODE, reason="结束", actor=OFFICER, at=china(11, 19, 10)))
    entered = china(11, 19, 15)
    # Handed in on 17 Nov, entered on 19 Nov: the live system checked (and recorded) v3.
    paper = received_and_accepted(CaseScript("XF-2026-000709"), china(11, 17), (CODE, 3), entered)
    # Citing v2 (in force neither then nor at entry) is still the wrong instrument.
    wrong = received_and_accepted(CaseScript("XF-2026-000710"), china(11, 17), (CODE, 2), entered)

    timeline = build_timeline(paper.stored(), reference, stream.events)
    assert [e.delegation_valid for e in timeline.entries] == [True, True]
    judged = timeline.entries[0].judgement
    assert judged is not None and judged.use is Use.WITHIN and judged.when_recorded is None
    assert (judged.in_force_version, judged.at_entry_version) == (1, 3)
    assert "valid at entry" in judged.message
    assert judged.as_json()["valid_at_entry"] == {"id": CODE, "version": 3}
    # Before it was entered, nothing is known of the entry.
    known_before = build_timeline(paper.stored(), reference, stream.events, as_of=china(11, 18))
    assert [e.delegation_valid for e in known_before.entries] == [False, False]

    report = compliance_report(
        [paper.stored(), wrong.stored(first_position=50)],
        reference,
        register_from(stream.events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    assert sorted((a.case_number or "", a.judgement.use) for a in report.actions) == [
        ("XF-2026-000709", Use.WITHIN),
        ("XF-2026-000709", Use.WITHIN),
        ("XF-2026-000710", Use.WRONG_INSTRUMENT),
        ("XF-2026-000710", Use.WRONG_INSTRUMENT),
    ]
