"""``caseflow bus``: the bus's dead letters, listed and handled again (as the operator)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from nats.aio.client import Client as NATS
from rich.console import Console
from rich.table import Table

from shared.adapters.bus.access import OPERATOR
from shared.adapters.bus.client import connect
from shared.adapters.bus.credentials import CredentialStore
from shared.adapters.bus.deadletters import Asked, DeadLetter, dead_letters, redrive
from shared.settings import DEFAULT_NATS_URL

app = typer.Typer(
    help="The bus's dead letters: list them, and have their consumers handle them again.",
    no_args_is_help=True,
)
NatsUrl = Annotated[str, typer.Option(envvar="CASEFLOW_NATS_URL", help="the NATS server")]
Folder = Annotated[
    Path,
    typer.Option(
        "--nats-dir", help="caseflow's NATS users (`caseflow up` keeps them in <data dir>/nats)"
    ),
]
Consumer = Annotated[
    str | None, typer.Option(help="only this consumer's (e.g. notify, processing-dept)")
]
T = TypeVar("T")


def _as_operator(url: str, folder: Path, work: Callable[[NATS], Awaitable[T]]) -> T:
    seed = CredentialStore(folder).seed_path(OPERATOR)
    if not seed.exists():
        typer.echo(f"no operator seed at {seed}: run `caseflow nats init --dir {folder}`", err=True)
        raise typer.Exit(2)

    async def run() -> T:
        try:
            nc = await connect(url, user=OPERATOR, seed_file=seed, connect_timeout=5)
        except Exception as err:
            typer.echo(f"can't reach NATS at {url}: {str(err) or type(err).__name__}", err=True)
            raise typer.Exit(1) from err
        try:
            return await work(nc)
        finally:
            await nc.close()

    return asyncio.run(run())


def _table(letters: list[DeadLetter]) -> Table:
    table = Table("seq", "consumer", "dead since", "event", "case", "original subject", "reason")
    for letter in letters:
        table.add_row(
            str(letter.sequence),
            letter.consumer + ("" if letter.redrivable else " (no redrive)"),
            letter.dead_since.strftime("%Y-%m-%d %H:%M:%S") if letter.dead_since else "",
            letter.event_id or "",
            letter.case_id or "",
            letter.subject,
            letter.reason,
        )
    return table


@app.command("dead-letters")
def list_dead_letters(
    consumer: Consumer = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    folder: Folder = Path("var/nats"),
) -> None:
    """Every dead letter: its sequence, consumer, event and case ids, and why."""
    letters = _as_operator(nats_url, folder, lambda nc: dead_letters(nc.jetstream(), consumer))
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.as_json(), ensure_ascii=False))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    Console(width=200).print(_table(letters))
    typer.echo(f"{len(letters)} dead letters; `caseflow bus redrive --all` handles them again")


@app.command("redrive")
def redrive_dead_letters(
    sequences: Annotated[
        list[int] | None, typer.Argument(help="the dead letters' sequences (see dead-letters)")
    ] = None,
    consumer: Consumer = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter (of --consumer)")] = False,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    folder: Folder = Path("var/nats"),
) -> None:
    """Have dead letters handled again by their consumers, whatever the event's age; each
    is deleted from the dead letters once handled (and comes back, with the new reason,
    if it fails again)."""
    wanted = set(sequences or ())
    if not wanted and not every:
        typer.echo("name the dead letters' sequences, or --all", err=True)
        raise typer.Exit(2)

    async def work(nc: NATS) -> tuple[list[DeadLetter], Asked]:
        js = nc.jetstream()
        letters = await dead_letters(js, consumer)
        chosen = letters if every else [x for x in letters if x.sequence in wanted]
        return chosen, await redrive(js, chosen)

    chosen, done = _as_operator(nats_url, folder, work)
    missing = wanted - {letter.sequence for letter in chosen}
    for sequence in sorted(missing):
        typer.echo(f"no dead letter {sequence}" + (f" of {consumer}" if consumer else ""))
    for letter in chosen:
        if letter in done.pending:
            typer.echo(
                f"dead letter {letter.sequence} of {letter.consumer} was asked for already "
                "in the last 10 minutes; that request stands (see dead-letters again later)"
            )
        elif letter not in done.asked:
            typer.echo(
                f"dead letter {letter.sequence} of {letter.consumer} is not re-driven: its "
                "consumer does not take dead letters again (the sender sends anew)"
            )
    typer.echo(f"asked for {len(done.asked)} dead letters to be handled again")
    if missing:
        raise typer.Exit(1)
