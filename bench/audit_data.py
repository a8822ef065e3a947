"""A large, realistic event log for ``bench.audit``: a month of a station's life, cloned.

The template is real: ``caseflow demo`` (``shared.cli.demo``) drives a month of Xuefeng station
through the running services on a SQLite log (applications of every kind and course,
corrections, forwarding to departments and their answers, matters, ratings, notices). Its
cases are then copied under new case ids, event ids and case numbers, each copy's hash
chain computed again, until the log holds the number of events asked for. The delegation
instruments are stored once. Every copy folds exactly like its original, so projections,
timelines and reports have real work to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench._stack import nats_credentials, publish_delegations, running_services
from shared.adapters.auth import ensure_key_pair
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import START, EventLog, LogCursor
from shared.adapters.eventlog.hashing import event_hash
from shared.adapters.tables.eventlog import events as events_table
from shared.cli.demo import Station, plan, run_demo, settle
from shared.devtools import servers as devservers
from shared.domain.events import StoredEvent

NAMESPACE = uuid.UUID("6f1d3c8e-5a0b-4c39-9d47-2b8e1f0a7c55")
CASE_NUMBER = re.compile(rb"\b([A-Z]{2})-(\d{4})-(\d{6})\b")
INSERT_BATCH = 5000
COLUMNS = [c.name for c in events_table.columns if c.name not in ("position", "tx_id")]


async def read_events(database_url: str) -> list[StoredEvent]:
    """Every event of the log, in its read order."""
    engine = create_engine(database_url)
    try:
        log = EventLog(engine)
        found: list[StoredEvent] = []
        cursor = START
        while batch := await log.read_all(cursor, limit=5000):
            found.extend(batch)
            cursor = LogCursor.after(batch[-1])
        return found
    finally:
        await engine.dispose()


def demo_template(days: int = 30, seed: int = 1, scale: float = 1.0) -> list[StoredEvent]:
    """The events a month of demo station life leaves in the log (about a minute)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caseflow-ba-")))
        database_url = f"sqlite+aiosqlite:///{tmp / 'template.db'}"
        migrate(database_url)
        asyncio.run(publish_delegations(database_url))
        port = devservers.free_port()
        credentials = nats_credentials(tmp / "nats")
        nats = devservers.start_nats(
            port, tmp / "jetstream", config=credentials.config_path, log_file=tmp / "nats.log"
        )
        stack.callback(devservers.stop_process, nats)
        keys, _ = ensure_key_pair(tmp / "keys")
        services = stack.enter_context(
            running_services(
                database_url,
                f"nats://127.0.0.1:{port}",
                tmp,
                public_key_file=keys.public_path,
                credentials=credentials,
                log_level="warning",
            )
        )
        station = Station(
            services["intake"].base_url, services["processing"].base_url, keys.directory, seed
        )
        run_demo(station, plan(seed, days, scale))
        settle(station)
        return asyncio.run(read_events(database_url))


@dataclasses.dataclass(frozen=True)
class Template:
    """The template's events: the cases to copy (each in version order) and the rest."""

    once: list[StoredEvent]
    cases: list[list[StoredEvent]]

    @classmethod
    def of(cls, events: Sequence[StoredEvent]) -> Template:
        by_case: dict[uuid.UUID, list[StoredEvent]] = defaultdict(list)
        once: list[StoredEvent] = []
        for event in events:
            if event.case_kind == "delegation":
                once.append(event)
            else:
                by_case[event.case_id].append(event)
        cases = [sorted(evs, key=lambda e: e.version) for evs in by_case.values()]
        cases.sort(key=lambda evs: evs[0].position)
        return cls(once, cases)

    @property
    def events_per_copy(self) -> int:
        return sum(len(c) for c in self.cases)


def _renumber(payload: dict[str, Any], numbers: dict[bytes, bytes]) -> dict[str, Any]:
    raw = orjson.dumps(payload)
    if b"-20" not in raw:
        return payload
    out = CASE_NUMBER.sub(lambda m: numbers.get(m.group(0), m.group(0)), raw)
    return payload if out is raw else dict(orjson.loads(out))


