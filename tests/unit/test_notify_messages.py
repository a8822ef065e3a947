"""Notify's messages: bilingual, complete, and free of personal data in the subject."""

from __future__ import annotations

from services.notify.messages import render
from shared.messages import Applicant

APPLICANT = {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"}


def test_correction_notice_lists_every_material_and_the_deadline() -> None:
    message = render(
        "CorrectionRequested",
        {
            "item_code": "funeral_subsidy",
            "item_version": 1,
            "deadline": "2026-12-28",
            "missing": [
                {"code": "bank_card", "name_zh": "银行卡", "name_en": "bank card"},
                {
                    "code": "id_card",
                    "name_zh": "居民身份证",
                    "name_en": "resident identity card",
                    "problem": "defective",
                    "reason": "原件未核验",
                },
            ],
        },
        Applicant(**APPLICANT),
    )
    assert "银行卡 / bank card" in message.body
    assert "原件未核验" in message.body
    assert "2026-12-28" in message.body
    assert "补正" in message.subject and "Materials missing" in message.subject
    for secret in (APPLICANT["phone"], APPLICANT["id_number"]):
        assert secret not in message.subject and secret not in message.body


def test_acceptance_names_the_item_in_both_languages() -> None:
    message = render(
        "CaseAccepted",
        {"item_code": "pension_enrolment", "item_version": 1},
        Applicant(**APPLICANT),
    )
    assert "城乡居民基本养老保险参保登记" in message.subject
    assert "accepted" in message.body
