"""Building a process's :class:`CaseService` from its settings and runtime."""

from __future__ import annotations

from shared.delegation import check
from shared.delegations_store import registry_for
from shared.eventlog import EventLog
from shared.workflow.reference import Reference
from shared.workflow.service import CaseService


def case_service(log: EventLog, reference: Reference) -> CaseService:
    """The case service over ``log`` with the loaded reference data."""
    return CaseService(
        log=log,
        workflows=reference.workflows,
        catalogue=reference.catalogue,
        calendar=reference.calendar,
        organisations=reference.organisations,
        delegations=registry_for(log),
        check=check,
    )
