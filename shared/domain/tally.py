"""What each event adds to the station statistics and the delegation usage. No I/O.

An event's contribution depends only on the event and on its case as it stood before it
(the fold of ``shared.domain.workflow.state``), so the counters of a period are the same however
the log is cut into batches: each event is counted once, on the day (in China) it
occurred, under its case's station, kind and item.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Protocol

from shared.domain.events import StoredEvent
from shared.domain.moments import PAPER_SESSION, aware, entered_late
from shared.domain.workcalendar import local_date
from shared.domain.workflow import clock as clocks
from shared.domain.workflow.definitions import Workflow, WorkflowRegistry
from shared.domain.workflow.state import Clock

APPLICATION = "application"
RECEPTION = "reception"
VISITOR = "visitor"
"""The rows of distinct people received: the item is a person's key (:func:`person_key`),
``received`` their visits that day."""
ATTEMPT = "attempt"
"""The case kind of a refused opening's own stream."""
MATTER_KINDS = ("mediation", "legal_publicity", "assistance", "police_assistance")
CASE_KINDS = (APPLICATION, *MATTER_KINDS)
"""Kinds of case with a workflow, whose state the statistics follow."""

MATTER_DONE = frozenset(
    {"MediationConcluded", "SessionHeld", "AssistanceProvided", "PoliceAssistanceProvided"}
)
"""The event that completes a matter at the station (调解结案、宣传举办、帮扶到位、协助完成)."""
DECISIONS = {"CaseApproved": "approved", "CaseRejected": "rejected"}
COUNTED = {
    "CaseAccepted": "accepted",
    "CaseDeemedAccepted": "accepted",
    "CorrectionRequested": "corrections",
    "CaseNotAccepted": "not_accepted",
    "CaseWithdrawn": "withdrawn",
    "CaseForwarded": "forwarded",
    "CaseDelivered": "delivered",
}
"""Events counted as such, under the measure named."""
POOR_RATING = 2
"""A score this low or lower is a poor rating (差评) and opens a call-back."""

StatisticsKey = tuple[str, date, str, str]
"""(station, day, case kind, item)."""
UsageKey = tuple[str, int, str, str, str, date]
"""(delegation id, delegation version, station, item, power, day)."""
Deltas = dict[str, int]


class CatalogueLike(Protocol):
    """The catalogue, for limits an old acceptance receipt may not carry."""

    def get(self, code: str, version: int | None = None) -> Any: ...


@dataclasses.dataclass(slots=True)
class CaseTally:
    """What the statistics keep of one case: where it stands in its workflow, its
    working-day clock and the limits the clock runs to.

    The status moves by the pinned workflow's own transition table and the clock by the
    workflow's clock rule and :class:`shared.domain.workflow.state.Clock`, exactly as the case's
    fold (``shared.domain.workflow.state.apply``) moves them; only what the statistics need is
    kept, so that a rebuild stays cheap per event (the full fold copies a large state per
    event). ``seen`` is the version of the case's last event taken into account."""

    seen: int = 0
    workflow: Workflow | None = None
    station: str = ""
    item_code: str | None = None
    item_version: int | None = None
    status: str = ""
    clock: Clock = dataclasses.field(default_factory=Clock)
    committed: int | None = None
    legal: int | None = None
    people: int = 1
    """People the matter covers (an assistance matter may help several)."""
    entered_late_at: datetime | None = None
    """When the case's latest act entered later from a paper record (补录) was recorded."""


