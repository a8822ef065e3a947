"""The notification rules and templates, without I/O: who is told what about each event,
every template rendered against every event type it serves, personal data masked."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest

from services.notify import templates
from services.notify.model import PlannedNotice
from services.notify.planning import NOT_NOTIFIED
from services.notify.rules import Planner, RulesError, load_rules
from shared.domain.events import StoredEvent
from shared.domain.workflow.state import Task, fold

PHONE = "13812345678"
ID_NUMBER = "11010519491231002X"
EMAIL = "wang.xiuying@example.cn"
START = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)

APPLICANT = {"name": "王秀英", "phone": PHONE, "id_number": ID_NUMBER, "email": EMAIL}
ACCEPTED = {
    "case_number": "XF-2026-000123",
    "accepted_on": "2026-11-02",
    "committed_deadline": "2026-11-16",
    "legal_deadline": "2026-11-30",
    "committed_limit_days": 10,
    "legal_limit_days": 20,
}
MISSING = [
    {"code": "household_register", "name_zh": "户口簿", "name_en": "household register"},
    {
        "code": "id_card",
        "name_zh": "居民身份证",
        "name_en": "ID card",
        "problem": "defective",
        "reason": "原件未核验",
    },
]
FACTS: dict[str, dict[str, Any]] = {
    "CaseAccepted": ACCEPTED,
    "CaseDeemedAccepted": {**ACCEPTED, "deemed": True},
    "CorrectionRequested": {"missing": MISSING, "deadline": "2026-11-09"},
    "CaseNotAccepted": {
        "reason": "不属于本站受理范围",
        "appeal_notice_zh": "如不服，可于60日内申请行政复议。",
        "appeal_notice_en": "You may apply for administrative review within 60 days.",
    },
    "ReviewCompleted": {"recommendation": "approve", "opinion": "材料齐全"},
    "CaseForwarded": {"to": "hc_civil_affairs", "deadline": "2026-11-20"},
    "CaseApproved": {"decision_number": "韩民〔2026〕7号"},
    "CaseRejected": {"reasons": ["收入超过标准"], "appeal_notice_zh": "可申请复议。"},
    "CaseDelivered": {"method": "in_person", "delivered_on": "2026-11-12"},
    "ClockWarningRaised": {
        "level": "red",
        "epoch": 2,
        "used": 11,
        "limit": 10,
        "legal_limit": 20,
        "remaining": 0,
        "escalated_to": "station_head",
    },
    "SatisfactionRated": {"score": 2},
    "ForwardOverdue": {"to": "hc_civil_affairs", "deadline": "2026-11-20"},
}

STATION = ["ReviewStarted", "ReviewCompleted", "CaseApproved", "CaseDelivered"]
PATHS: dict[str, tuple[str, list[str]]] = {
    # event type -> (item, the events before it after CaseReceived)
    "CaseReceived": ("pension_enrolment", []),
    "CorrectionRequested": ("pension_enrolment", []),
    "CaseNotAccepted": ("pension_enrolment", []),
    "CaseAccepted": ("pension_enrolment", []),
    "CaseDeemedAccepted": ("pension_enrolment", []),
    "ClockWarningRaised": ("pension_enrolment", ["CaseAccepted", "ReviewStarted"]),
    "ReviewCompleted": ("pension_enrolment", ["CaseAccepted", "ReviewStarted"]),
    "CaseApproved": ("pension_enrolment", ["CaseAccepted", *STATION[:2]]),
    "CaseDelivered": ("pension_enrolment", ["CaseAccepted", *STATION[:3]]),
    "SatisfactionRated": ("pension_enrolment", ["CaseAccepted", *STATION]),
    "CaseForwarded": ("minimum_living_allowance", ["CaseAccepted", *STATION[:2]]),
    "ForwardOverdue": (
        "minimum_living_allowance",
        ["CaseAccepted", *STATION[:2], "CaseForwarded"],
    ),
    "CaseRejected": ("minimum_living_allowance", ["CaseAccepted", *STATION[:2], "CaseForwarded"]),
}


@pytest.fixture(scope="module")
def planner() -> Planner:
    return Planner.load()


def stored(
    case_id: uuid.UUID, version: int, event_type: str, payload: dict[str, Any]
) -> StoredEvent:
    at = START + timedelta(hours=version)
    return StoredEvent(
        position=version,
        event_id=uuid.uuid5(case_id, str(version)),
        case_id=case_id,
        case_kind="application",
        version=version,
        event_type=event_type,
        schema_version=2 if event_type == "CaseReceived" else 1,
        occurred_at=at,
        recorded_at=at,
        actor_user="li.clerk",
        actor_role="window_clerk",
        actor_station="xuefeng_station",
        authority=None,
        delegation_id=None,
        delegation_version=None,
        correlation_id=None,
        causation_id=None,
        payload=payload,
        prev_hash=None,
        hash="",
    )


def history(
    planner: Planner,
    event_type: str,
    *,
    channels: Sequence[str] = ("sms", "email"),
    language: str = "zh-CN",
    **payload: Any,
) -> list[StoredEvent]:
    """A case of the right item whose last event is ``event_type``."""
    item_code, before = PATHS[event_type]
    item = planner.reference.catalogue.get(item_code)
    case_id = uuid.uuid4()
    received = {
        "item_code": item.code,
        "item_version": item.version,
        "case_number": "XF-2026-000123",
        "station": "xuefeng_station",
        "workflow": {"name": item.workflow, "version": item.workflow_version},
        "applicant": APPLICANT,
        "channels": list(channels),
        "language": language,
        "materials": [m.code for m in item.materials],
    }
    events = [stored(case_id, 1, "CaseReceived", received)]
    steps = [*before, event_type] if event_type != "CaseReceived" else []
    for event in steps:
        body = {**FACTS.get(event, {}), **(payload if event == event_type else {})}
        events.append(stored(case_id, len(events) + 1, event, body))
    return events


def notices(planner: Planner, events: list[StoredEvent]) -> list[PlannedNotice]:
    return planner.plan(events[-1], events)


def audiences(found: list[PlannedNotice]) -> set[tuple[str, str]]:
    return {(n.recipient.audience, n.channel) for n in found}


@pytest.mark.parametrize("event_type", sorted(PATHS))
@pytest.mark.parametrize("language", templates.LANGUAGES)
def test_every_template_renders_for_every_event_it_serves_without_personal_data(
    planner: Planner, event_type: str, language: str
) -> None:
    found = notices(planner, history(planner, event_type, language=language))
    served = [r for r in planner.rules.rules if event_type in r.events]
    for notice in found:
        assert notice.notice.subject and notice.notice.body
        for secret in (PHONE, ID_NUMBER, EMAIL):
            assert secret not in notice.notice.subject
            assert secret not in notice.notice.body
        if notice.recipient.audience == "applicant":
            assert notice.notice.language == language
            assert ("王秀英" in notice.notice.body) == (notice.channel == "email")
    if any(r.tell == "applicant" for r in served):
        assert {n.channel for n in found if n.recipient.audience == "applicant"} == {"sms", "email"}


def test_every_rule_has_a_template_per_channel_and_language_and_no_template_is_orphaned(
    planner: Planner,
) -> None:
    wanted = {
        (rule.template, channel, language)
        for rule in planner.rules.rules
        for channel in rule.channels
        for language in templates.LANGUAGES
    }
    assert wanted == templates.available()


def test_every_template_renders_in_both_languages_for_every_event_of_its_rules(
    planner: Planner,
) -> None:
    # The staff and head templates, rendered against each event type their rules serve
    rendered = 0
    for rule, language in itertools.product(planner.rules.rules, templates.LANGUAGES):
        for event_type in rule.events if rule.events != ("*",) else sorted(PATHS):
            events = history(planner, event_type)
            context = planner._context(events[-1], fold(events, planner.reference.workflows))
            context["task"] = planner._task(Task("review", "reviewer", "xuefeng_station"))
            for channel in rule.channels:
                notice = templates.render(rule.template, channel, language, context)
                assert notice.subject and notice.body
                rendered += 1
    assert rendered > 40


def test_the_correction_notice_lists_every_missing_material_and_the_deadline(
    planner: Planner,
) -> None:
    for language, names in (
        ("zh-CN", ("户口簿", "居民身份证")),
        ("en", ("household register", "ID card")),
    ):
        found = notices(planner, history(planner, "CorrectionRequested", language=language))
        applicant = [n for n in found if n.recipient.audience == "applicant"]
        assert len(applicant) == 2
        for notice in applicant:
            for name in names:
                assert name in notice.notice.body
            assert "2026-11-09" in notice.notice.body


def test_applicants_are_told_only_over_the_channels_they_chose(planner: Planner) -> None:
    for chosen in (("sms",), ("email",), ("sms", "email")):
        found = notices(planner, history(planner, "CaseAccepted", channels=chosen))
        told = {n.channel for n in found if n.recipient.audience == "applicant"}
        assert told == set(chosen)
        sms = [n for n in found if n.channel == "sms" and n.recipient.audience == "applicant"]
        assert all(
            n.recipient.address == PHONE and n.recipient.masked == "138****5678" for n in sms
        )


def test_a_poor_rating_tells_the_head_and_a_good_one_does_not(planner: Planner) -> None:
    poor = notices(planner, history(planner, "SatisfactionRated", score=2))
    assert ("staff:xuefeng_station:station_head", "email") in audiences(poor)
    assert ("staff:xuefeng_station:station_head", "sms") in audiences(poor)
    good = notices(planner, history(planner, "SatisfactionRated", score=4))
    assert not any(n.template == "low_rating" for n in good)


def test_yellow_and_red_warnings_and_an_overdue_forwarding_tell_the_head(planner: Planner) -> None:
    for level in ("yellow", "red"):
        found = notices(planner, history(planner, "ClockWarningRaised", level=level))
        head = [n for n in found if n.recipient.audience == "staff:xuefeng_station:station_head"]
        assert {n.channel for n in head if n.template == "clock_warning"} == {"email", "sms"}
    overdue = notices(planner, history(planner, "ForwardOverdue"))
    assert ("staff:xuefeng_station:station_head", "email") in audiences(overdue)


def test_staff_hear_of_new_tasks_only(planner: Planner) -> None:
    accepted = audiences(notices(planner, history(planner, "CaseAccepted")))
    assert ("staff:xuefeng_station:reviewer", "email") in accepted
    # starting the review opens no new task: the review was already waiting
    started = [
        n
        for n in notices(planner, history(planner, "ReviewCompleted")[:-1])
        if n.template == "task_opened"
    ]
    assert started == []
    forwarded = audiences(notices(planner, history(planner, "CaseForwarded")))
    assert any(a.endswith(":department_officer") for a, _ in forwarded), forwarded
    approved = audiences(notices(planner, history(planner, "CaseApproved")))
    assert ("staff:xuefeng_station:window_clerk", "email") in approved


def test_notify_records_are_never_notified(planner: Planner) -> None:
    events = history(planner, "CaseAccepted")
    sent = stored(events[0].case_id, len(events) + 1, "NotificationSent", {"channel": "sms"})
    assert planner.plan(sent, [*events, sent]) == []


def test_a_rules_file_with_an_unknown_event_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - {events: [CaseAcepted], tell: applicant, channels: [sms], "
        "template: case_accepted}\n",
        encoding="utf-8",
    )
    with pytest.raises(RulesError, match=r"unknown event type.*CaseAcepted"):
        load_rules(path)
    path.write_text(
        "rules:\n  - {events: [CaseAccepted], tell: applicant, channels: [sms], "
        "template: no_such_template}\n",
        encoding="utf-8",
    )
    with pytest.raises(RulesError, match=r"no template no_such_template\.sms"):
        load_rules(path)


def test_a_template_typo_is_an_error_not_a_blank(tmp_path: Path) -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ applicant.nmae }}").render(applicant={"name": "王秀英"})
    assert templates.environment().undefined is jinja2.StrictUndefined


def test_a_reading_of_personal_data_tells_nobody(planner: Planner) -> None:
    events = history(planner, "CaseAccepted")
    viewed = stored(
        events[0].case_id,
        len(events) + 1,
        "PersonalDataViewed",
        {"reason": "申请人来电 / the applicant called", "fields": ["id_number", "name", "phone"]},
    )
    assert planner.plan(viewed, [*events, viewed]) == []
    # Nor the station's webhook subscribers: the planning consumer passes it over.
    assert "PersonalDataViewed" in NOT_NOTIFIED


def test_a_disclosure_to_a_department_tells_nobody(planner: Planner) -> None:
    events = history(planner, "CaseAccepted")
    disclosed = stored(
        events[0].case_id,
        len(events) + 1,
        "PersonalDataDisclosed",
        {
            "to": "hc_forestry",
            "fields": ["id_number", "name", "phone"],
            "channel": "caseflow.dept.hc_forestry.requests",
            "reason": "转办 / forwarded",
            "request_id": str(events[-1].event_id),
        },
    )
    assert planner.plan(disclosed, [*events, disclosed]) == []
    assert "PersonalDataDisclosed" in NOT_NOTIFIED


def test_templates_know_the_applicant_only_masked() -> None:
    shown = templates.applicant_view(
        {
            "name": "王秀英",
            "phone": "13812345678",
            "id_number": "11010519491231002X",
            "email": "wang.xiuying@example.cn",
        }
    )
    assert shown == {
        "name": "王秀英",
        "phone": "138****5678",
        "id_number": "110105********002X",
        "email": "w***@example.cn",
    }
    assert templates.environment().filters["mask_email"]("wang@example.cn") == "w***@example.cn"


def test_templates_get_the_event_payload_masked_too(planner: Planner) -> None:
    [received] = history(planner, "CaseReceived")
    state = fold([received], planner.reference.workflows)
    context = planner._context(received, state)
    shown = repr(context)
    for clear in (APPLICANT["phone"], APPLICANT["id_number"], APPLICANT["email"]):
        assert clear not in shown
    assert context["p"]["applicant"]["email"] == "w***@example.cn"
