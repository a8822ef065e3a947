"""Read models as projections of the log, each with its own checkpoint.

A projection is told the next events in the log's read order (``LogCursor`` order) and
brings its tables up to date within the transaction it is handed; the runner moves the
projection's checkpoint in that same transaction. Dropping a projection's tables and
replaying the log from the start must give the same rows as the live ones.

A projection may also have a ``reset()`` method (optional, not part of the protocol): the
runner calls it whenever the tables may have changed under the projection (another writer
or a rebuild held the lease meanwhile, or a batch failed), so that it drops its caches.
Runner: ``shared.application.projections.runner``; rebuild:
``shared.application.projections.rebuild.rebuild``; the list of projections:
``shared.application.projections.registry.projections``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.domain.events import StoredEvent


class Projection(Protocol):
    """One read model kept from the log."""

    name: str
    """The name of its checkpoint; stable across releases."""

    tables: tuple[sa.Table, ...]
    """The tables it owns: a rebuild empties them and replays the log into them."""

    async def apply(self, conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Bring the tables up to date with ``events`` (the next ones after this projection's
        checkpoint, in log order) inside ``conn``'s transaction. It may keep caches, but must
        give the same rows when started afresh on the same tables."""
        ...