def copies(template: Template, total: int) -> Iterator[dict[str, Any]]:
    """Rows for the events table: the instruments once, then copies of the cases (copy k of
    every case before copy k+1), until ``total`` events; hash chains computed afresh."""
    emitted = 0
    for event in template.once:
        yield _row(event, event.case_id, event.event_id, event.payload, event.prev_hash)
        emitted += 1
    counters: dict[bytes, int] = defaultdict(int)
    copy = 0
    while emitted < total:
        copy += 1
        for case in template.cases:
            case_id = uuid.uuid5(NAMESPACE, f"{copy}:{case[0].case_id}")
            numbers: dict[bytes, bytes] = {}
            prev: str | None = None
            for event in case:
                if copy > 1:
                    for match in CASE_NUMBER.finditer(orjson.dumps(event.payload)):
                        old = match.group(0)
                        if old not in numbers:
                            prefix = match.group(1) + b"-" + match.group(2)
                            counters[prefix] += 1
                            numbers[old] = prefix + b"-%06d" % (500000 + counters[prefix])
                payload = _renumber(event.payload, numbers) if numbers else event.payload
                event_id = uuid.uuid5(NAMESPACE, f"{copy}:{event.event_id}")
                row = _row(event, case_id, event_id, payload, prev)
                prev = row["hash"]
                yield row
                emitted += 1
                if emitted >= total:
                    return


def _row(
    event: StoredEvent,
    case_id: uuid.UUID,
    event_id: uuid.UUID,
    payload: dict[str, Any],
    prev_hash: str | None,
) -> dict[str, Any]:
    fields = dataclasses.asdict(event)
    fields.update(case_id=case_id, event_id=event_id, payload=payload, prev_hash=prev_hash)
    fields.pop("position")
    fields.pop("tx_id")
    fields["hash"] = event_hash(fields)
    return fields


async def fill(database_url: str, template: Template, total: int) -> int:
    """Write ``total`` events (instruments and case copies) into an empty, migrated log."""
    engine = create_engine(database_url)
    written = 0
    try:
        async with engine.connect() as conn:
            batch: list[dict[str, Any]] = []
            for row in copies(template, total):
                batch.append(row)
                if len(batch) >= INSERT_BATCH:
                    written += await _insert(conn, batch)
                    batch = []
            if batch:
                written += await _insert(conn, batch)
    finally:
        await engine.dispose()
    return written


async def _insert(conn: Any, rows: list[dict[str, Any]]) -> int:
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        records = [
            tuple(orjson.dumps(r[c]).decode() if c == "payload" else r[c] for c in COLUMNS)
            for r in rows
        ]
        await raw.driver_connection.copy_records_to_table(
            "events", records=records, columns=COLUMNS
        )
        await conn.commit()
    else:
        await conn.execute(sa.insert(events_table), rows)
        await conn.commit()
    return len(rows)


def lengthened(template: Template, events: int = 50) -> tuple[Template, int]:
    """The template with its longest case grown to ``events`` events by the station head
    opening the applicant's data again and again (``PersonalDataViewed``, a fact that
    leaves the status alone), and the index of that case: the timeline benchmark's case."""
    index = max(range(len(template.cases)), key=lambda i: len(template.cases[i]))
    case = list(template.cases[index])
    last = case[-1]
    while len(case) < events:
        n = len(case)
        case.append(
            dataclasses.replace(
                last,
                event_id=uuid.uuid5(NAMESPACE, f"viewed:{last.case_id}:{n}"),
                version=n + 1,
                event_type="PersonalDataViewed",
                schema_version=1,
                occurred_at=last.occurred_at + timedelta(minutes=n),
                recorded_at=last.recorded_at + timedelta(minutes=n),
                actor_user="zhao.head",
                actor_role="station_head",
                authority=None,
                delegation_id=None,
                delegation_version=None,
                causation_id=None,
                payload={"reason": "核对材料 checking the file", "fields": ["id_number", "phone"]},
            )
        )
    cases = [*template.cases[:index], case, *template.cases[index + 1 :]]
    return Template(template.once, cases), index


def case_number_of(case: Sequence[StoredEvent]) -> str:
    """The case number of copy 1 of a template case (copy 1 keeps the template's numbers)."""
    for event in case:
        number = event.payload.get("case_number")
        if isinstance(number, str):
            return number
    raise ValueError("the case has no number")
