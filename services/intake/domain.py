"""Intake's rules: what a valid application, visit or matter is at the window. No I/O.

The catalogue check (is the item known, are the materials known) happens against the
item version the case pins; the shapes are checked here, at the edge.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from shared.domain.identity import (
    id_number_problem,
    person_name_problem,
    phone_problem,
    text_problem,
)
from shared.domain.moments import OccurredAt


def _person_name(value: str) -> str:
    if problem := person_name_problem(value):
        raise ValueError(problem)
    return value


def _free_text(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(_person_name),
]
"""A person's name (applicant, visitor, party, person helped): readable as written."""
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(_free_text),
]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


def _id_number(value: str) -> str:
    value = value.strip().upper()
    if problem := id_number_problem(value):
        raise ValueError(problem)
    return value


def _phone(value: str) -> str:
    value = value.strip().replace(" ", "").replace("-", "")
    if problem := phone_problem(value):
        raise ValueError(problem)
    return value


Channel = Literal["sms", "email"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApplicantIn(_In):
    """The applicant as the window clerk types them in."""

    name: Name = Field(description="Full name (姓名)", examples=["王秀英"])
    phone: Annotated[str, AfterValidator(_phone)] = Field(
        description="Mobile number (手机号码)", examples=["13812345678"]
    )
    id_number: Annotated[str, AfterValidator(_id_number)] = Field(
        description="Citizen ID number, GB 11643 (身份证号码)", examples=["11010519491231002X"]
    )
    email: EmailStr | None = Field(default=None, description="For notices by email (电子邮箱)")
    village: Code | None = Field(default=None, description="Village code, e.g. gongyu")


class MaterialIn(_In):
    """A material handed in, and whether the clerk checked the original (trust level B)."""

    code: Code
    original_checked: bool = Field(
        default=False, description="The clerk saw the original (核验原件)"
    )


class Application(_In):
    """An application handed in at the window (申请)."""

    item_code: Code = Field(
        description="Service item code (事项编码)", examples=["pension_enrolment"]
    )
    applicant: ApplicantIn
    materials: list[Code | MaterialIn] = Field(
        default_factory=list,
        max_length=50,
        description="Materials handed in: codes, or {code, original_checked}",
        examples=[[{"code": "id_card", "original_checked": True}, "household_register"]],
    )
    notify_by: list[Channel] = Field(
        default_factory=lambda: list[Channel](["sms"]),
        max_length=2,
        description="How the applicant wants to be told: sms, email or both",
    )
    language: Literal["zh-CN", "en"] = Field(
        default="zh-CN",
        description="The language of the applicant's notices (通知语言): zh-CN or en",
    )
    decide: Literal["now", "later"] = Field(
        default="now",
        description="now: accept, or send the one-time correction notice, on the spot; "
        "later: only receive (the notice is then due within 5 working days)",
    )
    reception_id: uuid.UUID | None = Field(default=None, description="The visit it came from")
    occurred_at: OccurredAt

    @model_validator(mode="after")
    def _email_if_asked(self) -> Application:
        if "email" in self.notify_by and not self.applicant.email:
            raise ValueError("notify_by includes email: give applicant.email")
        return self

    def material_list(self) -> list[MaterialIn]:
        """Materials as objects, one per code."""
        found: dict[str, MaterialIn] = {}
        for m in self.materials:
            material = MaterialIn(code=m) if isinstance(m, str) else m
            if material.code not in found or material.original_checked:
                found[material.code] = material
        return [found[code] for code in sorted(found)]


class Visit(_In):
    """A visitor at the station, whether or not a case follows (来访登记)."""

    visitor_name: Name
    id_number: Annotated[str, AfterValidator(_id_number)] | None = Field(
        default=None,
        description="Their citizen ID number, if they show it (身份证号码): people received "
        "are counted apart from visits by it, else by name and village",
    )
    village: Code | None = None
    purpose: Literal[
        "enquiry", "application", "mediation", "legal_advice", "assistance", "police", "other"
    ]
    note: Annotated[str, StringConstraints(max_length=2000), AfterValidator(_free_text)] | None = (
        None
    )
    occurred_at: OccurredAt


class MediationIn(_In):
    """A dispute brought for mediation (矛盾纠纷)."""

    title: Text
    parties: list[Name] = Field(min_length=2, max_length=20)
    village: Code | None = None
    summary: Text
    occurred_at: OccurredAt


class PublicityIn(_In):
    """A legal-publicity session to hold (普法宣传)."""

    topic: Text
    village: Code | None = None
    planned_on: date
    occurred_at: OccurredAt


class AssistanceIn(_In):
    """A person who needs help or rescue (帮扶救助)."""

    person_name: Name = Field(description="The person helped, or the first of them")
    people_helped: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="How many people the matter covers (救助人数), e.g. a family of four: 4",
    )
    village: Code | None = None
    need: Text
    urgent: bool = False
    occurred_at: OccurredAt


class PoliceAssistanceIn(_In):
    """Help the police room asked for (协助公安)."""

    police_unit: Text
    reference: (
        Annotated[str, StringConstraints(max_length=100), AfterValidator(_free_text)] | None
    ) = None
    summary: Text
    occurred_at: OccurredAt


def start_payload(model: BaseModel) -> dict[str, Any]:
    """A matter's or visit's starting payload (``occurred_at`` goes on the envelope)."""
    return model.model_dump(mode="json", exclude={"occurred_at"}, exclude_none=True)
