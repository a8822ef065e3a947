"""Projection rebuild throughput on a generated log (a quick measurement for issue 5).

    python -m bench.projections                     # 1,000,000 events, embedded PostgreSQL
    python -m bench.projections --events 200000     # a smaller log
    python -m bench.projections --database-url URL  # a migrated, empty database
    python -m bench.projections --profile out.prof  # cProfile of the rebuild
    python -m bench.projections --json              # figures as one JSON object, last line

The log is realistic: a few hundred cases are put through ``CaseService`` in a scratch
SQLite log (``bench.projection_mix``: applications along random lawful paths, matters,
visitors) and their histories are cloned, with new case ids and case numbers, until the
log holds ``--events`` events (appended through ``EventLog.append``, hashes and all).
Then: reading the whole log (``EventLog.read_all`` pages), folding it in memory
(``shared.domain.workflow.state.apply``), and
``shared.application.projections.rebuild.rebuild`` of every registered projection — so the
figures say where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench._common import print_json_last, rate, temporary_postgres
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import START, EventLog, LogCursor
from shared.application.projections.cases import fold_lawful
from shared.application.projections.rebuild import rebuild
from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.workflow.reference import load_reference

REFERENCE = load_reference()


async def templates(cases: int) -> list[list[StoredEvent]]:
    """Case histories made through the real service, in a scratch SQLite log."""
    from bench.projection_mix import Mix

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'mix.db'}"
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        try:
            log = EventLog(engine)
            await Mix(log, REFERENCE, seed=1).run(
                applications=int(cases * 0.7), matters=cases // 10, visits=cases // 5
            )
            histories: dict[uuid.UUID, list[StoredEvent]] = defaultdict(list)
            cursor = START
            while batch := await log.read_all(cursor, 5000):
                for event in batch:
                    if event.case_kind != "delegation":
                        histories[event.case_id].append(event)
                cursor = LogCursor.after(batch[-1])
        finally:
            await engine.dispose()
    return [sorted(h, key=lambda e: e.version) for h in histories.values()]


def _clone(history: list[StoredEvent], clone: int) -> list[NewEvent]:
    out = []
    for e in history:
        payload: dict[str, Any] = dict(e.payload)
        if payload.get("case_number"):
            payload["case_number"] = f"{payload['case_number']}-{clone}"
        out.append(
            NewEvent(
                event_type=e.event_type,
                schema_version=e.schema_version,
                occurred_at=e.occurred_at,
                actor=Actor(user=e.actor_user, role=e.actor_role, station=e.actor_station),
                authority=e.authority,
                delegation_id=e.delegation_id,
                delegation_version=e.delegation_version,
                correlation_id=e.correlation_id,
                payload=payload,
            )
        )
    return out


async def load(log: EventLog, histories: list[list[StoredEvent]], events: int) -> int:
    """Append clones of ``histories`` until the log holds about ``events`` events."""
    from shared.adapters.delegations import publish_seed

    await publish_seed(log)
    written = 0
    clone = 0
    while written < events:
        clone += 1
        appends = []
        for history in histories:
            if written >= events:
                break
            appends.append(
                log.append(uuid.uuid4(), 0, _clone(history, clone), case_kind=history[0].case_kind)
            )
            written += len(history)
        await asyncio.gather(*appends)
    return written


async def read_phase(log: EventLog, batch: int) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    cursor = START
    while page := await log.read_all(cursor, batch):
        count += len(page)
        cursor = LogCursor.after(page[-1])
    return count, time.perf_counter() - started


async def fold_phase(log: EventLog, batch: int) -> tuple[int, float]:
    """Fold every case in memory, as the projection does (reading excluded)."""
    pages = []
    cursor = START
    while page := await log.read_all(cursor, batch):
        pages.append(page)
        cursor = LogCursor.after(page[-1])
    started = time.perf_counter()
    states: dict[uuid.UUID, Any] = {}
    count = 0
    for page in pages:
        for event in page:
            count += 1
            if event.case_kind in ("reception", "delegation"):
                continue
            states[event.case_id], _ = fold_lawful(
                (event,), REFERENCE.workflows, states.get(event.case_id)
            )
    return count, time.perf_counter() - started


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_engine(url)
    log = EventLog(engine)
    figures: dict[str, Any] = {"backend": engine.dialect.name}
    try:
        started = time.perf_counter()
        histories = await templates(args.template_cases)
        figures["template_cases"] = len(histories)
        figures["events"] = await load(log, histories, args.events)
        figures["load_seconds"] = round(time.perf_counter() - started, 1)
        count, seconds = await read_phase(log, args.batch_size)
        figures["read_events_per_s"] = rate(count, seconds)
        count, seconds = await fold_phase(log, args.batch_size)
        figures["fold_events_per_s"] = rate(count, seconds)
        profiler = cProfile.Profile() if args.profile else None
        with profiler or contextlib.nullcontext():
            result = await rebuild(engine, reference=REFERENCE, batch_size=args.batch_size)
        if profiler is not None:
            profiler.dump_stats(args.profile)
        figures["rebuild_events"] = result.events
        figures["rebuild_seconds"] = round(result.seconds, 2)
        figures["rebuild_events_per_s"] = rate(result.events, result.seconds)
    finally:
        await engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--template-cases", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--database-url")
    parser.add_argument("--profile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.database_url:
        migrate(args.database_url)
        figures = asyncio.run(measure(args.database_url, args))
    else:
        with temporary_postgres() as (server, _):
            import asyncpg
            from sqlalchemy.engine import make_url

            u = make_url(server)

            async def create() -> None:
                conn = await asyncpg.connect(
                    host=u.query.get("host") or u.host,
                    port=u.port,
                    user=u.username,
                    password=u.password,
                    database=u.database or "postgres",
                )
                await conn.execute("CREATE DATABASE bench_projections")
                await conn.close()

            asyncio.run(create())
            url = u.set(database="bench_projections").render_as_string(hide_password=False)
            migrate(url)
            figures = asyncio.run(measure(url, args))
    figures = {
        "benchmark": "projections",
        "config": {
            "events": args.events,
            "template_cases": args.template_cases,
            "batch_size": args.batch_size,
        },
        **figures,
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    if args.json:
        print_json_last(figures)


if __name__ == "__main__":
    main()