class StatisticsTally:
    """Folds events into :class:`CaseTally` records and says what each adds."""

    def __init__(
        self,
        workflows: WorkflowRegistry,
        calendar: clocks.Calendar,
        catalogue: CatalogueLike | None = None,
    ) -> None:
        self.workflows = workflows
        self.calendar = calendar
        self.catalogue = catalogue
        self._workflows: dict[tuple[str, int], Workflow | None] = {}

    def workflow(self, pinned: Any) -> Workflow | None:
        """The workflow a case pinned (``{"name", "version"}``), if it is known."""
        if not isinstance(pinned, dict) or not pinned.get("name") or not pinned.get("version"):
            return None
        key = (str(pinned["name"]), int(pinned["version"]))
        if key not in self._workflows:
            try:
                self._workflows[key] = self.workflows.get(*key)
            except LookupError:
                self._workflows[key] = None
        return self._workflows[key]

    def visit(self, event: StoredEvent) -> list[tuple[StatisticsKey, Deltas]]:
        """A visitor in the reception log (kind ``reception``): one visit (人次) under its
        purpose, and one under the person (:data:`VISITOR`), to count distinct people."""
        payload = event.payload
        station = payload.get("station") or event.actor_station or ""
        purpose = str(payload.get("purpose") or "")
        day = local_date(event.occurred_at)
        visit: Deltas = {"received": 1}
        if entered_late(event):
            visit["backfilled"] = 1
        return [
            ((station, day, RECEPTION, purpose), visit),
            ((station, day, VISITOR, person_key(payload)), {"received": 1}),
        ]

    def step(self, case: CaseTally, event: StoredEvent) -> tuple[StatisticsKey, Deltas] | None:
        """Take ``event`` (the case's next one) into ``case``; what it adds, if anything."""
        first = case.seen == 0
        case.seen = event.version
        kind = event.event_type
        payload = event.payload
        if first:
            case.workflow = self.workflow(payload.get("workflow"))
            case.station = payload.get("station") or event.actor_station or ""
            case.item_code = payload.get("item_code")
            case.item_version = payload.get("item_version")
            case.people = max(1, int(payload.get("people_helped") or 1))
        workflow = case.workflow
        if workflow is None or kind not in workflow.event_types:
            return None  # a fact that moves nothing counted: notices, claims, warnings…
        before = case.status
        after = workflow.table.get((before, kind))
        if after is None:
            return None  # the table does not allow it: the audit reports it, we count nothing
        case.status = after
        day = local_date(event.occurred_at)
        rule = workflow.clock
        if rule is not None:
            clock = case.clock
            if kind in rule.starts:
                started = payload.get("accepted_on")
                on = date.fromisoformat(started) if isinstance(started, str) else day
                case.clock = clock.start(on, event.version)
            elif kind in rule.pauses:
                case.clock = clock.pause(day)
            elif kind in rule.resumes:
                case.clock = clock.resume(day, event.version)
            elif kind in rule.stops:
                case.clock = clock.stop(day)
        deltas: Deltas
        if first:
            deltas = {"received": 1}
        elif kind in COUNTED:
            deltas = {COUNTED[kind]: 1}
            if kind in ("CaseAccepted", "CaseDeemedAccepted"):
                self._limits(case, payload)
        elif kind in DECISIONS:
            upstream = before == "forwarded"
            deltas = {
                DECISIONS[kind]: 1,
                "completed_upstream" if upstream else "completed_at_station": 1,
                **self._timing(case, day),
            }
            if deltas.get("timed") and _undated(case, event):
                deltas["undated_decisions"] = 1
        elif kind in MATTER_DONE:
            deltas = {"completed_at_station": 1}
            if kind == "AssistanceProvided":
                deltas["people_helped"] = case.people
            elif kind == "PoliceAssistanceProvided" and payload.get("case_solved") is True:
                deltas["cases_solved"] = 1
        elif kind == "SatisfactionRated":
            score = int(payload.get("score", 0))
            deltas = {"ratings": 1, "rating_sum": score, "poor_ratings": int(score <= POOR_RATING)}
        elif kind == "DeadlineExtended":
            case.clock = case.clock.extend(int(payload.get("days", 0)), event.version)
            deltas = {}
        else:
            deltas = {}  # a step counted by nothing else (a review, a session held …)
        if entered_late(event):  # every step of the workflow entered from paper is counted
            deltas["backfilled"] = 1
            case.entered_late_at = aware(event.recorded_at)
        if not deltas:
            return None
        item = (case.item_code or "") if event.case_kind == APPLICATION else ""
        return (case.station, day, event.case_kind, item), deltas

    def _limits(self, case: CaseTally, receipt: Mapping[str, Any]) -> None:
        committed = receipt.get("committed_limit_days")
        legal = receipt.get("legal_limit_days")
        if (committed is None or legal is None) and self.catalogue and case.item_code:
            try:
                item = self.catalogue.get(case.item_code, case.item_version)
            except LookupError:
                item = None
            if item is not None:
                committed = committed if committed is not None else item.committed_limit_days
                legal = legal if legal is not None else item.legal_limit_days
        case.committed = int(committed) if committed is not None else None
        case.legal = int(legal) if legal is not None else None

    def _timing(self, case: CaseTally, day: date) -> Deltas:
        clock = case.clock
        if clock.started_on is None or case.committed is None or case.legal is None:
            return {}
        try:
            reading = clocks.read(
                clock,
                committed=case.committed,
                legal=case.legal,
                calendar=self.calendar,
                today=day,
            )
        except ValueError:  # a day outside the holiday calendar: not timed, not guessed
            return {}
        return {
            "timed": 1,
            "working_days": reading.used,
            "on_time_committed": int(reading.used <= reading.limit),
            "on_time_legal": int(reading.used <= reading.legal_limit),
        }


