"""Delegation compliance for a station and a period, from the log alone. Pure.

Every action recorded on the station's cases under a power over a catalogue item, taken
in the period (by its ``occurred_at`` day in China, both ends included), is checked again
(:func:`shared.domain.audit.judge.judge`): within its delegation, the competent authority's own
act, outside any delegation, after revocation, while suspended, after expiry, or by a
wrong role; an event the workflow does not allow from the case's status then is listed as
``not_allowed`` and the case is read on as it stood before it. The refused attempts
(``ActionRefused``, on the station's cases and in the streams of refused openings by its
staff) are listed with their reasons.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from shared.domain.audit.judge import Judgement, Register, Use, judge, not_allowed
from shared.domain.events import StoredEvent
from shared.domain.workcalendar import local_date
from shared.domain.workflow.definitions import UnknownWorkflow
from shared.domain.workflow.reference import Reference
from shared.domain.workflow.state import CaseState, IllegalTransition, apply

ATTEMPT_KIND = "attempt"
"""The case kind of a refused opening's own stream (``CaseService._record_attempt``)."""
REFUSED = "ActionRefused"


@dataclasses.dataclass(frozen=True, slots=True)
class CheckedAction:
    """One recorded action under a power, checked again."""

    case_id: uuid.UUID
    case_number: str | None
    version: int
    position: int
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    actor_user: str
    actor_role: str
    actor_station: str | None
    authority: str | None
    delegation_id: str | None
    delegation_version: int | None
    item_code: str
    judgement: Judgement

    def row(self) -> dict[str, Any]:
        """Flat and JSON-ready (a CSV row)."""
        return {
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "case_number": self.case_number,
            "case_id": str(self.case_id),
            "version": self.version,
            "position": self.position,
            "event_type": self.event_type,
            "action": self.judgement.action,
            "item_code": self.item_code,
            "power": self.judgement.power,
            "actor_user": self.actor_user,
            "actor_role": self.actor_role,
            "actor_station": self.actor_station,
            "authority": self.authority,
            "delegation_id": self.delegation_id,
            "delegation_version": self.delegation_version,
            "use": self.judgement.use.value,
            "in_force_id": self.judgement.in_force_id,
            "in_force_version": self.judgement.in_force_version,
            "when_recorded": self.judgement.when_recorded.value
            if self.judgement.when_recorded
            else None,
            "message": self.judgement.message,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class RefusedAttempt:
    """An attempt the live system refused, as recorded."""

    case_id: uuid.UUID
    case_number: str | None
    version: int
    position: int
    occurred_at: datetime
    recorded_at: datetime
    actor_user: str
    actor_role: str
    actor_station: str | None
    action: str
    reason: str
    message: str

    def row(self) -> dict[str, Any]:
        """Flat and JSON-ready."""
        return {
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "case_number": self.case_number,
            "case_id": str(self.case_id),
            "version": self.version,
            "position": self.position,
            "action": self.action,
            "actor_user": self.actor_user,
            "actor_role": self.actor_role,
            "actor_station": self.actor_station,
            "reason": self.reason,
            "message": self.message,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ComplianceReport:
    """The report for one station and period."""

    station: str
    start: date
    end: date
    actions: tuple[CheckedAction, ...]
    refused: tuple[RefusedAttempt, ...]

    def counts(self) -> dict[str, int]:
        """How many actions of each kind of use (every kind listed, zeros too)."""
        found = Counter(a.judgement.use for a in self.actions)
        return {use.value: found.get(use, 0) for use in Use}

    @property
    def compliant(self) -> bool:
        """Every action within a delegation or the authority's own."""
        return all(a.judgement.legitimate for a in self.actions)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "station": self.station,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "period_means": "occurred_at, as a date in China; both days included",
            "compliant": self.compliant,
            "counts": self.counts(),
            "refused_count": len(self.refused),
            "actions": [a.row() for a in self.actions],
            "refused": [r.row() for r in self.refused],
        }

    def csv(self) -> str:
        """The actions and the refused attempts as CSV: one table, a ``record`` column
        telling them apart."""
        columns = [
            "record",
            "occurred_at",
            "recorded_at",
            "case_number",
            "case_id",
            "version",
            "position",
            "event_type",
            "action",
            "item_code",
            "power",
            "actor_user",
            "actor_role",
            "actor_station",
            "authority",
            "delegation_id",
            "delegation_version",
            "use",
            "in_force_id",
            "in_force_version",
            "when_recorded",
            "reason",
            "message",
        ]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for action in self.actions:
            writer.writerow(_inert({"record": "action", **action.row()}))
        for refused in self.refused:
            writer.writerow(_inert({"record": "refused", **refused.row()}))
        return out.getvalue()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(row: dict[str, Any]) -> dict[str, Any]:
    """The row with text that a spreadsheet would run as a formula (a user id or a
    message starting with ``=``, ``+``, ``-``, ``@``) kept as text: a leading ``'``, as
    OWASP advises against CSV injection. The auditor opens these files in Excel/WPS."""
    return {
        k: f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_START) else v
        for k, v in row.items()
    }


