"""What the engines send, as ``caseflow_db_statements_total`` counts it, and the pool's
ping only for a connection that lay idle."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import REGISTRY

from shared.adapters import db
from shared.adapters.eventlog import EventLog

KINDS = ("select", "begin", "commit", "rollback", "ping")


def counted() -> dict[str, float]:
    return {
        kind: REGISTRY.get_sample_value("caseflow_db_statements_total", {"kind": kind}) or 0.0
        for kind in KINDS
    }


def sent_since(before: dict[str, float]) -> dict[str, float]:
    now = counted()
    return {kind: now[kind] - before[kind] for kind in KINDS if now[kind] != before[kind]}


async def test_a_transaction_and_a_read_are_counted_as_the_round_trips_they_are(
    db_url: str,
) -> None:
    engine = db.create_engine(db_url)
    try:
        log = EventLog(engine)
        async with engine.connect() as conn:  # connected once, so no ping below
            await conn.execute(sa.text("SELECT 1"))
        before = counted()
        async with log.writer.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
        assert sent_since(before) == {"begin": 1, "select": 1, "commit": 1}
        before = counted()
        async with log.reader.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        if engine.dialect.name == "postgresql":  # a read of one statement, in autocommit
            assert sent_since(before) == {"select": 1}
        else:
            assert sent_since(before) == {"begin": 1, "select": 1, "rollback": 1}
    finally:
        await engine.dispose()


async def test_only_a_connection_that_lay_idle_is_pinged(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url, pool_size=1)
    try:
        for _ in range(3):  # connected, then given back a moment ago: working
            before = counted()
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            assert sent_since(before).get("ping", 0) == 0
        # as if it had lain idle longer than PING_AFTER_IDLE_SECONDS
        async with engine.connect() as conn:
            record = (await conn.get_raw_connection())._connection_record
        assert record is not None
        record.info[db._LAST_USED] -= db.PING_AFTER_IDLE_SECONDS + 1
        before = counted()
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        assert sent_since(before)["ping"] == 1
    finally:
        await engine.dispose()
