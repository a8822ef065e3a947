"""``caseflow projections status`` and ``rebuild`` against real databases: the figures,
the progress and the rows; Ctrl-C in the middle of a rebuild and running it again; the
user's mistakes answered with a message, not a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from bench.projection_mix import Mix
from shared.adapters.db import WRITE_OPTION, create_engine
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.projections import projection_checkpoints
from shared.application.projections import checkpoints as cps
from shared.cli.main import app
from shared.devtools import waiting
from shared.devtools.waiting import eventually, wait_until
from shared.domain.events import utcnow
from shared.domain.workflow.reference import load_reference
from tests.contract.projections import NAME, folded, head, snapshot

REFERENCE = load_reference()
runner = CliRunner()


def _mix(url: str, seed: int, **sizes: int) -> int:
    """Put a mix of cases into the log; how many events it holds."""

    async def go() -> int:
        engine = create_engine(url)
        try:
            await Mix(EventLog(engine), REFERENCE, seed=seed).run(**sizes)
            return await head(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def applied(url: str, events: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the rebuild run by ``proc`` has applied ``events`` (fails with its output if it
    exits first)."""

    def progressed() -> bool:
        checkpoint = _checkpoint(url)
        return checkpoint is not None and checkpoint.events_applied >= events

    wait_until(
        progressed,
        what=f"the rebuild to apply {events} events",
        timeout=60,
        interval=0.02,
        give_up=waiting.exited(proc, "the rebuild"),
        detail=lambda: proc.communicate(timeout=10) if proc.poll() is not None else "",
    )


def _checkpoint(url: str) -> cps.Checkpoint | None:
    async def go() -> cps.Checkpoint | None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await cps.load(conn, NAME)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _state(url: str) -> tuple[cps.Checkpoint | None, bool]:
    """The checkpoint, and whether the rows equal the fold of the log."""

    async def go() -> tuple[cps.Checkpoint | None, bool]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                found = await cps.load(conn, NAME)
            return found, await snapshot(engine) == await folded(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_status_then_rebuild(db_url: str) -> None:
    events = _mix(db_url, 21, applications=8, matters=2, visits=2)
    result = runner.invoke(app, ["projections", "status", "--database-url", db_url, "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [p["name"] for p in listed] == [NAME, "statistics", "delegation_usage"]
    before = listed[0]
    assert before["tables"] == ["case_index", "tasks"]
    assert (before["state"], before["lag"], before["events_applied"]) == (
        "not started",
        events,
        0,
    )

    result = runner.invoke(app, ["projections", "rebuild", NAME, "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert f"rebuilt {NAME}: {events:,} events" in result.stdout
    checkpoint, equal = _state(db_url)
    assert equal
    assert checkpoint is not None and checkpoint.events_applied == events

    result = runner.invoke(app, ["projections", "status", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert NAME in result.stdout and "up to date" in result.stdout


def test_mistakes_get_a_message(db_url: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["projections", "rebuild", "nope", "--database-url", db_url])
    assert result.exit_code == 2
    assert (
        "no projection named nope (there are: case_lists, statistics, delegation_usage)"
        in result.output
    )
    assert "Traceback" not in result.output

    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = runner.invoke(app, ["projections", "status", "--database-url", empty])
    assert result.exit_code == 1
    assert "no caseflow schema yet" in result.output and "caseflow migrate" in result.output

    result = runner.invoke(app, ["projections", "status", "--database-url", "nonsense://x"])
    assert result.exit_code == 2
    assert "bad --database-url" in result.output


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_then_run_again_continues(db_url: str) -> None:
    events = _mix(db_url, 22, applications=20, matters=4, visits=4)
    argv = [
        sys.executable,
        "-m",
        "shared.cli.main",
        "projections",
        "rebuild",
        NAME,
        "--batch-size",
        "1",
        # slow enough that the test acts while the rebuild runs, however loaded the
        # machine (unthrottled, it once applied every event between two looks)
        "--max-rate",
        "20",
    ]
    env = {**os.environ, "CASEFLOW_DATABASE_URL": db_url}
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as a terminal delivers it: a run started in the background (a CI job, a
        # `make test &`) inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt, so the rebuild ran to the end and exited 0.
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        applied(db_url, 5, proc)  # interrupt once some batches are in
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "interrupted after" in err.decode() and "again to continue" in err.decode()
    assert "Traceback" not in err.decode()
    stopped, _ = _state(db_url)
    assert stopped is not None and stopped.rebuilding
    assert 5 <= stopped.events_applied < events
    assert stopped.lease_holder is None

    result = runner.invoke(app, ["projections", "rebuild", NAME, "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert f"continued ({NAME}) {NAME}: {events - stopped.events_applied:,} events" in (
        result.stdout
    )
    finished, equal = _state(db_url)
    assert equal
    assert finished is not None and not finished.rebuilding
    assert finished.events_applied == events


def _runner_takes_the_lapsed_lease(url: str, events: int, proc: subprocess.Popen[bytes]) -> None:
    """Once the rebuild run by ``proc`` has applied ``events`` events, what a live runner
    does when the rebuild's lease has lapsed. The look and the take are one transaction
    that holds the checkpoint (SQLite's write lock, PostgreSQL's row lock): the rebuild
    can't finish in between, however fast it runs (it did, on a loaded machine, between
    a look and a take made apart)."""

    async def go() -> None:
        engine = create_engine(url)

        async def take() -> cps.Checkpoint | None:
            async with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
                seen = await cps.load(conn, NAME, lock=True)
                if seen is None or seen.events_applied < events:
                    await conn.rollback()
                    return None
                assert seen.rebuilding, f"the rebuild finished before the lease was taken: {seen}"
                await conn.execute(
                    projection_checkpoints.update()
                    .where(projection_checkpoints.c.name == NAME)
                    .values(lease_until=utcnow() - timedelta(seconds=1))
                )
                taken = await cps.take_lease(conn, NAME, cps.holder_id(), timedelta(seconds=30))
                assert taken is not None
                return taken

        try:
            await eventually(
                take,
                what=f"the rebuild to apply {events} events",
                timeout=60,
                interval=0.02,
                give_up=waiting.exited(proc, "the rebuild"),
            )
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_a_lease_taken_by_a_live_runner_stops_the_rebuild_with_a_message(db_url: str) -> None:
    _mix(db_url, 23, applications=20, matters=4, visits=4)
    argv = [
        sys.executable,
        "-m",
        "shared.cli.main",
        "projections",
        "rebuild",
        NAME,
        "--batch-size",
        "1",
        # slow enough that the test acts while the rebuild runs, however loaded the
        # machine (unthrottled, it once applied every event between two looks)
        "--max-rate",
        "20",
    ]
    env = {**os.environ, "CASEFLOW_DATABASE_URL": db_url}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _runner_takes_the_lapsed_lease(db_url, 3, proc)  # once some batches are in
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = " ".join(err.decode().split())
    assert proc.returncode == 1, text
    assert "another writer holds its checkpoint now" in text, text
    assert "run the same command again to continue" in text
    assert "Traceback" not in text

    again = runner.invoke(app, ["projections", "rebuild", NAME, "--database-url", db_url])
    assert again.exit_code == 0, again.output
    finished, equal = _state(db_url)
    assert equal and finished is not None and not finished.rebuilding
