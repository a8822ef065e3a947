"""Replaying a bundle into an empty database: verify, create the schema, load the events
and checkpoints verbatim, rebuild the read models.

Events keep their positions, ids, times, payloads and hashes; ``tx_id`` becomes 0 (a
transaction id means nothing in another database, and 0 puts every replayed event below
any reading horizon, read in position order). On PostgreSQL the position sequence is moved
past the highest replayed position.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.db import WRITE_OPTION, migrate
from shared.adapters.tables.audit import audit_checkpoints
from shared.adapters.tables.eventlog import events
from shared.application.audit.bundle import Bundle, verify_bundle
from shared.application.audit.rows import to_database
from shared.application.audit.verify import Report
from shared.application.audit.writer import insert_checkpoints

BATCH = 2_000


class ReplayRefused(Exception):
    """The replay was not started; ``str()`` says why."""


async def rebuild_read_models(engine: AsyncEngine) -> None:
    """Rebuild every read model (every registered projection) from the replayed log."""
    from shared.application.projections.rebuild import rebuild

    await rebuild(engine, restart=True)


async def _existing_events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        count = 0
        for table in (events, audit_checkpoints):
            if table.name in tables:
                count += int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
        await conn.rollback()
        return count


async def replay_bundle(
    bundle: Bundle,
    engine: AsyncEngine,
    url: str,
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Verify ``bundle`` and load it into the empty database at ``url`` (``engine``'s).

    Raises :class:`ReplayRefused` if the bundle doesn't verify or the database isn't empty.
    """
    report = verify_bundle(bundle, keys)
    if not report.ok:
        raise ReplayRefused(
            f"the bundle does not verify ({len(report.findings)} findings); "
            "run 'caseflow audit verify --bundle' to see them"
        )
    existing = await _existing_events(engine)
    if existing:
        raise ReplayRefused(
            f"the target database is not empty (it holds {existing} events or checkpoints); "
            "replay needs an empty database"
        )
    await asyncio.to_thread(migrate, url)
    writer = engine.execution_options(**{WRITE_OPTION: True})
    top = 0
    for rows in bundle.rows(BATCH):
        values = [to_database(r) | {"tx_id": 0} for r in rows]
        async with writer.begin() as conn:
            await conn.execute(sa.insert(events), values)
        top = max(top, rows[-1]["position"])
        if progress is not None:
            progress(len(rows))
    async with writer.begin() as conn:
        await insert_checkpoints(conn, bundle.checkpoints)
        if engine.dialect.name == "postgresql" and top:
            await conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('events', 'position'), :top)"),
                {"top": top},
            )
    await rebuild_read_models(engine)
    return report
