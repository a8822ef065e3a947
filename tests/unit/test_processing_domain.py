"""Processing's completeness check and notify's messages."""

from __future__ import annotations

from services.notify.messages import render
from services.processing.domain import decide_on_receipt
from shared.messages import Applicant
from tests.unit.test_lifecycle import stored

APPLICANT = {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"}


def test_complete_application_is_accepted() -> None:
    received = stored(
        "CaseReceived",
        1,
        item_code="pension",
        applicant=APPLICANT,
        materials=["household_register", "id_card"],
    )
    decision = decide_on_receipt(received)
    assert decision.event_type == "CaseAccepted"
    assert decision.causation_id == str(received.event_id)


def test_correction_request_lists_every_missing_material() -> None:
    received = stored(
        "CaseReceived", 1, item_code="logging_permit", applicant=APPLICANT, materials=["id_card"]
    )
    decision = decide_on_receipt(received)
    assert decision.event_type == "CorrectionRequested"
    assert [m["code"] for m in decision.payload["missing"]] == [
        "forest_right_certificate",
        "logging_plan",
    ]


def test_the_same_receipt_always_gives_the_same_decision_id() -> None:
    received = stored("CaseReceived", 1, item_code="pension", applicant=APPLICANT, materials=[])
    assert decide_on_receipt(received).event_id == decide_on_receipt(received).event_id


def test_notice_is_bilingual_and_its_subject_carries_no_personal_data() -> None:
    message = render(
        "CorrectionRequested",
        {
            "item_code": "funeral_subsidy",
            "missing": [{"code": "bank_card", "name_zh": "银行卡", "name_en": "bank card"}],
        },
        Applicant(**APPLICANT),
    )
    assert "银行卡 / bank card" in message.body
    assert "补正" in message.subject and "Materials missing" in message.subject
    for secret in (APPLICANT["phone"], APPLICANT["id_number"]):
        assert secret not in message.subject and secret not in message.body
