"""What staff send with each action, validated at the edge.

The bodies of ``POST /cases/{id}/actions/{action}``. Reasons are mandatory where the law
asks for one: refusals, extensions, suspensions, withdrawals and reopenings.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.events import utcnow
from shared.domain.workcalendar import local_date

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=500)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]

EARLIEST = date(2000, 1, 1)
"""No station's records go back further (a date before it is a typo)."""


def _held_already(value: date) -> date:
    if value > local_date(utcnow()):
        raise ValueError("a session is recorded once held: not a future date (不能是将来的日期)")
    if value < EARLIEST:
        raise ValueError(f"not before {EARLIEST.isoformat()}; check the date (日期有误)")
    return value


HeldOn = Annotated[date, AfterValidator(_held_already)]


class ActionBody(BaseModel):
    """Base of every action body."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(ActionBody):
    """No details needed."""

    note: Note | None = None


class DefectiveMaterial(ActionBody):
    """A material handed in that can't be used as it is."""

    code: Code
    reason: Reason


class RequestCorrection(ActionBody):
    """Send the one-time notice (一次性告知). Missing materials are found by the system;
    the clerk adds those handed in but defective."""

    defective: list[DefectiveMaterial] = Field(default_factory=list, max_length=50)
    note: Note | None = None


class SubmitCorrection(ActionBody):
    """The applicant brought what the notice listed."""

    materials: list[Code] = Field(min_length=1, max_length=50)


class Refuse(ActionBody):
    """Not accepted (不予受理), with the reason and where to apply instead."""

    reason: Reason
    apply_instead_at: Note | None = None


class Suspend(ActionBody):
    """Stop the clock (§45): hearing, testing, expert review, or another legal reason."""

    kind: Literal["hearing", "testing", "expert_review", "other"]
    reason: Reason


class Resume(ActionBody):
    """Restart the clock."""

    note: Note | None = None


class Extend(ActionBody):
    """The one extension of 10 working days (§42), approved by the acting head."""

    reason: Reason


class CompleteReview(ActionBody):
    """The reviewer's opinion."""

    recommendation: Literal["approve", "reject"]
    opinion: Reason


class Approve(ActionBody):
    """Approve (准予)."""

    decision_number: Note | None = None
    opinion: Note | None = None


class Reject(ActionBody):
    """Reject (不予), with every reason."""

    reasons: list[Reason] = Field(min_length=1, max_length=20)
    decision_number: Note | None = None


class Forward(ActionBody):
    """Send the case to the competent authority."""

    note: Note | None = None


class Deliver(ActionBody):
    """Deliver the decision (送达)."""

    method: Literal["in_person", "post", "electronic", "by_proxy"]
    note: Note | None = None


class Withdraw(ActionBody):
    """The applicant withdraws the application."""

    reason: Reason


class Reopen(ActionBody):
    """Reopen a closed case (special permission)."""

    reason: Reason


class Rate(ActionBody):
    """The applicant's satisfaction rating (好差评), one per case."""

    score: int = Field(ge=1, le=5)
    comment: Note | None = None


class TaskRef(ActionBody):
    """Claim or release the case's open task."""

    task: Code | None = None


class CompleteCallback(ActionBody):
    """The station head called the applicant back after a poor rating."""

    notes: Reason


class HoldSession(ActionBody):
    """A mediation session."""

    held_on: HeldOn | None = None
    notes: Reason


class Conclude(ActionBody):
    """The end of a mediation."""

    outcome: Literal["agreement", "no_agreement", "referred"]
    summary: Reason


class HoldPublicity(ActionBody):
    """A legal-publicity session was held."""

    attendees: int = Field(ge=0, le=100_000)
    held_on: HeldOn | None = None
    notes: Note | None = None


class Provide(ActionBody):
    """Assistance was given."""

    description: Reason
    case_solved: bool | None = None


BODIES: dict[str, type[ActionBody]] = {
    "accept": Empty,
    "deem_accepted": Empty,
    "request_correction": RequestCorrection,
    "submit_correction": SubmitCorrection,
    "refuse": Refuse,
    "start_review": Empty,
    "suspend": Suspend,
    "resume": Resume,
    "extend": Extend,
    "complete_review": CompleteReview,
    "sign_off": Empty,
    "approve": Approve,
    "reject": Reject,
    "forward": Forward,
    "deliver": Deliver,
    "rate": Rate,
    "close": Empty,
    "withdraw": Withdraw,
    "reopen": Reopen,
    "claim": TaskRef,
    "release": TaskRef,
    "complete_callback": CompleteCallback,
    "hold_session": HoldSession,
    "conclude": Conclude,
    "hold": HoldPublicity,
    "provide": Provide,
}
"""Each action's body. An action a workflow names but that is missing here takes ``Empty``."""

TASK_ACTIONS = frozenset({"claim", "release", "complete_callback"})
"""Actions on a case's tasks rather than its status; every workflow has them."""

APPEAL_NOTICE_ZH = (
    "如不服本决定，可以自收到本决定之日起六十日内依法申请行政复议，"
    "或者六个月内依法向人民法院提起行政诉讼。"
)
APPEAL_NOTICE_EN = (
    "If you disagree with this decision you may apply for administrative reconsideration "
    "within 60 days of receiving it, or bring an administrative lawsuit before the "
    "people's court within 6 months."
)


def body_for(action: str) -> type[ActionBody]:
    """The body model of ``action``."""
    return BODIES.get(action, Empty)
