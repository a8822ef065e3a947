"""Projections with their own checkpoints, on both backends: the live runner's rows equal
the fold of the log; a rebuild gives the same rows; an interrupted rebuild continues from
its checkpoint and still gives them; a rebuild while the live runner runs and cases keep
moving ends with the rows of the fold; one writer at a time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.projection_mix import Mix
from shared.adapters.eventlog import START, EventLog
from shared.adapters.eventlog.store import read_case_in
from shared.adapters.tables.eventlog import events as events_table
from shared.adapters.tables.projections import projection_checkpoints
from shared.adapters.tables.workflow import case_index, tasks
from shared.application.projections import checkpoints as cps
from shared.application.projections.cases import (
    CASE_KINDS,
    RECEPTION,
    CaseLists,
    case_row,
    listed,
    task_rows,
    visit_row,
)
from shared.application.projections.rebuild import RebuildRunning, count_after, rebuild
from shared.application.projections.registry import UnknownProjection
from shared.application.projections.registry import projections as registered
from shared.application.projections.runner import ProjectionRunner
from shared.application.projections.status import status
from shared.devtools.waiting import eventually
from shared.domain.events import Actor, NewEvent, utcnow
from shared.domain.workflow.reference import load_reference
from shared.domain.workflow.state import fold

REFERENCE = load_reference()
NAME = "case_lists"


class Interrupted(Exception):
    """Stands for Ctrl-C or a crash in the middle of a rebuild."""


async def snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the projection's tables, in key order."""
    async with engine.connect() as conn:
        rows = (
            (await conn.execute(sa.select(case_index).order_by(case_index.c.case_id)))
            .mappings()
            .all()
        )
        found = (
            (await conn.execute(sa.select(tasks).order_by(tasks.c.case_id, tasks.c.kind)))
            .mappings()
            .all()
        )
    return {"case_index": [dict(r) for r in rows], "tasks": [dict(r) for r in found]}


