"""What the applicant is told, in Simplified Chinese with English alongside. Pure."""

from __future__ import annotations

import dataclasses
import functools

from shared.catalogue import Catalogue, load_catalogue
from shared.messages import Applicant, CorrectionRequested


@functools.cache
def _catalogue() -> Catalogue:
    return load_catalogue()


@dataclasses.dataclass(frozen=True)
class Message:
    """A rendered notice. The subject never carries personal data."""

    subject: str
    body: str
    language: str = "zh-CN"


def render(event_type: str, payload: dict[str, object], applicant: Applicant) -> Message:
    """The notice for an accepted case or a correction request."""
    version = payload.get("item_version")
    item = _catalogue().get(str(payload["item_code"]), int(str(version)) if version else None)
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
        notice = CorrectionRequested.model_validate(payload)
        lines = "\n".join(
            f"  - {m.name_zh} / {m.name_en}" + (f"（{m.reason}）" if m.reason else "")
            for m in notice.missing
        )
        if notice.deadline:
            lines += f"\n请于 {notice.deadline} 前补交 / Please bring them by {notice.deadline}."
        return Message(
            subject=f"补正材料通知 / Materials missing: {item.name_zh}",
            body=(
                f"{greeting}\n您申请的「{item.name_zh}」还需补交以下全部材料：\n"
                f"Please bring all of the following for your {item.name_en} application:\n"
                f"{lines}"
            ),
        )
    raise ValueError(f"no message for {event_type}")