class ComplianceError(ValueError):
    """A case's events that can't be told as one history (names the event)."""


def check_period(start: date, end: date) -> None:
    """Refuse a period that ends before it starts, or whose days in China have no moment
    in UTC (the first and last days of the calendar)."""
    if end < start:
        raise ComplianceError(f"the period ends ({end}) before it starts ({start})")
    if start <= date.min or end >= date.max:
        raise ComplianceError(
            f"the period {start} to {end} is out of range: give days between "
            f"{date.min + timedelta(days=1)} and {date.max - timedelta(days=1)}"
        )


def _in_period(event: StoredEvent, start: date, end: date) -> bool:
    return start <= local_date(event.occurred_at) <= end


def compliance_report(
    histories: Iterable[Sequence[StoredEvent]],
    reference: Reference,
    register: Register,
    *,
    station: str,
    start: date,
    end: date,
) -> ComplianceReport:
    """The report for ``station`` from ``start`` to ``end`` (days in China, inclusive).

    ``histories`` are whole case streams (each in version order); cases of other
    stations, and events outside the period, are passed over.
    """
    check_period(start, end)
    actions: list[CheckedAction] = []
    refused: list[RefusedAttempt] = []
    for history in histories:
        if not history:
            continue
        if history[0].case_kind == ATTEMPT_KIND:
            refused += [
                _refused(e, None)
                for e in history
                if e.event_type == REFUSED
                and e.actor_station == station
                and _in_period(e, start, end)
            ]
            continue
        state = CaseState()
        for event in history:
            before = state
            judgement: Judgement | None
            try:
                state = apply(state, event, reference.workflows)
            except (IllegalTransition, UnknownWorkflow) as err:
                # A finding; the case is read on as it stood before the event.
                judgement = not_allowed(event, before, reference.workflows, err)
            else:
                judgement = None
            if (state.station or event.actor_station) != station or not _in_period(
                event, start, end
            ):
                continue
            if judgement is None:
                if event.event_type == REFUSED:
                    refused.append(_refused(event, state.case_number))
                    continue
                judgement = judge(
                    event,
                    before,
                    state,
                    workflows=reference.workflows,
                    catalogue=reference.catalogue,
                    register=register,
                )
            if judgement is None:
                continue
            actions.append(
                CheckedAction(
                    case_id=event.case_id,
                    case_number=state.case_number,
                    version=event.version,
                    position=event.position,
                    event_type=event.event_type,
                    occurred_at=event.occurred_at,
                    recorded_at=event.recorded_at,
                    actor_user=event.actor_user,
                    actor_role=event.actor_role,
                    actor_station=event.actor_station,
                    authority=event.authority,
                    delegation_id=event.delegation_id,
                    delegation_version=event.delegation_version,
                    item_code=state.item_code or "",
                    judgement=judgement,
                )
            )
    # Sorted by what the log says, not by where rows happen to sit in a database.
    actions.sort(key=lambda a: (a.occurred_at, str(a.case_id), a.version))
    refused.sort(key=lambda r: (r.occurred_at, str(r.case_id), r.version))
    return ComplianceReport(station, start, end, tuple(actions), tuple(refused))


def _refused(event: StoredEvent, case_number: str | None) -> RefusedAttempt:
    payload = event.payload
    return RefusedAttempt(
        case_id=event.case_id,
        case_number=case_number,
        version=event.version,
        position=event.position,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        actor_user=event.actor_user,
        actor_role=event.actor_role,
        actor_station=event.actor_station,
        action=str(payload.get("action", "")),
        reason=str(payload.get("reason", "")),
        message=str(payload.get("message", "")),
    )
