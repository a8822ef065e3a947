"""What the applicant is told, in Simplified Chinese with English alongside. Pure."""

from __future__ import annotations

import dataclasses

from shared.catalogue import ITEMS
from shared.messages import Applicant, CorrectionRequested


@dataclasses.dataclass(frozen=True)
class Message:
    """A rendered notice. The subject never carries personal data."""

    subject: str
    body: str
    language: str = "zh-CN"


def render(event_type: str, payload: dict[str, object], applicant: Applicant) -> Message:
    """The notice for an accepted case or a correction request."""
    item = ITEMS[str(payload["item_code"])]
    greeting = f"{applicant.name}，您好 / Dear {applicant.name},"
    if event_type == "CaseAccepted":
        return Message(
            subject=f"受理通知 / Application accepted: {item.name_zh}",
            body=(
                f"{greeting}\n您申请的「{item.name_zh}」已受理。\n"
                f"Your application for {item.name_en} has been accepted."
            ),
        )
    if event_type == "CorrectionRequested":
        missing = CorrectionRequested.model_validate(payload).missing
        lines = "\n".join(f"  - {m.name_zh} / {m.name_en}" for m in missing)
        return Message(
            subject=f"补正材料通知 / Materials missing: {item.name_zh}",
            body=(
                f"{greeting}\n您申请的「{item.name_zh}」还需补交以下全部材料：\n"
                f"Please bring all of the following for your {item.name_en} application:\n"
                f"{lines}"
            ),
        )
    raise ValueError(f"no message for {event_type}")
