"""The placeholder catalogue of the foundation: a few service items and their materials.

Kept only so that code written against it (``from shared.catalogue import ITEMS, MATERIALS``)
keeps working while it moves to the versioned catalogue (``load_catalogue``); to be removed
then. Its codes (``pension``, ``medical_insurance``, ...) are not the catalogue's.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Material:
    """A document the applicant hands in."""

    code: str
    name_zh: str
    name_en: str


@dataclasses.dataclass(frozen=True)
class ServiceItem:
    """A service item and its required materials."""

    code: str
    name_zh: str
    name_en: str
    required: tuple[Material, ...]


_ID_CARD = Material("id_card", "居民身份证", "resident ID card")
_HOUSEHOLD = Material("household_register", "户口簿", "household register")

ITEMS: dict[str, ServiceItem] = {
    item.code: item
    for item in (
        ServiceItem(
            "pension",
            "城乡居民养老保险参保登记",
            "rural and urban residents' pension enrolment",
            (_ID_CARD, _HOUSEHOLD),
        ),
        ServiceItem(
            "minimum_living_allowance",
            "最低生活保障申请",
            "minimum living allowance",
            (
                _ID_CARD,
                _HOUSEHOLD,
                Material("income_statement", "家庭收入情况说明", "household income statement"),
            ),
        ),
        ServiceItem(
            "medical_insurance",
            "城乡居民医保参保登记",
            "rural residents' medical insurance enrolment",
            (_ID_CARD, _HOUSEHOLD),
        ),
        ServiceItem(
            "logging_permit",
            "林木采伐许可证核发",
            "logging permit",
            (
                _ID_CARD,
                Material("forest_right_certificate", "林权证", "forest right certificate"),
                Material("logging_plan", "采伐作业设计", "logging plan"),
            ),
        ),
        ServiceItem(
            "birth_certificate",
            "出生医学证明办理",
            "birth medical certificate",
            (_ID_CARD, Material("delivery_record", "分娩记录", "delivery record")),
        ),
        ServiceItem(
            "funeral_subsidy",
            "丧葬补贴申领",
            "funeral subsidy",
            (
                _ID_CARD,
                Material("death_certificate", "死亡证明", "death certificate"),
                Material("bank_card", "银行卡", "bank card"),
            ),
        ),
    )
}

MATERIALS: dict[str, Material] = {m.code: m for item in ITEMS.values() for m in item.required}
