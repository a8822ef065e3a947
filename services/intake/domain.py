"""Intake's rules: what a valid application is, and the event it becomes. No I/O."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.catalogue import ITEMS, MATERIALS
from shared.events import Actor, NewEvent
from shared.identity import PHONE, id_number_problem
from shared.messages import Applicant, CaseReceived

CASE_KIND = "application"
_NAMESPACE = uuid.UUID("6c1f4a52-2f6b-4c55-9a7e-5d8f0f3c1a10")


def _id_number(value: str) -> str:
    value = value.strip().upper()
    if problem := id_number_problem(value):
        raise ValueError(problem)
    return value


def _phone(value: str) -> str:
    value = value.strip().replace(" ", "").replace("-", "")
    if not PHONE.match(value):
        raise ValueError("must be an 11-digit mobile number starting with 1 (应为11位手机号码)")
    return value


def _item_code(value: str) -> str:
    if value not in ITEMS:
        known = ", ".join(sorted(ITEMS))
        raise ValueError(f"unknown service item {value!r} (未知事项); known items: {known}")
    return value


def _materials(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - set(MATERIALS))
    if unknown:
        raise ValueError(f"unknown material codes: {', '.join(unknown)} (未知材料)")
    return sorted(set(values))


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


class ApplicantIn(BaseModel):
    """The applicant as the window clerk types them in."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Full name (姓名)", examples=["王秀英"])
    phone: Annotated[str, AfterValidator(_phone)] = Field(
        description="Mobile number (手机号码)", examples=["13812345678"]
    )
    id_number: Annotated[str, AfterValidator(_id_number)] = Field(
        description="Citizen ID number, GB 11643 (身份证号码)", examples=["11010519491231002X"]
    )


class Application(BaseModel):
    """An application handed in at the window."""

    model_config = ConfigDict(extra="forbid")

    item_code: Annotated[str, AfterValidator(_item_code)] = Field(
        description="Service item code (事项编码)", examples=["pension"]
    )
    applicant: ApplicantIn
    materials: Annotated[list[Annotated[str, Field(max_length=64)]], AfterValidator(_materials)] = (
        Field(
            default_factory=list,
            max_length=50,
            description="Codes of the materials handed in (已交材料)",
            examples=[["id_card"]],
        )
    )


def case_id_for(idempotency_key: str) -> uuid.UUID:
    """The case an Idempotency-Key creates: the same key always names the same case."""
    return uuid.uuid5(_NAMESPACE, f"case:{idempotency_key}")


def receive(
    application: Application, idempotency_key: str, *, actor: Actor, correlation_id: str
) -> NewEvent:
    """The ``CaseReceived`` event for an application (deterministic id, so retries match)."""
    payload = CaseReceived(
        item_code=application.item_code,
        applicant=Applicant(**application.applicant.model_dump()),
        materials=application.materials,
    )
    return NewEvent(
        event_id=uuid.uuid5(_NAMESPACE, f"received:{idempotency_key}"),
        event_type="CaseReceived",
        actor=actor,
        correlation_id=correlation_id,
        payload=payload.model_dump(),
    )
