"""The ``caseflow`` command: run the stack, one service, migrations, the AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shared.settings import DEFAULT_NATS_URL

app = typer.Typer(
    help="caseflow: event-sourced workflows for government service stations.",
    no_args_is_help=True,
    add_completion=False,
)

SERVICES = ("intake", "processing", "notify")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="intake, processing or notify")],
) -> None:
    """Run one service (settings from CASEFLOW_<SERVICE>_* variables)."""
    import uvicorn

    from shared.logging import configure_logging

    if service not in SERVICES:
        raise typer.BadParameter(f"must be one of {', '.join(SERVICES)}", param_hint="SERVICE")
    module = __import__(f"services.{service}.app", fromlist=["create_app"])
    settings_module = __import__(f"services.{service}.settings", fromlist=["x"])
    from shared.settings import load_settings

    settings_cls = next(
        v
        for k, v in vars(settings_module).items()
        if k.endswith("Settings") and k != "ServiceSettings"
    )
    settings = load_settings(settings_cls)
    configure_logging(service, settings.log_level)
    uvicorn.run(
        module.create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        access_log=False,
    )


@app.command()
def migrate(
    database_url: Annotated[str, typer.Option(envvar="CASEFLOW_DATABASE_URL")],
) -> None:
    """Bring the database schema to the newest revision (Alembic)."""
    from shared.db import migrate as run

    run(database_url)
    typer.echo("schema is up to date")


@app.command()
def up(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="postgresql+asyncpg://… or sqlite+aiosqlite://… (default: SQLite under --data-dir)"
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(help=f"an external NATS (default: start nats-server on {DEFAULT_NATS_URL})"),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="where the embedded default keeps its data")
    ] = Path("var"),
    host: str = "127.0.0.1",
    intake_port: int = 8001,
    processing_port: int = 8002,
    notify_port: int = 8003,
    nats_port: int = 4222,
) -> None:
    """Run the whole system: nats-server (unless --nats-url), migrations, three services."""
    from shared.supervisor import Stack

    stack = Stack(
        data_dir=data_dir.resolve(),
        database_url=database_url,
        nats_url=nats_url,
        host=host,
        ports={"intake": intake_port, "processing": processing_port, "notify": notify_port},
        nats_port=nats_port,
    )
    raise typer.Exit(stack.run())


@app.command()
def asyncapi(
    output: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Print the AsyncAPI document of caseflow's subjects and message schemas."""
    from shared.bus.asyncapi import document

    text = json.dumps(document(), indent=2, ensure_ascii=False)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    else:
        typer.echo(text)


if __name__ == "__main__":
    app()
