"""The reference data every service loads at start-up: organisations, the catalogue,
the workflow definitions and the working calendar. A fault stops start-up, named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from shared.domain.catalogue import Catalogue, load_catalogue
from shared.domain.orgs import Organisations, load_organisations
from shared.domain.workcalendar import WorkingCalendar, load_calendar
from shared.domain.workflow.definitions import WorkflowRegistry, load_workflows


@dataclasses.dataclass(frozen=True)
class Reference:
    """Versioned reference data, as loaded from the data directory."""

    organisations: Organisations
    catalogue: Catalogue
    workflows: WorkflowRegistry
    calendar: WorkingCalendar

    def check(self) -> None:
        """Every item pins a workflow that exists and handles its case kind."""
        for item in self.catalogue.published():
            workflow = self.workflows.get(item.workflow, item.workflow_version)
            if workflow.status != "published":
                raise ValueError(
                    f"item {item.code} v{item.version} pins draft workflow "
                    f"{workflow.name} v{workflow.version}"
                )


def load_reference(data_dir: Path | None = None) -> Reference:
    """Load and cross-check the reference data."""
    organisations = load_organisations(data_dir)
    reference = Reference(
        organisations=organisations,
        catalogue=load_catalogue(data_dir, organisations),
        workflows=load_workflows(data_dir),
        calendar=load_calendar(data_dir),
    )
    reference.check()
    return reference


def as_dict(obj: Any) -> Any:
    """A frozen dataclass (or tuple of them) as JSON-ready data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [as_dict(v) for v in obj]
    return obj
