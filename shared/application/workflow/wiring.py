"""Building a process's :class:`CaseService` from its settings and runtime."""

from __future__ import annotations

from shared.adapters.delegations import registry_for
from shared.adapters.eventlog import EventLog
from shared.application.workflow.service import CaseService
from shared.domain.delegation import check
from shared.domain.workflow.reference import Reference


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
