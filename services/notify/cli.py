"""``caseflow notify``: the operator's view of deliveries and dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from services.notify import outbox
from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.settings import DEFAULT_DATABASE_URL

app = typer.Typer(help="Notices: deliveries and dead letters.", no_args_is_help=True)
DatabaseUrl = Annotated[
    str, typer.Option(envvar="CASEFLOW_DATABASE_URL", help="the event log's database")
]
T = TypeVar("T")


def _run(database_url: str, work: Callable[[EventLog], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(database_url)
        try:
            return await work(EventLog(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _table(title: str, rows: list[outbox.Delivery]) -> Table:
    table = Table(title=title)
    for column in ("delivery", "case", "event", "channel", "to", "attempts", "when", "reason"):
        table.add_column(column, overflow="fold")
    for d in rows:
        when = d.failed_at or d.sent_at or d.created_at
        table.add_row(
            str(d.delivery_id),
            str(d.case_id)[:8],
            d.event_type,
            d.channel,
            d.masked,
            str(d.attempts),
            when.strftime("%Y-%m-%d %H:%M:%S"),
            d.last_error or "",
        )
    return table


@app.command("dead-letters")
def dead_letters(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    station: Annotated[str | None, typer.Option(help="one station's only")] = None,
    channel: Annotated[str | None, typer.Option(help="email, sms or webhook")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """List notices given up on, newest first, with the reason."""
    rows = _run(
        database_url,
        lambda log: outbox.find(
            log, status=outbox.FAILED, station=station, channel=channel, limit=limit
        ),
    )
    if as_json:
        typer.echo(json.dumps([d.public() for d in rows], ensure_ascii=False, indent=2))
        return
    Console().print(_table(f"{len(rows)} dead letter(s)", rows))


@app.command()
def redrive(
    delivery_ids: Annotated[
        list[str] | None, typer.Argument(help="dead letters to send again (ids)")
    ] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    all_: Annotated[
        bool, typer.Option("--all", help="every dead letter (of --station, if given)")
    ] = False,
    station: Annotated[str | None, typer.Option(help="with --all: one station's only")] = None,
) -> None:
    """Send dead letters again with a fresh set of attempts (the same idempotency key)."""
    if bool(delivery_ids) == all_:
        raise typer.BadParameter("name delivery ids, or give --all")
    try:
        ids = [uuid.UUID(i) for i in delivery_ids or ()]
    except ValueError as err:
        raise typer.BadParameter(f"not a delivery id: {err}") from None

    async def work(log: EventLog) -> list[uuid.UUID]:
        wanted = ids
        if all_:
            found = await outbox.find(log, status=outbox.FAILED, station=station, limit=100_000)
            wanted = [d.delivery_id for d in found]
        return await outbox.redrive(log, wanted)

    taken = _run(database_url, work)
    missing = [str(i) for i in ids if i not in set(taken)]
    typer.echo(f"re-driven {len(taken)} dead letter(s); notify sends them within seconds")
    if missing:
        typer.echo(f"not dead letters (sent, pending or unknown): {', '.join(missing)}", err=True)
        raise typer.Exit(1)


@app.command()
def status(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """How many deliveries are pending, sent, failed (dead letters) and cancelled."""
    found = _run(database_url, outbox.counts)
    for name in (outbox.PENDING, outbox.SENT, outbox.FAILED, outbox.CANCELLED):
        typer.echo(f"{name:>10}: {found.get(name, 0)}")
