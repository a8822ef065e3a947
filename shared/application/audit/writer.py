"""Writing signed checkpoints: on demand and periodically, one writer at a time.

**Which positions are final.** A checkpoint covers a contiguous range of global positions
and signs every event in it, so no event may ever commit into a range already signed.

- SQLite has one writer at a time and hands out ``max(position) + 1``: every position up
  to the highest committed one is final.
- PostgreSQL draws positions from a sequence before the drawing transaction commits, so a
  position below the highest visible one may still commit later (see "Gap-free reading"
  in docs/architecture.md). An ``INSERT`` takes its ``RowExclusiveLock`` on ``events``
  before it draws a position, and holds it until commit or rollback. So we read the
  sequence's last value ``L`` *first*, then the transactions holding that lock; once all
  of those have ended, every position ``<= L`` is committed or abandoned for good. We wait
  for them briefly (a transaction held open for long only delays the checkpoint). The
  xid horizon of ``LogCursor`` is not enough here: a transaction draws its position a
  moment before it gets an xid.

**One writer.** Checkpoints are numbered 1, 2, 3, … and the number is the primary key, so
two writers that race end with one insert refused; on PostgreSQL a transaction-level
advisory lock makes the loser give up before signing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.db import WRITE_OPTION
from shared.adapters.tables.audit import audit_checkpoints as cps
from shared.adapters.tables.eventlog import events
from shared.application.audit.checkpoint import Checkpoint, sign_checkpoint
from shared.application.audit.keys import AuditKeyError, load_signing_key
from shared.application.audit.rows import iso_utc

log = structlog.get_logger("caseflow.audit")

MAX_EVENTS = 100_000
"""The most events one checkpoint signs (a backlog is covered by several)."""
ADVISORY_LOCK = 0x63665F6175646974  # "cf_audit"
_COLUMNS = (
    cps.c.seq,
    cps.c.after_position,
    cps.c.upto_position,
    cps.c.event_count,
    cps.c.leaves,
    cps.c.prev_digest,
    cps.c.digest,
    cps.c.key_id,
    cps.c.signature,
    cps.c.created_at,
)
_LOCK_HOLDERS = sa.text(
    "SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks "
    "WHERE locktype = 'relation' AND relation = 'events'::regclass "
    "AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()"
)
_STILL_RUNNING = sa.text(
    "SELECT count(*) FROM pg_locks WHERE virtualtransaction = ANY(:holders)"
).bindparams(sa.bindparam("holders", type_=sa.ARRAY(sa.Text())))


class CheckpointBusy(RuntimeError):
    """No checkpoint now: another writer is at it, or a transaction stays open too long."""


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        seq=int(row.seq),
        after_position=int(row.after_position),
        upto_position=int(row.upto_position),
        event_count=int(row.event_count),
        leaves=bytes(row.leaves),
        prev_digest=row.prev_digest,
        digest=str(row.digest),
        key_id=str(row.key_id),
        signature=str(row.signature),
        created_at=iso_utc(row.created_at),
    )


async def load_checkpoints(conn: AsyncConnection) -> list[Checkpoint]:
    """Every stored checkpoint, in order."""
    rows = await conn.execute(sa.select(*_COLUMNS).order_by(cps.c.seq))
    return [_checkpoint(r) for r in rows]


async def _last(conn: AsyncConnection) -> tuple[int, int, str | None]:
    """``(seq, upto_position, digest)`` of the newest checkpoint, zeros if none."""
    row = (
        await conn.execute(
            sa.select(cps.c.seq, cps.c.upto_position, cps.c.digest)
            .order_by(cps.c.seq.desc())
            .limit(1)
        )
    ).first()
    return (int(row.seq), int(row.upto_position), row.digest) if row else (0, 0, None)


async def final_position(engine: AsyncEngine, *, wait: float = 5.0) -> int:
    """The highest position below which nothing can still commit (see the module doc)."""
    if engine.dialect.name != "postgresql":
        async with engine.connect() as conn:
            return int((await conn.scalar(sa.select(sa.func.max(events.c.position)))) or 0)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        seq_name = await conn.scalar(sa.text("SELECT pg_get_serial_sequence('events', 'position')"))
        row = (await conn.execute(sa.text(f"SELECT last_value, is_called FROM {seq_name}"))).one()
        drawn = int(row.last_value) if row.is_called else int(row.last_value) - 1
        holders = list(await conn.scalar(_LOCK_HOLDERS) or [])
        deadline = time.monotonic() + wait
        while holders and await conn.scalar(_STILL_RUNNING, {"holders": holders}):
            if time.monotonic() > deadline:
                raise CheckpointBusy(
                    f"a transaction writing events has stayed open for over {wait:g} s; "
                    "the checkpoint waits for it (try again later)"
                )
            await asyncio.sleep(0.02)
        return drawn


async def write_checkpoint(
    engine: AsyncEngine,
    key: Ed25519PrivateKey,
    *,
    max_events: int = MAX_EVENTS,
    wait: float = 5.0,
) -> Checkpoint | None:
    """Sign the next range of final positions; None when there is nothing new to sign.

    Raises :class:`CheckpointBusy` when another writer got there first or the range can't
    be made final in ``wait`` seconds.
    """
    final = await final_position(engine, wait=wait)
    async with engine.connect() as conn:
        seq, after, prev_digest = await _last(conn)
        if final <= after:
            await conn.rollback()
            return None
        rows = (
            await conn.execute(
                sa.select(events.c.position, events.c.event_id, events.c.case_id, events.c.hash)
                .where(events.c.position > after, events.c.position <= final)
                .order_by(events.c.position)
                .limit(max_events)
            )
        ).all()
        await conn.rollback()
    if not rows:
        return None
    upto = rows[-1].position if len(rows) == max_events else final
    checkpoint = sign_checkpoint(
        key,
        seq=seq + 1,
        after_position=after,
        upto_position=upto,
        positions=[r.position for r in rows],
        records=[r.event_id.bytes + r.case_id.bytes + bytes.fromhex(r.hash) for r in rows],
        prev_digest=prev_digest,
        created_at=iso_utc(datetime.now(UTC)),
    )
    try:
        async with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            if engine.dialect.name == "postgresql" and not await conn.scalar(
                sa.text(f"SELECT pg_try_advisory_xact_lock({ADVISORY_LOCK})")
            ):
                raise CheckpointBusy("another process is writing a checkpoint")
            if (await _last(conn))[0] != seq:
                raise CheckpointBusy("another process wrote a checkpoint meanwhile")
            await conn.execute(sa.insert(cps), [_values(checkpoint)])
    except IntegrityError:
        raise CheckpointBusy("another process wrote a checkpoint meanwhile") from None
    return checkpoint


def _values(checkpoint: Checkpoint) -> dict[str, object]:
    return {
        "seq": checkpoint.seq,
        "after_position": checkpoint.after_position,
        "upto_position": checkpoint.upto_position,
        "event_count": checkpoint.event_count,
        "leaves": checkpoint.leaves,
        "prev_digest": checkpoint.prev_digest,
        "digest": checkpoint.digest,
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
        "created_at": datetime.fromisoformat(checkpoint.created_at.replace("Z", "+00:00")),
    }


async def insert_checkpoints(conn: AsyncConnection, checkpoints: Sequence[Checkpoint]) -> None:
    """Store checkpoints as they are (a replay copies them verbatim)."""
    if checkpoints:
        await conn.execute(sa.insert(cps), [_values(c) for c in checkpoints])


async def write_all(
    engine: AsyncEngine, key: Ed25519PrivateKey, *, max_events: int = MAX_EVENTS
) -> list[Checkpoint]:
    """Checkpoints until every final position is covered (a backlog takes several)."""
    written = []
    while (checkpoint := await write_checkpoint(engine, key, max_events=max_events)) is not None:
        written.append(checkpoint)
        if checkpoint.event_count < max_events:
            break
    return written


class Checkpointer:
    """The periodic writer a service runs in the background (``Runtime.background``).

    Every ``interval`` seconds it signs what became final. The key file is read when first
    needed; while it is missing, each round logs a warning and signs nothing.
    """

    def __init__(self, engine: AsyncEngine, key_file: Path, interval: float) -> None:
        self.engine = engine
        self.key_file = key_file
        self.interval = interval
        self._key: Ed25519PrivateKey | None = None

    async def round(self) -> list[Checkpoint]:
        """One round: the checkpoints written (none if nothing new or another writer)."""
        if self._key is None:
            self._key = load_signing_key(self.key_file)
        try:
            return await write_all(self.engine, self._key)
        except CheckpointBusy as err:
            log.info("no checkpoint this round", reason=str(err))
            return []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                for checkpoint in await self.round():
                    log.info(
                        "checkpoint signed",
                        seq=checkpoint.seq,
                        upto=checkpoint.upto_position,
                        events=checkpoint.event_count,
                    )
            except AuditKeyError as err:
                log.warning("audit checkpoints are not being signed", reason=str(err))
            except Exception as err:
                log.warning("checkpoint round failed", error=repr(err))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
