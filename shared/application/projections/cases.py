"""The case lists and worklists: ``case_index`` (a row per case) and ``tasks`` (its open
tasks), as the fold of each case's events says.

Each case's folded state is kept in memory across batches (bounded; the least recently
touched cases are dropped first), so a batch applies each event once with
``shared.domain.workflow.state.apply`` and writes the rows of the cases it touched in bulk. A
case whose earlier events this projection has not seen (dropped from memory, or a new
runner, or events read out of version order: a transaction that took its id early may
append version 6 of a case that sorts before version 5 in the log's read order) is
folded again from the log, which then already includes the later events. Either way the
rows of a case equal the fold of a version-contiguous prefix of its events, and once
the log has been read to the end, the fold of all of them.

A case whose events can't be folded (an event its status forbids, a payload newer than
this code) keeps the state before that event, in live runs and rebuilds alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.eventlog.store import read_cases_in
from shared.adapters.tables.workflow import case_index, tasks
from shared.domain.events import StoredEvent
from shared.domain.upcasting import UpcastError, upcast
from shared.domain.workflow.definitions import Workflow, WorkflowRegistry
from shared.domain.workflow.state import CaseState, IllegalTransition, apply

log = structlog.get_logger("caseflow.projections")

CASE_KINDS = ("application", "mediation", "legal_publicity", "assistance", "police_assistance")
"""Kinds of case that have a workflow and are listed with their tasks."""
RECEPTION = "reception"
"""Visitors in the reception log: listed with the cases (one event each)."""


# -- rows (pure) ---------------------------------------------------------------------------


def summary(state: CaseState) -> dict[str, object]:
    """A small JSON summary for lists (no personal data beyond the name)."""
    return {
        "outcome": state.outcome,
        "rating": state.rating,
        "accepted_on": state.accepted_on.isoformat() if state.accepted_on else None,
        "clock_started_on": state.clock.started_on.isoformat() if state.clock.started_on else None,
        "extended": state.extended,
        "refusals": state.refusals,
    }


def listed(state: CaseState) -> bool:
    """Whether the case has a row: it exists and pins a workflow."""
    return state.exists and bool(state.workflow) and bool(state.workflow_version)


def case_row(state: CaseState) -> dict[str, Any]:
    """The case's ``case_index`` row."""
    assert state.case_id is not None
    applicant = state.applicant or {}
    details = state.details
    name = applicant.get("name") if isinstance(applicant, dict) else None
    return {
        "case_id": state.case_id,
        "case_number": state.case_number,
        "case_kind": state.case_kind or "application",
        "station": state.station,
        "authority": state.authority,
        "forward_to": state.forward_to,
        "item_code": state.item_code,
        "item_version": state.item_version,
        "workflow": state.workflow,
        "workflow_version": state.workflow_version,
        "status": state.status,
        "version": state.version,
        "applicant_name": name or details.get("title") or details.get("topic"),
        "warning": state.warning_level(),
        "opened_at": state.received_at,
        "updated_at": state.updated_at,
        "summary": summary(state),
    }


def task_rows(state: CaseState, workflow: Workflow) -> list[dict[str, Any]]:
    """The case's open tasks, as ``tasks`` rows."""
    warning = state.warning_level()
    return [
        {
            "case_id": state.case_id,
            "kind": task.kind,
            "role": task.role,
            "org": task.org,
            "claimed_by": task.claimed_by,
            "case_number": state.case_number,
            "status": state.status,
            "warning": warning,
            "opened_at": state.updated_at,
        }
        for task in state.tasks(workflow)
    ]


def visit_row(event: StoredEvent) -> dict[str, Any]:
    """A visitor in the reception log, listed with the cases (kind ``reception``)."""
    return {
        "case_id": event.case_id,
        "case_number": None,
        "case_kind": RECEPTION,
        "station": event.payload.get("station") or event.actor_station,
        "authority": event.authority,
        "forward_to": None,
        "item_code": None,
        "item_version": None,
        "workflow": None,
        "workflow_version": None,
        "status": "visited",
        "version": event.version,
        "applicant_name": event.payload.get("visitor_name"),
        "warning": None,
        "opened_at": event.occurred_at,
        "updated_at": event.recorded_at,
        "summary": {
            "purpose": event.payload.get("purpose"),
            "village": event.payload.get("village"),
        },
    }


def fold_lawful(
    events: Iterable[StoredEvent], workflows: WorkflowRegistry, state: CaseState | None = None
) -> tuple[CaseState, bool]:
    """Apply ``events`` (upcast) in order from ``state``; stop before one that can't be
    folded. The state, and whether it stopped."""
    state = state or CaseState()
    for event in events:
        try:
            state = apply(state, upcast(event), workflows)
        except (IllegalTransition, UpcastError) as err:
            log.warning(
                "case can't be folded past this event; listed as it stood before",
                case_id=str(event.case_id),
                version=event.version,
                event_type=event.event_type,
                error=str(err),
            )
            return state, True
    return state, False


