"""Re-checking a recorded action against the delegation register, from the log alone. Pure.

The live system refuses a bad action before it is recorded (``CaseService.act``): the
workflow's role check, then :func:`shared.domain.delegation.check` for the step's power at that
moment. An auditor asks the same questions again of what *was* recorded, with the same
function, so that a log written by a faulty or bypassed writer shows up: an action by a
wrong role, outside any delegation, after the delegation was revoked, while it was
suspended, or after it expired.

The moment checked is the event's ``occurred_at`` (when the action took effect). For a
paper form entered late the live system checked at entry (``recorded_at``); when the
answer at that moment differs, it is given too (:attr:`Judgement.when_recorded`), and an
event citing the delegation version in force at entry is valid at entry
(:attr:`Judgement.at_entry_id`). An action covered by one instrument but citing another
(or another version) is ``wrong_instrument``.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from shared.domain.delegation import (
    DelegationState,
    Grant,
    Power,
    RefusalReason,
    check,
    fold_delegation,
)
from shared.domain.events import StoredEvent
from shared.domain.workflow.definitions import SYSTEM_ROLE, Transition, Workflow, WorkflowRegistry
from shared.domain.workflow.state import CaseState

Register = Sequence[DelegationState]
"""The delegation register: every instrument, folded from its stream in the log."""


class Use(enum.StrEnum):
    """How a recorded action stood against the delegations at its moment."""

    WITHIN = "within"
    """A delegation in force covered the item and the power."""
    OWN_COMPETENCE = "own_competence"
    """The competent authority acted itself: no delegation needed."""
    OUTSIDE = "outside"
    """No delegation covered the item and the power."""
    AFTER_REVOCATION = "after_revocation"
    WHILE_SUSPENDED = "while_suspended"
    EXPIRED = "expired"
    """The delegation's validity period did not contain the day."""
    WRONG_ROLE = "wrong_role"
    """The workflow does not let the actor's role take this step."""
    WRONG_INSTRUMENT = "wrong_instrument"
    """Covered then, but the event cites another delegation (or version) than the one in
    force, or cites one for the competent authority's own act."""
    UNKNOWN_ITEM = "unknown_item"
    """The case names a catalogue item (or version) the catalogue does not hold: the
    action can't be checked against any delegation."""
    NOT_ALLOWED = "not_allowed"
    """The workflow allows no such step from the case's status then (the case is read on
    as it stood before the event)."""


_BY_REFUSAL = {
    RefusalReason.OUTSIDE_DELEGATION: Use.OUTSIDE,
    RefusalReason.DELEGATION_REVOKED: Use.AFTER_REVOCATION,
    RefusalReason.DELEGATION_SUSPENDED: Use.WHILE_SUSPENDED,
    RefusalReason.DELEGATION_EXPIRED: Use.EXPIRED,
}


class ItemLookup(Protocol):
    """What the judge needs of the catalogue."""

    def get(self, code: str, version: int | None = None) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Judgement:
    """A recorded action under a power, checked again."""

    action: str
    power: str
    use: Use
    message: str
    checked_at: datetime
    in_force_id: str | None = None
    """The delegation that covered (or came closest to covering) the action then."""
    in_force_version: int | None = None
    when_recorded: Use | None = None
    """The answer at ``recorded_at`` when it differs (a late-entered paper form)."""
    at_entry_id: str | None = None
    """For a paper form entered late that cites the delegation in force when it was entered
    (the live system checks at entry) rather than the one in force when it took effect:
    that delegation, accepted as valid at entry."""
    at_entry_version: int | None = None

    @property
    def legitimate(self) -> bool:
        """Within a delegation, or the competent authority's own act."""
        return self.use in (Use.WITHIN, Use.OWN_COMPETENCE)

    def valid_for(self, delegation_id: str | None, delegation_version: int | None) -> bool:
        """Whether the delegation the event recorded is the one in force then."""
        if self.use is Use.OWN_COMPETENCE:
            return delegation_id is None
        cited = (delegation_id, delegation_version)
        return self.use is Use.WITHIN and (
            cited == (self.in_force_id, self.in_force_version)
            or (self.at_entry_id is not None and cited == (self.at_entry_id, self.at_entry_version))
        )

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "action": self.action,
            "power": self.power,
            "use": self.use.value,
            "message": self.message,
            "checked_at": self.checked_at.isoformat(),
            "in_force_id": self.in_force_id,
            "in_force_version": self.in_force_version,
            "when_recorded": self.when_recorded.value if self.when_recorded else None,
            "valid_at_entry": {"id": self.at_entry_id, "version": self.at_entry_version}
            if self.at_entry_id
            else None,
        }


def register_from(events: Iterable[StoredEvent]) -> list[DelegationState]:
    """The register folded from delegation events (any order across streams; each
    stream's events in version order), by code."""
    streams: dict[uuid.UUID, list[StoredEvent]] = defaultdict(list)
    for event in events:
        streams[event.case_id].append(event)
    states = []
    for stream in streams.values():
        state = fold_delegation(sorted(stream, key=lambda e: e.version))
        if state is not None:
            states.append(state)
    return sorted(states, key=lambda s: s.code)


def step_of(workflow: Workflow, status_before: str, event: StoredEvent) -> Transition | None:
    """The workflow step that recorded ``event`` from ``status_before`` (None for facts
    outside the table: notifications, claims, refusals, reads)."""
    if status_before == "" and event.event_type == workflow.start.event:
        return workflow.start
    action = event.payload.get("action")
    candidates = [
        step
        for step in workflow.transitions
        if step.event == event.event_type and status_before in step.from_
    ]
    for step in candidates:
        if step.action == action:
            return step
    return candidates[0] if candidates else None