def _undated(case: CaseTally, decision: StoredEvent) -> bool:
    """A decision recorded as it was taken, while its case's paper file was being entered
    (within a day of an act entered later): most likely a paper decision entered without
    its moment, whose working days then run to the day of entry."""
    if case.entered_late_at is None or entered_late(decision):
        return False
    return aware(decision.recorded_at) - case.entered_late_at <= PAPER_SESSION


def person_key(visit: Mapping[str, Any]) -> str:
    """Who a visitor is, to count people apart from visits: their ID number where the clerk
    took it, else their name and village. A pseudonymous key (a hash): the statistics'
    columns never hold the number or the name, but ID numbers are few enough to be found
    again from it by trying them all, so the statistics table is guarded as the log is
    (which holds the numbers themselves)."""
    number = str(visit.get("id_number") or "").strip().upper()
    if number:
        who = f"id:{number}"
    else:
        name = "".join(str(visit.get("visitor_name") or "").split())
        who = f"name:{name}|{visit.get('village') or ''}"
    return hashlib.sha256(f"caseflow-visitor:{who}".encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class CaseHeader:
    """What delegation usage needs of a case: its station, item and workflow."""

    station: str
    item: str
    workflow: str | None
    workflow_version: int | None

    @classmethod
    def of(cls, first: StoredEvent) -> CaseHeader:
        """From the case's first event."""
        payload = first.payload
        pinned = payload.get("workflow") or {}
        return cls(
            station=payload.get("station") or first.actor_station or "",
            item=payload.get("item_code") or "",
            workflow=pinned.get("name") if isinstance(pinned, dict) else None,
            workflow_version=pinned.get("version") if isinstance(pinned, dict) else None,
        )


def cites_delegation(event: StoredEvent) -> bool:
    """Whether ``event`` is an action under a delegation or a refused attempt citing one."""
    if event.event_type == "ActionRefused":
        return bool(event.payload.get("delegation_id") or event.delegation_id)
    return event.delegation_id is not None


class UsageTally:
    """Says what an event adds to the usage of the delegation it was taken under."""

    def __init__(self, workflows: WorkflowRegistry) -> None:
        self.workflows = workflows
        self._powers: dict[tuple[str, int], dict[str, str]] = {}

    def power(self, header: CaseHeader, action: str | None) -> str:
        """The delegated power the workflow's action uses (``''`` if none)."""
        if not header.workflow or not header.workflow_version or not action:
            return ""
        key = (header.workflow, header.workflow_version)
        if key not in self._powers:
            try:
                workflow = self.workflows.get(*key)
            except LookupError:
                self._powers[key] = {}
            else:
                steps = (workflow.start, *workflow.transitions)
                self._powers[key] = {s.action: s.power or "" for s in reversed(steps)}
        return self._powers[key].get(action, "")

    def step(self, header: CaseHeader | None, event: StoredEvent) -> tuple[UsageKey, Deltas] | None:
        """What ``event`` adds; ``header`` is its case's (None for a refused opening)."""
        if not cites_delegation(event):
            return None
        payload = event.payload
        day = local_date(event.occurred_at)
        if header is None:
            station = event.actor_station or ""
            header = CaseHeader(station, payload.get("item_code") or "", None, None)
        if event.event_type == "ActionRefused":
            delegation = str(payload.get("delegation_id") or event.delegation_id)
            version = payload.get("delegation_version") or event.delegation_version or 0
            power = payload.get("power") or self.power(header, payload.get("action"))
            measure = "refused"
        else:
            delegation = str(event.delegation_id)
            version = event.delegation_version or 0
            power = self.power(header, payload.get("action"))
            measure = "actions"
        key = (delegation, int(version), header.station, header.item, str(power), day)
        return key, {measure: 1}


def add(totals: dict[Any, Deltas], key: Any, deltas: Deltas) -> None:
    """Add ``deltas`` to the running totals under ``key``."""
    row = totals.get(key)
    if row is None:
        totals[key] = dict(deltas)
        return
    for name, value in deltas.items():
        row[name] = row.get(name, 0) + value
