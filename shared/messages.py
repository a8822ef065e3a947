"""Payload schemas of the events on the bus (versioned with ``schema_version``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Payload(BaseModel):
    # Payloads carry more than these fields (status before and after, the action, the
    # receipt); consumers validate what they use.
    model_config = ConfigDict(frozen=True, extra="allow")


class Applicant(_Payload):
    """The citizen who applies (personal data: masked in logs and notices)."""

    name: str = Field(min_length=1, max_length=50)
    phone: str
    id_number: str
    email: str | None = None
    village: str | None = None


class CaseReceived(_Payload):
    """An application was handed in at the window."""

    item_code: str
    applicant: Applicant
    materials: list[str]


class CaseAccepted(_Payload):
    """Every required material is present: the application is accepted (受理)."""

    item_code: str


class MissingMaterial(_Payload):
    """One material the applicant still has to bring, or bring again."""

    code: str
    name_zh: str
    name_en: str
    problem: str = "missing"
    reason: str | None = None


class CorrectionRequested(_Payload):
    """One-time notice (一次性告知) listing every missing material at once."""

    item_code: str
    missing: list[MissingMaterial] = Field(min_length=1)
    deadline: str | None = None


class NotificationSent(_Payload):
    """The applicant was told; the recipient is stored masked."""

    channel: str
    recipient: str
    language: str
    subject: str
    body_sha256: str
    about_event_type: str


PAYLOADS: dict[str, type[BaseModel]] = {
    "CaseReceived": CaseReceived,
    "CaseAccepted": CaseAccepted,
    "CorrectionRequested": CorrectionRequested,
    "NotificationSent": NotificationSent,
}
