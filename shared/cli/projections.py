"""``caseflow projections``: the read models kept from the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.db import create_engine
from shared.settings import DEFAULT_DATABASE_URL

app = typer.Typer(
    help="Read models (projections of the log): status, rebuild.", no_args_is_help=True
)
DatabaseUrl = Annotated[
    str, typer.Option(envvar="CASEFLOW_DATABASE_URL", help="the event log's database")
]
T = TypeVar("T")
err_console = Console(stderr=True, soft_wrap=True)  # a message stays one line


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _run(database_url: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` on an engine for ``database_url``; database faults become messages."""

    async def main() -> T:
        engine = create_engine(database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except sa_exc.ArgumentError as err:
        raise _fail(f"bad --database-url: {err}", 2) from None
    except (sa_exc.OperationalError, sa_exc.ProgrammingError) as err:
        text = str(err.orig) if err.orig is not None else str(err)
        if "no such table" in text or "does not exist" in text:
            raise _fail(
                f"the database has no caseflow schema yet ({text}): run `caseflow migrate`"
            ) from None
        raise _fail(f"database error: {text}") from None
    except (OSError, sa_exc.InterfaceError) as err:
        raise _fail(f"can't reach the database: {err}") from None


@app.command()
def status(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """Each projection's checkpoint, events applied and lag behind the log."""
    from shared.application.projections.registry import projections
    from shared.application.projections.status import status as find_status
    from shared.domain.workflow.reference import load_reference

    found = _run(database_url, lambda engine: find_status(engine, projections(load_reference())))
    if as_json:
        typer.echo(json.dumps([s.public() for s in found], ensure_ascii=False, indent=2))
        return
    table = Table(title="projections")
    for column in ("projection", "tables", "checkpoint", "applied", "lag", "state", "updated"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(
            s.name,
            ", ".join(s.tables),
            str(s.cursor),
            f"{s.events_applied:,}",
            f"{s.lag:,}",
            s.state + (f" ({s.writer})" if s.writer else ""),
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S") if s.updated_at else "",
        )
    Console().print(table)


@app.command()
def rebuild(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="projections to rebuild (default: all)", show_default=False),
    ] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="start again from the beginning of the log"),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="events per batch")] = 10_000,
    max_rate: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="events per second at most, to spare a database the services are busy with",
            show_default="as fast as it can",
        ),
    ] = None,
) -> None:
    """Empty the projections' tables and replay the log into them, with a progress bar.

    An interrupted rebuild (Ctrl-C, a crash) continues from where it stopped when run
    again, unless --restart. Safe while the services run: their runners stand by.
    """
    from shared.application.projections.checkpoints import LeaseLost
    from shared.application.projections.rebuild import RebuildResult, RebuildRunning
    from shared.application.projections.rebuild import rebuild as run_rebuild
    from shared.application.projections.registry import UnknownProjection, projections, select
    from shared.domain.workflow.reference import load_reference

    reference = load_reference()
    chosen = names or None
    try:
        select(projections(reference), chosen)
    except UnknownProjection as err:
        raise _fail(str(err), 2) from None
    done = 0
    with Progress(
        TextColumn("[bold]rebuilding[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(", ".join(chosen or [p.name for p in projections(reference)]), rate="")

        def progress(events_done: int, total: int) -> None:
            nonlocal done
            done = events_done
            speed = bar.tasks[0].speed
            rate = f"{speed:,.0f} events/s" if speed else ""
            bar.update(task, completed=events_done, total=total, rate=rate)

        try:
            result: RebuildResult = _run(
                database_url,
                lambda engine: run_rebuild(
                    engine,
                    chosen,
                    progress=progress,
                    restart=restart,
                    reference=reference,
                    batch_size=batch_size,
                    max_rate=max_rate,
                ),
            )
        except KeyboardInterrupt:
            bar.stop()
            raise _fail(
                f"interrupted after {done:,} events; run the same command again to continue "
                "(or with --restart to start again)",
                130,
            ) from None
        except RebuildRunning as err:
            raise _fail(str(err)) from None
        except LeaseLost as err:
            bar.stop()
            raise _fail(
                f"stopped after {done:,} events: {err} (a live runner took the rebuild's "
                "lease when it lapsed); run the same command again to continue"
            ) from None
    how = f"continued ({', '.join(result.resumed)})" if result.resumed else "rebuilt"
    typer.echo(
        f"{how} {', '.join(result.names)}: {result.events:,} events in {result.seconds:.2f} s "
        f"({result.events_per_second:,.0f} events/s)"
    )
