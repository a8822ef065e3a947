"""Payload schemas of the events on the bus (versioned with ``schema_version``)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.domain.identity import person_name_problem, text_problem


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


Channel = Literal["sms", "email"]
"""How an applicant is told."""


class CaseReceived(_Payload):
    """An application was handed in at the window (schema version 2)."""

    item_code: str
    applicant: Applicant
    materials: list[str]
    language: Literal["zh-CN", "en"] = Field(
        default="zh-CN", description="The language of the applicant's notices (通知语言)"
    )
    channels: list[Channel] = Field(
        default_factory=lambda: list[Channel](["sms"]),
        description="How the applicant is told: sms, email or both (通知方式)",
    )


class CaseReceivedV1(_Payload):
    """Schema version 1 of ``CaseReceived``, before applicants chose their notice language.

    Still in the log (the log is never rewritten) and on the bus as stored; caseflow's
    consumers read it upcast to version 2 (``shared.domain.upcasting``)."""

    item_code: str
    applicant: Applicant
    materials: list[str]
    channels: list[Channel] | None = Field(
        default=None, description="Absent in the earliest events: read as sms"
    )


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
    """Somebody was told (送达): who (masked), over which channel, about which event."""

    channel: str
    recipient: str
    """Masked: ``138****5678``, ``w***@example.cn``, or the webhook's host."""
    language: str
    subject: str
    body_sha256: str
    about_event_type: str
    audience: str = "applicant"
    """``applicant``, ``staff:<org>:<role>`` or ``webhook:<subscription id>``."""
    delivery_id: str | None = None
    """The idempotency key the receiver saw."""
    about_event_id: str | None = None
    attempts: int = 1
    provider_message_id: str | None = None


class NotificationFailed(_Payload):
    """A notice could not be delivered after every retry; it waits as a dead letter."""

    channel: str
    recipient: str
    language: str
    subject: str
    about_event_type: str
    audience: str
    delivery_id: str
    about_event_id: str
    attempts: int
    reason: str


class DeliveredBy(BaseModel):
    """How a department's decision reached caseflow, when not over HTTP: the bus, and the
    department credential that delivered it (the server vouches for it: only that
    credential may publish on its answer subject). Set by caseflow, never by a caller."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Literal["nats"]
    credential: str = Field(
        min_length=1,
        max_length=63,
        description="the department credential's name (`caseflow nats credentials`)",
    )


class ActionRefused(_Payload):
    """A refused attempt: a wrong role, no delegation valid at that moment, a revoked or
    suspended one; a department's answer over NATS for a case not forwarded to it, not
    awaiting its answer, or naming an officer of another organisation. Recorded on the
    case; the status is unchanged."""

    action: str
    reason: str
    message: str
    status: str
    delegation_id: str | None = Field(
        default=None, description="The delegation the refusal cites (revoked, suspended…)"
    )
    delegation_version: int | None = None
    power: str | None = Field(
        default=None, description="The delegated power the action needed (收件、受理…)"
    )
    delivered_by: DeliveredBy | None = Field(
        default=None, description="A refused department answer: the credential that sent it"
    )
    dated_at: str | None = Field(
        default=None,
        description="A refused attempt to date an act in the past (补录): the moment it "
        "claimed (the event itself is when it was tried)",
    )


class TaskClaimed(_Payload):
    """A member of staff took the case's open task."""

    task: str
    user: str


class TaskReleased(_Payload):
    """A claimed task was given back."""

    task: str
    user: str


class ClockWarningRaised(_Payload):
    """Yellow at 80 % of the committed limit, red past it; escalated to the station head."""

    level: str
    epoch: int
    used: int
    limit: int
    legal_limit: int
    remaining: int
    escalated_to: str


class ForwardOverdue(_Payload):
    """The department did not answer a forwarded case in time (§43)."""

    to: str
    deadline: str


class VisitorReceived(_Payload):
    """A visitor at the station, in the reception log."""

    visitor_name: str
    purpose: str
    station: str
    village: str | None = None
    id_number: str | None = Field(
        default=None, description="The visitor's ID number if shown (masked in every copy)"
    )


