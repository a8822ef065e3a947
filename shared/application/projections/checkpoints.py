"""Projection checkpoints: where each read model stands in the log, and who may move it.

A checkpoint row is moved only by the holder of its lease, in the transaction that writes
the projection's rows, and only from the cursor the holder last saw (a conditional UPDATE,
the first statement of that transaction, which also locks the row on PostgreSQL). So two
writers can never both commit a batch: the rows always equal the log up to the cursor.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.eventlog import START, LogCursor
from shared.adapters.sql import insert_ignore
from shared.adapters.tables.projections import projection_checkpoints as cp
from shared.domain.events import utcnow

REBUILD_PREFIX = "rebuild@"
"""Lease holders that are rebuilds start with this (live runners don't)."""


class LeaseLost(Exception):
    """Another writer holds the projection's lease now (or moved its checkpoint)."""


def _aware(ts: datetime | None) -> datetime | None:
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=UTC)


def holder_id(kind: str = "") -> str:
    """A lease holder's name: ``[rebuild@]host:pid:random``."""
    return f"{kind}{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(holder: str) -> bool:
    """A holder on this host whose process no longer runs (a crashed rebuild)."""
    host, _, rest = holder.removeprefix(REBUILD_PREFIX).partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


REBUILDING = "rebuilding"
CATCHING_UP = "catching up after an interrupted rebuild"
INTERRUPTED = "rebuild interrupted"


def rebuild_phase(rebuilding: bool, writer: str | None) -> str | None:
    """Where a rebuild stands, from its mark and the current lease holder (None if no
    lease runs): None (no rebuild under way), :data:`REBUILDING` (a rebuild writes),
    :data:`CATCHING_UP` (a live runner finishes an interrupted one) or
    :data:`INTERRUPTED` (nobody writes)."""
    if not rebuilding:
        return None
    if writer is None:
        return INTERRUPTED
    return REBUILDING if writer.startswith(REBUILD_PREFIX) else CATCHING_UP


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """One projection's checkpoint row."""

    name: str
    cursor: LogCursor
    events_applied: int
    updated_at: datetime | None
    lease_holder: str | None
    lease_until: datetime | None
    rebuild_started_at: datetime | None
    rebuilt_at: datetime | None

    @property
    def rebuilding(self) -> bool:
        """A rebuild emptied the tables and has not caught up yet."""
        return self.rebuild_started_at is not None

    def leased(self, now: datetime | None = None) -> bool:
        """Someone holds an unexpired lease."""
        return (
            self.lease_holder is not None
            and self.lease_until is not None
            and self.lease_until > (now or utcnow())
        )

    def writer(self, now: datetime | None = None) -> str | None:
        """The lease holder while its lease runs."""
        return self.lease_holder if self.leased(now) else None

    @classmethod
    def from_row(cls, row: sa.Row[tuple[object, ...]]) -> Checkpoint:
        m = row._mapping
        return cls(
            name=m["name"],
            cursor=LogCursor(m["tx_id"], m["position"]),
            events_applied=m["events_applied"],
            updated_at=_aware(m["updated_at"]),
            lease_holder=m["lease_holder"],
            lease_until=_aware(m["lease_until"]),
            rebuild_started_at=_aware(m["rebuild_started_at"]),
            rebuilt_at=_aware(m["rebuilt_at"]),
        )


async def ensure(conn: AsyncConnection, name: str) -> None:
    """Create the projection's checkpoint at the start of the log, unless it exists."""
    await insert_ignore(conn, cp, {"name": name, "tx_id": 0, "position": 0, "events_applied": 0})


