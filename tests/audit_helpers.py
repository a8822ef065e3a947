"""Cases and delegations written event by event, for the audit's tests: as stored events
(with a chosen ``recorded_at``) for the pure functions, or as new events to append to a
real log — the way a faulty or bypassed writer would, since the live system refuses the
bad actions these tests need."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from shared.domain.delegation import (
    CASE_KIND,
    DelegationState,
    Instrument,
    Mode,
    Power,
    fold_delegation,
)
from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.workcalendar import CHINA_TZ

STATION = "xuefeng_station"
CLERK = Actor(user="li.clerk", role="window_clerk", station=STATION)
REVIEWER = Actor(user="wang.reviewer", role="reviewer", station=STATION)
HEAD = Actor(user="zhao.head", role="station_head", station=STATION)
OFFICER = Actor(user="li.officer", role="department_officer", station="hc_hrss")
ID_NUMBER = "11010519491231002X"
PHONE = "13812345678"
APPLICANT = {"name": "王秀英", "phone": PHONE, "id_number": ID_NUMBER}
NAMESPACE = uuid.UUID("a0d1c5e2-3b7f-4f0e-8d55-2c9b6f1e7a44")


def china(month: int, day: int, hour: int = 9, minute: int = 0, year: int = 2026) -> datetime:
    """A moment in China (the station's clock)."""
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ)


def instrument(code: str = "hrss-audit-2026", **changes: Any) -> Instrument:
    """An entrusted instrument of the city's HRSS bureau to the Xuefeng station."""
    fields: dict[str, Any] = {
        "code": code,
        "delegator": "hc_hrss",
        "delegate": STATION,
        "mode": Mode.ENTRUSTED,
        "items": ["funeral_subsidy", "pension_enrolment"],
        "powers": [Power.RECEIVE, Power.ACCEPT, Power.REVIEW, Power.DECIDE, Power.DELIVER],
        "legal_basis": "《中华人民共和国行政许可法》第二十四条",
        "document_number": "韩人社发〔2026〕45号",
        "published_on": date(2026, 1, 5),
        "valid_from": date(2026, 1, 5),
        "valid_until": None,
    }
    fields.update(changes)
    return Instrument(**fields)


def stored(
    new: NewEvent,
    *,
    case_id: uuid.UUID,
    case_kind: str,
    version: int,
    position: int,
    recorded_at: datetime | None = None,
) -> StoredEvent:
    """``new`` as the log would hold it (``recorded_at`` defaults to ``occurred_at``)."""
    assert new.occurred_at is not None
    return StoredEvent(
        position=position,
        event_id=new.event_id,
        case_id=case_id,
        case_kind=case_kind,
        version=version,
        event_type=new.event_type,
        schema_version=new.schema_version,
        occurred_at=new.occurred_at,
        recorded_at=recorded_at or new.occurred_at,
        actor_user=new.actor.user,
        actor_role=new.actor.role,
        actor_station=new.actor.station,
        authority=new.authority,
        delegation_id=new.delegation_id,
        delegation_version=new.delegation_version,
        correlation_id=new.correlation_id,
        causation_id=new.causation_id,
        payload=new.payload,
        prev_hash=None,
        hash="0" * 64,
    )


class Stream:
    """An instrument's stream without a database; each event may be recorded later than
    it took effect."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.case_id = uuid.uuid5(NAMESPACE, f"delegation:{code}")
        self.events: list[StoredEvent] = []

    @property
    def state(self) -> DelegationState | None:
        return fold_delegation(self.events)

    def do(
        self,
        decide: Callable[[DelegationState | None], list[NewEvent]],
        recorded_at: datetime | None = None,
    ) -> StoredEvent:
        (new,) = decide(self.state)
        event = stored(
            new,
            case_id=self.case_id,
            case_kind=CASE_KIND,
            version=len(self.events) + 1,
            position=10_000 + len(self.events),
            recorded_at=recorded_at,
        )
        self.events.append(event)
        return event


@dataclasses.dataclass
class CaseScript:
    """A case of a station-completed item, written event by event."""

    number: str
    item_code: str = "funeral_subsidy"
    station: str = STATION
    workflow: str = "station_item"
    case_id: uuid.UUID = dataclasses.field(init=False)
    drafts: list[tuple[NewEvent, datetime | None]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.case_id = uuid.uuid5(NAMESPACE, self.number)

    def add(
        self,
        event_type: str,
        at: datetime,
        who: Actor,
        *,
        action: str | None = None,
        delegation: tuple[str, int] | None = None,
        recorded_at: datetime | None = None,
        authority: str | None = "hc_hrss",
        **payload: Any,
    ) -> CaseScript:
        """Write one more event (an action if ``action`` is given)."""
        body = dict(payload)
        if action is not None:
            body["action"] = action
        if not self.drafts:
            body.update(
                item_code=self.item_code,
                item_version=1,
                case_number=self.number,
                station=self.station,
                workflow={"name": self.workflow, "version": 1},
                applicant=APPLICANT,
                materials=[],
                channels=["sms"],
                language="zh-CN",
            )
        event = NewEvent(
            event_id=uuid.uuid5(self.case_id, str(len(self.drafts) + 1)),
            event_type=event_type,
            schema_version=2 if event_type == "CaseReceived" else 1,
            occurred_at=at,
            actor=who,
            authority=authority,
            delegation_id=delegation[0] if delegation else None,
            delegation_version=delegation[1] if delegation else None,
            payload=body,
        )
        self.drafts.append((event, recorded_at))
        return self

    def new_events(self) -> list[NewEvent]:
        """To append to a real log (it sets ``recorded_at`` itself)."""
        return [event for event, _ in self.drafts]

    def stored(self, first_position: int = 1) -> list[StoredEvent]:
        """As the log would hold them."""
        return [
            stored(
                event,
                case_id=self.case_id,
                case_kind="application",
                version=i,
                position=first_position + i - 1,
                recorded_at=recorded,
            )
            for i, (event, recorded) in enumerate(self.drafts, 1)
        ]


def received_and_accepted(
    script: CaseScript,
    at: datetime,
    delegation: tuple[str, int],
    recorded_at: datetime | None = None,
) -> CaseScript:
    """The window's usual pair: receipt and acceptance in the same moment."""
    script.add(
        "CaseReceived",
        at,
        CLERK,
        action="receive",
        delegation=delegation,
        recorded_at=recorded_at,
    )
    return script.add(
        "CaseAccepted",
        at,
        CLERK,
        action="accept",
        delegation=delegation,
        recorded_at=recorded_at,
        accepted_on=at.date().isoformat(),
        item_code=script.item_code,
    )