def judge(
    event: StoredEvent,
    before: CaseState,
    after: CaseState,
    *,
    workflows: WorkflowRegistry,
    catalogue: ItemLookup,
    register: Register,
    until: datetime | None = None,
) -> Judgement | None:
    """Check ``event`` again, if it is a staff action under a power over a catalogue item.

    ``before`` and ``after`` are the case's states around the event. None for facts, the
    system's own steps (timers: steps the workflow gives the ``system`` role) and matters
    (no catalogue item, no delegation). With ``until`` (a timeline as of a moment), the
    check at ``recorded_at`` is made only if that moment is not later.
    """
    if not after.workflow or not after.workflow_version:
        return None
    if after.item_code is None:
        return None
    workflow = workflows.get(after.workflow, after.workflow_version)
    step = step_of(workflow, before.status, event)
    if step is None or step.power is None:
        return None
    if event.actor_role == SYSTEM_ROLE and SYSTEM_ROLE in step.roles:
        return None  # the system's own step; any other "by the system" is a wrong role
    try:
        item = catalogue.get(after.item_code, after.item_version)
    except LookupError as err:
        return Judgement(
            action=step.action,
            power=step.power,
            use=Use.UNKNOWN_ITEM,
            message=f"the catalogue does not hold the case's item ({err}): nothing to check it by",
            checked_at=event.occurred_at,
        )
    if event.actor_role not in step.roles:
        return Judgement(
            action=step.action,
            power=step.power,
            use=Use.WRONG_ROLE,
            message=(
                f"{step.action} must be done by: {', '.join(step.roles)} (not {event.actor_role})"
            ),
            checked_at=event.occurred_at,
        )
    first = _as_cited(event, _verdict(event, item, Power(step.power), register, event.occurred_at))
    use, message, code, version = first
    when_recorded = None
    at_entry: tuple[str | None, int | None] = (None, None)
    if event.recorded_at != event.occurred_at and (until is None or event.recorded_at <= until):
        entry = _verdict(event, item, Power(step.power), register, event.recorded_at)
        cited = (event.delegation_id, event.delegation_version)
        if use is Use.WRONG_INSTRUMENT and entry[0] is Use.WITHIN and cited == entry[2:]:
            # Entered late under the version in force at entry, as the live system checks.
            use, at_entry = Use.WITHIN, cited
            message += (
                f"; that is the version in force when the event was entered "
                f"({event.recorded_at.isoformat()}), which the live system checks: "
                "valid at entry"
            )
        later = _as_cited(event, entry)[0]
        when_recorded = later if later is not use else None
    return Judgement(
        action=step.action,
        power=step.power,
        use=use,
        message=message,
        checked_at=event.occurred_at,
        in_force_id=code,
        in_force_version=version,
        when_recorded=when_recorded,
        at_entry_id=at_entry[0],
        at_entry_version=at_entry[1],
    )


def not_allowed(
    event: StoredEvent, before: CaseState, workflows: WorkflowRegistry, error: Exception
) -> Judgement:
    """The verdict on an event the workflow table does not allow after ``before`` (or
    that names a workflow there is none of): a finding, not the end of the story."""
    action = str(event.payload.get("action") or event.event_type)
    power = ""
    if before.workflow and before.workflow_version:
        try:
            workflow = workflows.get(before.workflow, before.workflow_version)
        except LookupError:
            workflow = None
        if workflow is not None:
            steps = [s for s in workflow.transitions if s.event == event.event_type]
            named = [s for s in steps if s.action == action] or steps
            power = (named[0].power or "") if named else ""
    status = before.status or "new"
    return Judgement(
        action=action,
        power=power,
        use=Use.NOT_ALLOWED,
        message=(
            f"not allowed by the workflow from status {status} ({error}); "
            f"the case is read on as it stood before this event"
        ),
        checked_at=event.occurred_at,
    )


Verdict = tuple[Use, str, str | None, int | None]
"""How the action stood, why, and the delegation (id, version) in force for it."""


def _as_cited(event: StoredEvent, verdict: Verdict) -> Verdict:
    """``verdict`` against the delegation the event cites: an action covered by one
    instrument but citing another (or an older version, or any for the authority's own
    act) did not rest on what it claims."""
    use, message, code, version = verdict
    cited = (event.delegation_id, event.delegation_version)
    if use is Use.WITHIN and cited != (code, version):
        return Use.WRONG_INSTRUMENT, message, code, version
    if use is Use.OWN_COMPETENCE and event.delegation_id is not None:
        message += (
            f"; yet the event cites {event.delegation_id} (version {event.delegation_version})"
        )
        return Use.WRONG_INSTRUMENT, message, code, version
    return verdict


def _verdict(
    event: StoredEvent, item: Any, power: Power, register: Register, at: datetime
) -> Verdict:
    org = event.actor_station
    if not org:
        return Use.OUTSIDE, "the event names no organisation for its actor", None, None
    result = check(
        register,
        org=org,
        competent_authority=item.authority,
        item_code=item.code,
        power=power,
        at=at,
    )
    if isinstance(result, Grant):
        if result.delegation_code is None:
            return Use.OWN_COMPETENCE, f"{org} is the competent authority", None, None
        message = (
            f"delegation {result.delegation_code} (version {result.delegation_version}) "
            f"grants {org} {power.value} over {item.code}"
        )
        if (event.delegation_id, event.delegation_version) != (
            result.delegation_code,
            result.delegation_version,
        ):
            recorded = event.delegation_id or "none"
            message += f"; the event recorded {recorded} (version {event.delegation_version})"
        return Use.WITHIN, message, result.delegation_code, result.delegation_version
    return (
        _BY_REFUSAL.get(result.reason, Use.OUTSIDE),
        result.message,
        result.delegation_code,
        result.delegation_version,
    )