async def load(conn: AsyncConnection, name: str, *, lock: bool = False) -> Checkpoint | None:
    """The projection's checkpoint (locked for the transaction on PostgreSQL if ``lock``)."""
    query = sa.select(cp).where(cp.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return Checkpoint.from_row(row) if row else None


async def load_all(conn: AsyncConnection) -> dict[str, Checkpoint]:
    """Every stored checkpoint, by name."""
    rows = await conn.execute(sa.select(cp).order_by(cp.c.name))
    return {row.name: Checkpoint.from_row(row) for row in rows}


async def take_lease(
    conn: AsyncConnection, name: str, holder: str, lease: timedelta
) -> Checkpoint | None:
    """Take or renew the lease unless another holder's is still running; the checkpoint
    if we hold it now, else None."""
    await ensure(conn, name)
    now = utcnow()
    taken = await conn.execute(
        sa.update(cp)
        .where(cp.c.name == name)
        .where(
            sa.or_(
                cp.c.lease_holder.is_(None),
                cp.c.lease_holder == holder,
                cp.c.lease_until < now,
            )
        )
        .values(lease_holder=holder, lease_until=now + lease)
        .returning(*cp.c)
    )
    row = taken.first()
    return Checkpoint.from_row(row) if row else None


async def advance(
    conn: AsyncConnection,
    name: str,
    holder: str,
    expected: LogCursor,
    to: LogCursor,
    applied: int,
    lease: timedelta,
) -> None:
    """Move the checkpoint from ``expected`` to ``to`` (and renew the lease), or raise
    :class:`LeaseLost`. Call it first in the batch's transaction: it locks the row."""
    now = utcnow()
    moved = await conn.execute(
        sa.update(cp)
        .where(cp.c.name == name)
        .where(cp.c.lease_holder == holder)
        .where(cp.c.tx_id == expected.tx_id)
        .where(cp.c.position == expected.position)
        .values(
            tx_id=to.tx_id,
            position=to.position,
            events_applied=cp.c.events_applied + applied,
            updated_at=now,
            lease_until=now + lease,
        )
    )
    if moved.rowcount != 1:
        raise LeaseLost(f"projection {name}: another writer holds its checkpoint now")


async def release(conn: AsyncConnection, name: str, holder: str) -> None:
    """Give up the lease (if we still hold it), so that another writer may go on at once."""
    await conn.execute(
        sa.update(cp)
        .where(cp.c.name == name)
        .where(cp.c.lease_holder == holder)
        .values(lease_holder=None, lease_until=None)
    )


async def restart(conn: AsyncConnection, name: str, holder: str, lease: timedelta) -> None:
    """Point the checkpoint at the start of the log for a rebuild held by ``holder``."""
    now = utcnow()
    await conn.execute(
        sa.update(cp)
        .where(cp.c.name == name)
        .values(
            tx_id=START.tx_id,
            position=START.position,
            events_applied=0,
            updated_at=now,
            lease_holder=holder,
            lease_until=now + lease,
            rebuild_started_at=now,
        )
    )


async def seize(conn: AsyncConnection, name: str, holder: str, lease: timedelta) -> None:
    """Take the lease whoever holds it (a rebuild takes over from the live runner)."""
    now = utcnow()
    await conn.execute(
        sa.update(cp).where(cp.c.name == name).values(lease_holder=holder, lease_until=now + lease)
    )


async def finish_rebuild(conn: AsyncConnection, name: str, holder: str) -> None:
    """The rebuild caught up with the log: clear its mark and give the lease back."""
    await conn.execute(
        sa.update(cp)
        .where(cp.c.name == name)
        .where(cp.c.lease_holder == holder)
        .values(
            rebuild_started_at=None,
            rebuilt_at=utcnow(),
            lease_holder=None,
            lease_until=None,
        )
    )


async def complete_rebuild(conn: AsyncConnection, name: str, holder: str) -> None:
    """A live runner that took over an interrupted rebuild has caught up with the log:
    the tables are the log's again, so clear the rebuild mark (keeping the lease)."""
    await conn.execute(
        sa.update(cp)
        .where(cp.c.name == name)
        .where(cp.c.lease_holder == holder)
        .where(cp.c.rebuild_started_at.is_not(None))
        .values(rebuild_started_at=None, rebuilt_at=utcnow())
    )