# -- writing in bulk -----------------------------------------------------------------------

_UUIDS = postgresql.ARRAY(sa.Uuid())
_CHUNK = 500


async def delete_cases(
    conn: AsyncConnection, table: sa.Table, case_ids: Sequence[uuid.UUID]
) -> None:
    """Delete ``table``'s rows of these cases (one statement on PostgreSQL)."""
    if not case_ids:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.delete(table).where(table.c.case_id == sa.any_(sa.bindparam("ids", type_=_UUIDS))),
            {"ids": list(case_ids)},
        )
        return
    for start in range(0, len(case_ids), _CHUNK):
        chunk = list(case_ids[start : start + _CHUNK])
        await conn.execute(sa.delete(table).where(table.c.case_id.in_(chunk)))


async def write_cases(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], task_list: Sequence[dict[str, Any]]
) -> None:
    """Replace the rows and tasks of the cases in ``rows`` with these."""
    ids = [row["case_id"] for row in rows]
    await delete_cases(conn, tasks, ids)
    await delete_cases(conn, case_index, ids)
    if rows:
        await conn.execute(sa.insert(case_index), list(rows))
    if task_list:
        await conn.execute(sa.insert(tasks), list(task_list))


async def write_rows(conn: AsyncConnection, state: CaseState, workflow: Workflow) -> None:
    """Replace one case's row and tasks with what its fold says."""
    await write_cases(conn, [case_row(state)], task_rows(state, workflow))


# -- the projection ------------------------------------------------------------------------


class CaseLists:
    """The ``case_lists`` projection: ``case_index`` and ``tasks``."""

    name = "case_lists"
    tables: tuple[sa.Table, ...] = (case_index, tasks)

    def __init__(self, workflows: WorkflowRegistry, *, cache_size: int = 50_000) -> None:
        self.workflows = workflows
        self.cache_size = cache_size
        self._states: dict[uuid.UUID, CaseState] = {}
        self._stuck: set[uuid.UUID] = set()
        """Cases whose next event can't be folded: their later events change nothing."""

    def reset(self) -> None:
        """Forget every case (the tables may have changed under us)."""
        self._states.clear()
        self._stuck.clear()

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Apply the batch case by case and write the touched cases' rows in bulk."""
        states = self._states
        loaded = await self._load_missing(conn, events)
        touched: dict[uuid.UUID, CaseState] = {case_id: states[case_id] for case_id in loaded}
        visits: dict[uuid.UUID, StoredEvent] = {}
        workflows = self.workflows
        for event in events:
            kind = event.case_kind
            case_id = event.case_id
            if kind == RECEPTION:
                seen = visits.get(case_id)
                if seen is None or seen.version < event.version:
                    visits[case_id] = event
                continue
            if kind not in CASE_KINDS or case_id in self._stuck:
                continue
            state = states.get(case_id)
            version = state.version if state is not None else 0
            if event.version <= version:
                continue  # already folded (read from the log with later events)
            assert event.version == version + 1, "_load_missing leaves no gaps"
            new, stuck = fold_lawful((event,), workflows, state)
            if stuck:
                self._stuck.add(case_id)
            states[case_id] = touched[case_id] = new
        rows: list[dict[str, Any]] = [visit_row(e) for e in visits.values()]
        task_list: list[dict[str, Any]] = []
        for case_id, state in touched.items():
            states.pop(case_id)
            states[case_id] = state  # most recently used last
            if listed(state):
                assert state.workflow and state.workflow_version
                rows.append(case_row(state))
                task_list.extend(
                    task_rows(state, workflows.get(state.workflow, state.workflow_version))
                )
        await write_cases(conn, rows, task_list)
        self._evict()

    async def _load_missing(
        self, conn: AsyncConnection, events: Sequence[StoredEvent]
    ) -> list[uuid.UUID]:
        """Fold again from the log every case whose batch events don't follow on from the
        state in memory (one query for all of them); the cases folded."""
        versions: dict[uuid.UUID, int] = {}
        missing: set[uuid.UUID] = set()
        states = self._states
        for event in events:
            if event.case_kind not in CASE_KINDS:
                continue
            case_id = event.case_id
            if case_id in missing or case_id in self._stuck:
                continue
            version = versions.get(case_id)
            if version is None:
                state = states.get(case_id)
                version = state.version if state is not None else 0
            if event.version == version + 1:
                versions[case_id] = event.version
            elif event.version > version:
                missing.add(case_id)
        if not missing:
            return []
        histories = await read_cases_in(conn, sorted(missing))
        for case_id, history in histories.items():
            state, stuck = fold_lawful(history, self.workflows)
            states[case_id] = state
            if stuck:
                self._stuck.add(case_id)
        return list(histories)

    def _evict(self) -> None:
        """Drop the least recently touched half when the cache is over its size."""
        states = self._states
        excess = len(states) - self.cache_size
        if excess <= 0:
            return
        drop = excess + self.cache_size // 2
        for case_id in list(states)[:drop]:
            del states[case_id]
            self._stuck.discard(case_id)
