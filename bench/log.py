"""Event log benchmark: append throughput, read-all throughput, latency of loading a case.

    python -m bench.log                       # embedded PostgreSQL + a SQLite file, both
    python -m bench.log --database-url URL    # only that database (migrated first)
    python -m bench.log --seconds 10          # each append phase runs 10 s (default 5)
    python -m bench.log --appends 20000       # each append phase does exactly 20000 appends
    python -m bench.log --json                # the figures as one JSON object on the last line

Each append stores 3 events in a fresh case (expected version 0), through
:meth:`EventLog.append`, with 1 and with 16 concurrent writers. Read-all pages through every
event of the log with :meth:`EventLog.read_all` and :meth:`LogCursor.after`. Loading a case
is :meth:`EventLog.read_case` of a random case written by the append phases, one at a time.
Durability stays as configured by ``shared.adapters.db`` (checked and printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import (
    describe_durability,
    durability,
    latency_summary,
    print_json_last,
    rate,
    temporary_postgres,
)
from shared.adapters.db import create_engine, is_sqlite, migrate
from shared.adapters.eventlog import START, EventLog, LogCursor
from shared.domain.events import Actor, NewEvent

CLERK = Actor(user="window", role="window_clerk", station="XF")
EVENT_TYPES = ("CaseReceived", "CaseAccepted", "NotificationSent")
PAYLOAD: dict[str, Any] = {
    "item_code": "pension",
    "applicant": {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"},
    "materials": ["household_register", "id_card"],
}
EVENTS_PER_APPEND = len(EVENT_TYPES)
WARMUP_APPENDS = 50


def new_events() -> list[NewEvent]:
    """The 3 events of one append (fresh ids, a realistic payload)."""
    return [
        NewEvent(event_type=t, actor=CLERK, correlation_id="bench", payload=PAYLOAD)
        for t in EVENT_TYPES
    ]


async def append_phase(
    log: EventLog, writers: int, *, seconds: float | None, appends: int | None
) -> tuple[dict[str, Any], list[uuid.UUID]]:
    """``writers`` tasks appending until the time or the number of appends is used up."""
    latencies: list[float] = []
    cases: list[uuid.UUID] = []
    remaining = appends
    deadline = time.perf_counter() + (seconds or 0.0)

    async def writer() -> None:
        nonlocal remaining
        while True:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            elif time.perf_counter() >= deadline:
                return
            case_id = uuid.uuid4()
            events = new_events()
            started = time.perf_counter()
            await log.append(case_id, 0, events, case_kind="application")
            latencies.append(time.perf_counter() - started)
            cases.append(case_id)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    figures = {
        "writers": writers,
        "appends": len(cases),
        "events": len(cases) * EVENTS_PER_APPEND,
        "seconds": round(elapsed, 3),
        "appends_per_s": rate(len(cases), elapsed),
        "events_per_s": rate(len(cases) * EVENTS_PER_APPEND, elapsed),
        "append_latency": latency_summary(latencies),
    }
    return figures, cases


async def read_all_phase(log: EventLog, page_size: int) -> dict[str, Any]:
    """Page through the whole log in read order."""
    count = pages = 0
    cursor = START
    started = time.perf_counter()
    while page := await log.read_all(cursor, limit=page_size):
        count += len(page)
        pages += 1
        cursor = LogCursor.after(page[-1])
    elapsed = time.perf_counter() - started
    return {
        "events": count,
        "pages": pages,
        "page_size": page_size,
        "seconds": round(elapsed, 3),
        "events_per_s": rate(count, elapsed),
    }


async def read_case_phase(log: EventLog, cases: list[uuid.UUID], samples: int) -> dict[str, Any]:
    """Load random cases one at a time; latency per load."""
    rng = random.Random(7)
    latencies: list[float] = []
    for _ in range(samples):
        case_id = rng.choice(cases)
        started = time.perf_counter()
        events = await log.read_case(case_id)
        latencies.append(time.perf_counter() - started)
        assert len(events) == EVENTS_PER_APPEND, f"case {case_id} has {len(events)} events"
    return {"events_per_case": EVENTS_PER_APPEND, **latency_summary(latencies)}


async def bench_database(label: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement on one database."""
    writer_counts: list[int] = args.writers
    engine = create_engine(url, pool_size=max(writer_counts))
    log = EventLog(engine)
    try:
        settings = await durability(engine)
        print(f"[{label}] {describe_durability(settings)}", flush=True)
        figures: dict[str, Any] = {"durability": settings, "append": {}}
        await append_phase(log, 1, seconds=None, appends=WARMUP_APPENDS)
        cases: list[uuid.UUID] = []
        for writers in writer_counts:
            result, written = await append_phase(
                log, writers, seconds=args.seconds, appends=args.appends
            )
            cases.extend(written)
            figures["append"][str(writers)] = result
            lat = result["append_latency"]
            print(
                f"[{label}] append, {writers:>2} writer(s): {result['events_per_s']:>10,.0f}"
                f" events/s ({result['appends_per_s']:,.0f} appends/s of"
                f" {EVENTS_PER_APPEND} events; {result['appends']} appends in"
                f" {result['seconds']} s; latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms)",
                flush=True,
            )
        result = await read_all_phase(log, args.page_size)
        figures["read_all"] = result
        print(
            f"[{label}] read-all: {result['events_per_s']:>10,.0f} events/s"
            f" ({result['events']} events in {result['pages']} pages of ≤{args.page_size},"
            f" {result['seconds']} s)",
            flush=True,
        )
        result = await read_case_phase(log, cases, args.case_reads)
        figures["read_case"] = result
        print(
            f"[{label}] read_case ({EVENTS_PER_APPEND} events): p50 {result['p50_ms']} ms,"
            f" p99 {result['p99_ms']} ms, max {result['max_ms']} ms ({result['count']} loads)",
            flush=True,
        )
        return figures
    finally:
        await engine.dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.log", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        help="benchmark only this database (postgresql+asyncpg://… or sqlite+aiosqlite://…); "
        "default: an embedded PostgreSQL and a SQLite file in temporary folders",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--seconds", type=float, help="length of each append phase (default 5)")
    size.add_argument("--appends", type=int, help="appends per append phase (instead of time)")
    parser.add_argument(
        "--writers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16],
        help="comma-separated writer counts (default 1,16)",
    )
    parser.add_argument("--page-size", type=int, default=1000, help="read_all limit per page")
    parser.add_argument("--case-reads", type=int, default=2000, help="read_case samples")
    parser.add_argument("--json", action="store_true", help="JSON object on the last line")
    args = parser.parse_args(argv)
    if args.seconds is None and args.appends is None:
        args.seconds = 5.0
    return args


async def run(targets: list[tuple[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark each (label, url) in turn."""
    results: dict[str, Any] = {}
    for label, url in targets:
        results[label] = await bench_database(label, url, args)
    return results


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.database_url:
            label = "sqlite" if is_sqlite(args.database_url) else "postgresql"
            targets = [(label, args.database_url)]
        else:
            print("starting an embedded PostgreSQL in a temporary folder…", flush=True)
            pg_url, _ = stack.enter_context(temporary_postgres())
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caseflow-bl-")))
            targets = [
                ("postgresql", pg_url),
                ("sqlite", f"sqlite+aiosqlite:///{folder / 'log.db'}"),
            ]
        for _, url in targets:
            migrate(url)
        results = asyncio.run(run(targets, args))
    figures = {
        "benchmark": "log",
        "config": {
            "seconds": args.seconds,
            "appends": args.appends,
            "writers": args.writers,
            "events_per_append": EVENTS_PER_APPEND,
            "page_size": args.page_size,
            "case_reads": args.case_reads,
        },
        **results,
    }
    if args.json:
        print_json_last(figures)


if __name__ == "__main__":
    main()