async def folded(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """The rows the fold of each case's whole history gives (worked out without the
    projection's cache or bulk writes), as ``snapshot`` reads them back."""
    expected_rows: list[dict[str, Any]] = []
    expected_tasks: list[dict[str, Any]] = []
    async with engine.connect() as conn:
        cases = (
            await conn.execute(
                sa.select(events_table.c.case_id, events_table.c.case_kind).distinct()
            )
        ).all()
        for case_id, kind in cases:
            history = await read_case_in(conn, case_id)
            if kind == RECEPTION:
                expected_rows.append(visit_row(history[-1]))
            elif kind in CASE_KINDS:
                state = fold(history, REFERENCE.workflows)
                if listed(state):
                    assert state.workflow and state.workflow_version
                    expected_rows.append(case_row(state))
                    workflow = REFERENCE.workflows.get(state.workflow, state.workflow_version)
                    expected_tasks.extend(task_rows(state, workflow))
    # written to a scratch copy of the tables and read back, so types match the snapshot
    async with engine.begin() as conn:
        await conn.execute(sa.delete(tasks))
        await conn.execute(sa.delete(case_index))
        if expected_rows:
            await conn.execute(sa.insert(case_index), expected_rows)
        if expected_tasks:
            await conn.execute(sa.insert(tasks), expected_tasks)
        back = await _read(conn)
        await conn.rollback()
    return back


async def _read(conn: Any) -> dict[str, list[dict[str, Any]]]:
    rows = (
        (await conn.execute(sa.select(case_index).order_by(case_index.c.case_id))).mappings().all()
    )
    found = (
        (await conn.execute(sa.select(tasks).order_by(tasks.c.case_id, tasks.c.kind)))
        .mappings()
        .all()
    )
    return {"case_index": [dict(r) for r in rows], "tasks": [dict(r) for r in found]}


async def head(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await count_after(conn, START)


async def checkpoint(engine: AsyncEngine) -> cps.Checkpoint:
    async with engine.connect() as conn:
        found = await cps.load(conn, NAME)
    assert found is not None
    return found


async def caught_up(engine: AsyncEngine, timeout: float = 30.0) -> None:
    """Wait until the projection's checkpoint is at the end of the log."""
    behind: list[int] = []

    async def at_the_end() -> bool:
        async with engine.connect() as conn:
            found = await cps.load(conn, NAME)
            lag = await count_after(conn, found.cursor if found else START)
        behind[:] = [lag]
        return found is not None and lag == 0 and not found.rebuilding

    await eventually(
        at_the_end,
        what=f"{NAME} to catch up with the log",
        timeout=timeout,
        detail=lambda: f"still {behind} events behind",
    )


@contextlib.asynccontextmanager
async def live_runner(log: EventLog, batch_size: int = 7) -> AsyncIterator[ProjectionRunner]:
    """The live runner, as the processing service runs it (small batches)."""
    runner = ProjectionRunner(
        log, CaseLists(REFERENCE.workflows), batch_size=batch_size, poll_interval=0.2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_live_rows_and_a_rebuild_equal_the_fold_of_the_log(
    engine: AsyncEngine, log: EventLog
) -> None:
    async with live_runner(log):
        await Mix(log, REFERENCE, seed=11).run(applications=30, matters=8, visits=6)
        await caught_up(engine)
    live = await snapshot(engine)
    kinds = {row["case_kind"] for row in live["case_index"]}
    assert kinds == {*CASE_KINDS, RECEPTION}, kinds
    assert len(live["tasks"]) > 5
    statuses = {row["status"] for row in live["case_index"]}
    # the mix's paths interleave with I/O, so which statuses it ends in varies a little
    assert "visited" in statuses and len(statuses) >= 5, statuses
    assert live == await folded(engine)
    events = await head(engine)
    assert (await checkpoint(engine)).events_applied == events

    result = await rebuild(engine, [NAME], reference=REFERENCE, batch_size=50)
    assert result.names == (NAME,)
    assert result.events == events
    assert result.resumed == ()
    assert await snapshot(engine) == live
    after = await checkpoint(engine)
    assert not after.rebuilding and after.rebuilt_at is not None
    assert after.lease_holder is None
    assert after.events_applied == events


async def test_an_interrupted_rebuild_continues_from_its_checkpoint(
    engine: AsyncEngine, log: EventLog
) -> None:
    await Mix(log, REFERENCE, seed=12).run(applications=20, matters=4, visits=4)
    runner = ProjectionRunner(log, CaseLists(REFERENCE.workflows), lease_seconds=0.4)
    await runner.catch_up()
    live = await snapshot(engine)
    events = await head(engine)
    calls: list[tuple[int, int]] = []

    def stop_after_the_first_batch(done: int, total: int) -> None:
        calls.append((done, total))
        if done > 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rebuild(
            engine, [NAME], reference=REFERENCE, batch_size=40, progress=stop_after_the_first_batch
        )
    assert calls == [(0, events), (40, events)]
    stopped = await checkpoint(engine)
    assert stopped.rebuilding
    assert stopped.events_applied == 40
    assert stopped.cursor > START
    assert stopped.lease_holder is None, "an interrupted rebuild gives the lease back"
    partial = await snapshot(engine)
    assert len(partial["case_index"]) < len(live["case_index"])

    calls.clear()
    result = await rebuild(
        engine,
        [NAME],
        reference=REFERENCE,
        batch_size=40,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert result.resumed == (NAME,)
    assert result.events == events - 40, "continued, not started again"
    assert calls[0] == (40, events)
    assert calls[-1] == (events, events)
    assert await snapshot(engine) == live
    assert not (await checkpoint(engine)).rebuilding

    again = await rebuild(engine, [NAME], reference=REFERENCE, restart=True)
    assert again.events == events and again.resumed == ()
    assert await snapshot(engine) == live

    # Interrupted again; this time the live runner (whose memory of every case predates
    # the rebuild) takes the lease back and finishes the job.
    with pytest.raises(Interrupted):
        await rebuild(
            engine,
            [NAME],
            reference=REFERENCE,
            restart=True,
            batch_size=40,
            progress=stop_after_the_first_batch,
        )
    await asyncio.sleep(0.15)  # past the runner's renewal interval: it asks for the lease
    interrupted_at = (await checkpoint(engine)).rebuild_started_at
    runner.batch_size = 40
    assert events > 80
    assert await runner.step() == 40
    taking_over = (await status(engine, [CaseLists(REFERENCE.workflows)]))[0]
    assert taking_over.state == "catching up after an interrupted rebuild", taking_over
    assert (await checkpoint(engine)).rebuilding, "not before the runner has caught up"
    assert await runner.catch_up() == events - 80
    assert await snapshot(engine) == live
    # Caught up: the tables are the log's again, and the rebuild counts as done.
    finished = await checkpoint(engine)
    assert not finished.rebuilding and finished.rebuilt_at is not None
    assert interrupted_at is not None and finished.rebuilt_at > interrupted_at
    assert finished.lease_holder == runner.holder, "the runner keeps writing"
    (done,) = await status(engine, [CaseLists(REFERENCE.workflows)])
    assert done.state == "up to date", done


async def test_a_rebuild_while_cases_move_and_the_live_runner_runs(
    engine: AsyncEngine, log: EventLog
) -> None:
    await Mix(log, REFERENCE, seed=13).run(applications=15, matters=4, visits=3)
    async with live_runner(log) as runner:
        await caught_up(engine)
        moving = asyncio.create_task(
            Mix(log, REFERENCE, seed=14).run(applications=15, matters=4, visits=3)
        )
        await asyncio.sleep(0.05)
        result = await rebuild(engine, [NAME], reference=REFERENCE, batch_size=25)
        assert result.events > 0
        await moving
        runner.wake()
        await caught_up(engine)
    assert await snapshot(engine) == await folded(engine)
    assert (await checkpoint(engine)).events_applied == await head(engine)


async def _rows(engine: AsyncEngine, projection: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the projection's tables, sorted."""
    async with engine.connect() as conn:
        return {
            table.name: sorted(tuple(r) for r in await conn.execute(sa.select(table)))
            for table in projection.tables
        }


async def test_one_runner_keeps_several_projections_each_from_its_own_checkpoint(
    engine: AsyncEngine, log: EventLog
) -> None:
    everything = registered(REFERENCE)
    assert len(everything) >= 3, [p.name for p in everything]
    await Mix(log, REFERENCE, seed=17).run(applications=10, matters=2, visits=2)
    # case_lists rebuilt alone: ahead of the others, which have never run
    await rebuild(engine, [NAME], reference=REFERENCE)
    assert (await checkpoint(engine)).events_applied == await head(engine) > 0
    await Mix(log, REFERENCE, seed=18).run(applications=6, matters=2, visits=2)
    events = await head(engine)

    runner = ProjectionRunner(log, everything, batch_size=10)
    assert await runner.catch_up() == events, "the others from the start of the log"
    assert await snapshot(engine) == await folded(engine)
    async with engine.connect() as conn:
        stored = await cps.load_all(conn)
    at_the_end = (await checkpoint(engine)).cursor
    for projection in everything:
        found = stored[projection.name]
        assert found.lease_holder == runner.holder and found.cursor == at_the_end
        assert found.events_applied == events  # case_lists: its rebuild's, then the rest
    live = {p.name: await _rows(engine, p) for p in everything}
    await rebuild(engine, [p.name for p in everything], reference=REFERENCE, restart=True)
    assert {p.name: await _rows(engine, p) for p in everything} == live

    # Another writer takes one of them: the runner stands by for it, the others go on.
    taken = everything[1].name
    runner = ProjectionRunner(log, registered(REFERENCE), batch_size=10)
    assert await runner.catch_up() == 0
    async with log.writer.begin() as conn:
        await cps.seize(conn, taken, "rebuild@elsewhere:1:x", timedelta(seconds=30))
    await log.append(*(await _one_more_visit()), case_kind=RECEPTION)
    assert await runner.step() == 0, "the batch is refused as a whole"
    assert await runner.catch_up() == 1
    async with engine.connect() as conn:
        after = await cps.load_all(conn)
    assert after[taken].events_applied == events and after[taken].lease_holder != runner.holder
    assert all(
        found.events_applied == events + 1 for name, found in after.items() if name != taken
    ), after


async def test_one_writer_at_a_time(engine: AsyncEngine, log: EventLog) -> None:
    await Mix(log, REFERENCE, seed=15).run(applications=6, matters=2, visits=2)
    first = ProjectionRunner(log, CaseLists(REFERENCE.workflows), batch_size=10)
    second = ProjectionRunner(log, CaseLists(REFERENCE.workflows), batch_size=10)
    assert await first.step() == 10
    assert await second.step() == 0, "the second stands by while the first holds the lease"
    # a rebuild takes over from the live runner, whose next batch is then refused
    async with log.writer.begin() as conn:
        await cps.seize(conn, NAME, "rebuild@elsewhere:1:x", timedelta(seconds=30))
    assert await first.step() == 0
    with pytest.raises(RebuildRunning, match="being rebuilt by rebuild@elsewhere"):
        await rebuild(engine, [NAME], reference=REFERENCE)
    # a crashed rebuild on this host (its process is gone) doesn't block the next one
    async with log.writer.begin() as conn:
        await cps.seize(conn, NAME, f"rebuild@{_host()}:999999999:x", timedelta(seconds=30))
    result = await rebuild(engine, [NAME], reference=REFERENCE)
    assert result.events == await head(engine)
    # the lease given back, a live runner goes on
    await log.append(*(await _one_more_visit()), case_kind=RECEPTION)
    assert await second.catch_up() == 1
    assert await snapshot(engine) == await folded(engine)


async def test_a_rebuild_kept_under_a_rate(engine: AsyncEngine, log: EventLog) -> None:
    """``max_rate`` spares a busy database: the rebuild waits after each batch that put it
    ahead of the rate, and still ends equal to the fold of the log."""
    await Mix(log, REFERENCE, seed=16).run(applications=4, matters=1, visits=1)
    events = await head(engine)
    batch, rate = 5, 200.0
    result = await rebuild(engine, [NAME], reference=REFERENCE, batch_size=batch, max_rate=rate)
    assert result.events == events > 4 * batch
    # it waits after every batch but the last
    slowest = (events - batch) / rate
    assert result.seconds >= slowest * 0.99, (result.seconds, slowest)
    assert await snapshot(engine) == await folded(engine)


async def test_status_and_unknown_names(engine: AsyncEngine, log: EventLog) -> None:
    [before] = await status(engine, [CaseLists(REFERENCE.workflows)])
    assert before.state == "not started" and before.lag == 0
    await Mix(log, REFERENCE, seed=16).run(applications=3, matters=1, visits=1)
    events = await head(engine)
    runner = ProjectionRunner(log, CaseLists(REFERENCE.workflows), batch_size=5)
    await runner.step()
    [behind] = await status(engine, [CaseLists(REFERENCE.workflows)])
    assert behind.state == "behind"
    assert (behind.events_applied, behind.lag) == (5, events - 5)
    await runner.catch_up()
    [done] = await status(engine, [CaseLists(REFERENCE.workflows)])
    assert (done.state, done.lag, done.events_applied) == ("up to date", 0, events)
    assert done.public()["checkpoint"]["position"] == done.cursor.position > 0
    with pytest.raises(UnknownProjection, match="no projection named nonsense"):
        await rebuild(engine, ["nonsense"], reference=REFERENCE)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(projection_checkpoints.c.name))).scalars().all()
    assert rows == [NAME]


def _host() -> str:
    return socket.gethostname()


async def _one_more_visit() -> tuple[uuid.UUID, int, list[NewEvent]]:
    event = NewEvent(
        event_type="VisitorReceived",
        occurred_at=utcnow(),
        actor=Actor(user="li.clerk", role="window_clerk", station="xuefeng_station"),
        authority="banqiao_town",
        payload={"visitor_name": "访客", "purpose": "other", "station": "xuefeng_station"},
    )
    return uuid.uuid4(), 0, [event]
