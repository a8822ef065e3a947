"""Where each projection stands: its checkpoint, and how far it lags behind the log."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.eventlog import START, LogCursor
from shared.application.projections import Projection
from shared.application.projections import checkpoints as cps
from shared.application.projections.rebuild import count_after


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """One projection's checkpoint and lag."""

    name: str
    tables: tuple[str, ...]
    cursor: LogCursor
    events_applied: int
    lag: int
    """Committed events after the checkpoint."""
    updated_at: datetime | None
    writer: str | None
    """The lease holder, while its lease runs."""
    rebuild_started_at: datetime | None
    rebuilt_at: datetime | None
    started: bool
    """The projection has a checkpoint (a runner or a rebuild has taken it up)."""

    @property
    def state(self) -> str:
        """never run, rebuilding (or interrupted, or being finished by a live runner), up to
        date or behind."""
        if not self.started:
            return "not started"
        phase = cps.rebuild_phase(self.rebuild_started_at is not None, self.writer)
        if phase is not None:
            return phase
        return "up to date" if self.lag == 0 else "behind"

    def public(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "name": self.name,
            "tables": list(self.tables),
            "checkpoint": {"tx_id": self.cursor.tx_id, "position": self.cursor.position},
            "events_applied": self.events_applied,
            "lag": self.lag,
            "state": self.state,
            "writer": self.writer,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "rebuild_started_at": (
                self.rebuild_started_at.isoformat() if self.rebuild_started_at else None
            ),
            "rebuilt_at": self.rebuilt_at.isoformat() if self.rebuilt_at else None,
        }


async def status(engine: AsyncEngine, projections: Sequence[Projection]) -> list[ProjectionStatus]:
    """Each of ``projections``' checkpoint and lag, in their order."""
    found = []
    async with engine.connect() as conn:
        stored = await cps.load_all(conn)
        for projection in projections:
            checkpoint = stored.get(projection.name)
            cursor = checkpoint.cursor if checkpoint else START
            found.append(
                ProjectionStatus(
                    name=projection.name,
                    tables=tuple(t.name for t in projection.tables),
                    cursor=cursor,
                    events_applied=checkpoint.events_applied if checkpoint else 0,
                    lag=await count_after(conn, cursor),
                    updated_at=checkpoint.updated_at if checkpoint else None,
                    writer=checkpoint.writer() if checkpoint else None,
                    rebuild_started_at=checkpoint.rebuild_started_at if checkpoint else None,
                    rebuilt_at=checkpoint.rebuilt_at if checkpoint else None,
                    started=checkpoint is not None,
                )
            )
    return found
