"""Every read model kept from the log, by name."""

from __future__ import annotations

from collections.abc import Sequence

from shared.application.projections import Projection
from shared.application.projections.cases import CaseLists
from shared.application.statistics.projection import statistics_projections
from shared.domain.workflow.reference import Reference


class UnknownProjection(ValueError):
    """A projection name that isn't registered."""


def projections(reference: Reference) -> list[Projection]:
    """A fresh instance of every projection (in the order they are rebuilt and listed)."""
    return [
        CaseLists(reference.workflows),
        *statistics_projections(reference),
    ]


def select(available: Sequence[Projection], names: Sequence[str] | None) -> list[Projection]:
    """The projections named (all of them for None), or :class:`UnknownProjection`."""
    if not names:
        return list(available)
    by_name = {p.name: p for p in available}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = ", ".join(by_name)
        raise UnknownProjection(f"no projection named {', '.join(unknown)} (there are: {known})")
    return [by_name[n] for n in dict.fromkeys(names)]