class PersonalDataViewed(_Payload):
    """A member of staff opened the applicant's personal data (ID and phone numbers in
    full), and said why. A fact on the case: the status is unchanged, nobody is told."""

    reason: str = Field(min_length=1, max_length=500, description="Why (查看理由)")
    fields: list[str] = Field(description="What was shown, e.g. name, phone, id_number")


class PersonalDataDisclosed(_Payload):
    """The applicant's personal data went to another authority: the request that forwards a
    case to its department (``caseflow.dept.<authority>.requests``) carries the applicant
    in full, because the department decides on the application. A fact on the case, as
    ``PersonalDataViewed`` is: the status is unchanged, nobody is told; one per forwarding
    (its id derives from the ``CaseForwarded`` event's, its ``causation_id``)."""

    to: str = Field(description="The authority it was disclosed to, e.g. hc_forestry (披露对象)")
    fields: list[str] = Field(
        description="What of the applicant was disclosed, e.g. id_number, name, phone"
    )
    channel: str = Field(
        description="How: the subject of the department's requests, "
        "e.g. caseflow.dept.hc_forestry.requests"
    )
    reason: str = Field(description="Why (披露理由)")
    request_id: str = Field(
        description="The request's Nats-Msg-Id (the CaseForwarded event's id), as the "
        "department received it"
    )


class DepartmentRequest(_Payload):
    """A forwarded case, sent to its department on ``caseflow.dept.<authority>.requests``."""

    case_id: str
    case_number: str | None
    item_code: str | None
    item_version: int | None
    station: str | None
    authority: str
    deadline: str | None
    applicant: dict[str, object] | None
    materials: list[str]
    answer_subject: str = Field(
        description="caseflow.dept.<authority>.answers: answer on this subject followed by "
        "your credential's name (the credential file's answer_subject)"
    )


class DepartmentAnswer(BaseModel):
    """A department's decision on ``caseflow.dept.<authority>.answers.<credential>`` (set
    Nats-Msg-Id). Refused and recorded on the case if the case was not forwarded to that
    authority or is not awaiting its answer, or if the officer belongs to another
    organisation."""

    model_config = ConfigDict(extra="forbid")

    case_id: uuid.UUID
    outcome: Literal["approve", "reject"]
    officer: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^@\s]+(@[a-z][a-z0-9_]*)?$",
        description="The deciding officer: `user`, or `user@<authority>` (it must be the "
        "authority the credential answers for)",
    )
    reasons: list[str] = Field(default_factory=list, max_length=20)
    decision_number: str | None = Field(default=None, max_length=200)
    opinion: str | None = Field(default=None, max_length=2000)

    @field_validator("officer")
    @classmethod
    def _officer_reads_as_written(cls, value: str) -> str:
        # The same rules as a person's name: no control, bidi or invisible-only characters.
        if problem := person_name_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("reasons", "decision_number", "opinion")
    @classmethod
    def _plain_text(cls, value: str | list[str] | None) -> str | list[str] | None:
        # The rules an HTTP body's text meets at the edge (shared.web.http.InputGuardMiddleware).
        for text in [value] if isinstance(value, str) else value or []:
            if problem := text_problem(text):
                raise ValueError(problem)
        return value


PAYLOADS: dict[str, type[BaseModel]] = {
    "CaseReceived": CaseReceived,
    "CaseAccepted": CaseAccepted,
    "CorrectionRequested": CorrectionRequested,
    "NotificationSent": NotificationSent,
    "ActionRefused": ActionRefused,
    "TaskClaimed": TaskClaimed,
    "TaskReleased": TaskReleased,
    "ClockWarningRaised": ClockWarningRaised,
    "ForwardOverdue": ForwardOverdue,
    "VisitorReceived": VisitorReceived,
    "PersonalDataViewed": PersonalDataViewed,
    "PersonalDataDisclosed": PersonalDataDisclosed,
}
"""Payload models of events that are not a workflow action's body (those come from
``shared.domain.workflow.payloads``)."""

EARLIER_PAYLOADS: dict[tuple[str, int], type[BaseModel]] = {
    ("CaseReceived", 1): CaseReceivedV1,
}
"""Payload models of earlier schema versions still in the log: (event type, version)."""
