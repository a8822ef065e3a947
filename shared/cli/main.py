"""The ``caseflow`` command: run the stack, one service, migrations, the AsyncAPI document."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from services.notify.cli import app as notify_app
from shared.cli.audit import app as audit_app
from shared.cli.calendar import app as calendar_app
from shared.cli.catalogue import app as catalogue_app
from shared.cli.deadletters import app as bus_app
from shared.cli.nats import app as nats_app
from shared.cli.projections import app as projections_app
from shared.settings import DEFAULT_NATS_URL

app = typer.Typer(
    help="caseflow: event-sourced workflows for government service stations.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _private_files() -> None:
    """Whatever a caseflow command writes (keys, NATS seeds, the event log, audit
    exports with applicants in full, replayed databases) is the operator's alone."""
    os.umask(0o077)


app.add_typer(catalogue_app, name="catalogue")
app.add_typer(calendar_app, name="calendar")
app.add_typer(notify_app, name="notify")
app.add_typer(audit_app, name="audit")
app.add_typer(projections_app, name="projections")
app.add_typer(nats_app, name="nats")
app.add_typer(bus_app, name="bus")

SERVICES = ("intake", "processing", "notify")
SERVABLE = (*SERVICES, "console")
"""What `caseflow serve` runs: the three services and the staff console."""


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="intake, processing, notify or console")],
) -> None:
    """Run one service (settings from CASEFLOW_<SERVICE>_* variables)."""
    import uvicorn

    from shared.logging import configure_logging

    if service not in SERVABLE:
        raise typer.BadParameter(f"must be one of {', '.join(SERVABLE)}", param_hint="SERVICE")
    module = __import__(f"services.{service}.app", fromlist=["create_app"])
    settings_module = __import__(f"services.{service}.settings", fromlist=["x"])
    from pydantic_settings import BaseSettings

    from shared.settings import load_settings

    settings_cls = next(
        v
        for v in vars(settings_module).values()
        if isinstance(v, type)
        and issubclass(v, BaseSettings)
        and v.__module__ == settings_module.__name__
    )
    settings: Any = load_settings(settings_cls)  # each has host, port, log_level, grace
    configure_logging(service, settings.log_level)
    uvicorn.run(
        module.create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        root_path=getattr(settings, "root_path", ""),
        access_log=False,
    )


@app.command()
def migrate(
    database_url: Annotated[str, typer.Option(envvar="CASEFLOW_DATABASE_URL")],
    database_password_file: Annotated[
        Path | None,
        typer.Option(
            envvar="CASEFLOW_DATABASE_PASSWORD_FILE",
            help="the password, from a file (a compose secret), for a URL that has none",
        ),
    ] = None,
    seed_delegations: Annotated[
        bool,
        typer.Option(
            "--seed-delegations",
            help="also publish the packaged delegation instruments missing from the log",
        ),
    ] = False,
) -> None:
    """Bring the database schema to the newest revision (Alembic)."""
    import asyncio

    from shared.adapters.db import database_problem, with_password_file
    from shared.adapters.db import migrate as run
    from shared.cli.supervisor import publish_seed_delegations

    try:
        database_url = with_password_file(database_url, database_password_file)
        run(database_url)
        published = asyncio.run(publish_seed_delegations(database_url)) if seed_delegations else 0
    except Exception as err:  # unreachable, refused, a broken URL: one line, no secret
        typer.echo(f"caseflow: {database_problem(database_url, err)}", err=True)
        raise typer.Exit(1) from None
    typer.echo("schema is up to date")
    if seed_delegations:
        typer.echo(f"published {published} delegation instruments")


@app.command()
def up(
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="CASEFLOW_DATABASE_URL",
            help="postgresql+asyncpg://… or sqlite+aiosqlite://… (default: SQLite under"
            " --data-dir)",
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(help=f"an external NATS (default: start nats-server on {DEFAULT_NATS_URL})"),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="where the embedded default keeps its data")
    ] = Path("var"),
    nats_dir: Annotated[
        Path | None,
        typer.Option(
            help="caseflow's NATS users (seeds, register, server config) if not under "
            "<data-dir>/nats: the folder an external NATS takes its users from"
        ),
    ] = None,
    host: str = "127.0.0.1",
    intake_port: int = 8001,
    processing_port: int = 8002,
    notify_port: int = 8003,
    console_port: Annotated[
        int, typer.Option(help="the staff console (sign in with one of the demo staff)")
    ] = 8000,
    nats_port: int = 4222,
    sandbox_smtp_port: Annotated[
        int, typer.Option(help="the sandbox's local mailbox (what notify e-mails lands there)")
    ] = 8025,
    sandbox_sms_port: Annotated[int, typer.Option(help="the sandbox's SMS gateway")] = 8004,
    sandbox_webhook_port: Annotated[
        int, typer.Option(help="the sandbox's webhook receiver (the one local address allowed)")
    ] = 8005,
) -> None:
    """Run the whole system: nats-server (unless --nats-url), migrations, the three services
    and the staff console."""
    from shared.cli.supervisor import Stack

    stack = Stack(
        data_dir=data_dir.resolve(),
        database_url=database_url,
        nats_url=nats_url,
        host=host,
        ports={
            "intake": intake_port,
            "processing": processing_port,
            "notify": notify_port,
            "console": console_port,
        },
        nats_port=nats_port,
        nats_dir=nats_dir.resolve() if nats_dir else None,
        sandbox_ports={
            "smtp": sandbox_smtp_port,
            "sms": sandbox_sms_port,
            "webhook": sandbox_webhook_port,
        },
    )
    raise typer.Exit(stack.run())


keys_app = typer.Typer(help="The key pair that signs staff tokens.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KEY_DIR_HELP = "folder of jwt-ed25519.pem / jwt-ed25519.pub.pem"


@keys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Option("--dir", help=KEY_DIR_HELP)] = Path("var/keys"),
) -> None:
    """Create the Ed25519 key pair that signs staff tokens, unless it exists."""
    from shared.adapters.auth import SigningKey, ensure_key_pair

    try:
        pair, created = ensure_key_pair(directory)
    except FileExistsError as err:
        raise typer.BadParameter(str(err), param_hint="--dir") from None
    kid = SigningKey.load(directory).kid
    state = "created" if created else "already there, kept"
    typer.echo(f"key pair {state}: {pair.private_path} (private), {pair.public_path} (kid {kid})")


@keys_app.command("jwks")
def keys_jwks(
    directory: Annotated[Path, typer.Option("--dir", help=KEY_DIR_HELP)] = Path("var/keys"),
) -> None:
    """Print the public key(s) as a JWKS document, to publish for other verifiers."""
    from shared.adapters.auth import KeyPair, jwks, load_public_keys

    path = KeyPair(directory).public_path
    if not path.is_file():
        raise typer.BadParameter(f"{path} not found; run `caseflow keys init`", param_hint="--dir")
    typer.echo(json.dumps(jwks(load_public_keys(path)), indent=2))


@app.command()
def token(
    user: Annotated[str, typer.Option(help="user id (the token's subject)")],
    role: Annotated[
        str, typer.Option(help="window_clerk, reviewer, station_head, department_officer, auditor")
    ],
    org: Annotated[str, typer.Option(help="organisation code, e.g. xuefeng_station")],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    ttl: Annotated[str, typer.Option(help="lifetime: 12h, 30m, 1h30m, 7d")] = "12h",
    key_dir: Annotated[Path, typer.Option(help=KEY_DIR_HELP)] = Path("var/keys"),
    permission: Annotated[
        list[str] | None,
        typer.Option(help="a special permission, e.g. reopen or backfill (repeatable)"),
    ] = None,
) -> None:
    """Print a staff bearer token signed with the local key (the embedded default)."""
    from shared.adapters.auth import (
        ClaimsRefused,
        KeyPair,
        Role,
        SignedInStaff,
        SigningKey,
        check_claims,
        issue_token,
        user_id_problem,
    )
    from shared.adapters.auth import parse_ttl as parse
    from shared.domain.orgs import load_organisations

    try:
        staff_role = Role(role)
    except ValueError:
        raise typer.BadParameter(
            f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}", param_hint="--role"
        ) from None
    organisations = load_organisations()
    if org not in organisations:
        known = ", ".join(o.code for o in organisations)
        raise typer.BadParameter(
            f"unknown organisation {org!r}; known: {known}", param_hint="--org"
        ) from None
    try:
        lifetime = parse(ttl)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--ttl") from None
    if problem := user_id_problem(user.strip()):
        raise typer.BadParameter(f"the user id {problem}", param_hint="--user")
    staff = SignedInStaff(
        user=user.strip(),
        role=staff_role,
        org=org,
        name=name,
        permissions=frozenset(permission or ()),
    )
    try:  # the services would refuse the token: don't sign it
        check_claims(staff, organisations)
    except ClaimsRefused as err:
        hint = "--permission" if "permission" in err.reason else "--role"
        raise typer.BadParameter(str(err), param_hint=hint) from None
    if not KeyPair(key_dir).private_path.is_file():
        raise typer.BadParameter(
            f"no signing key in {key_dir}; run `caseflow keys init --dir {key_dir}`",
            param_hint="--key-dir",
        )
    typer.echo(issue_token(staff, SigningKey.load(key_dir), ttl=lifetime))


@app.command()
def demo(
    intake_url: Annotated[str, typer.Option(help="intake's address")] = "http://127.0.0.1:8001",
    processing_url: Annotated[
        str, typer.Option(help="processing's address")
    ] = "http://127.0.0.1:8002",
    key_dir: Annotated[Path, typer.Option(help=KEY_DIR_HELP)] = Path("var/keys"),
    days: Annotated[int, typer.Option(min=1, max=365, help="how many days back")] = 30,
    scale: Annotated[
        str, typer.Option(help="small, normal (the station's own pace), busy, or a number")
    ] = "normal",
    seed: Annotated[int, typer.Option(help="same seed, same people and cases")] = 2021,
    tokens: Annotated[Path, typer.Option(help="where to write the staff's tokens")] = Path(
        "var/demo-tokens.json"
    ),
) -> None:
    """Load about a month of station activity through the running services' APIs."""
    from shared.cli import demo as loader

    if not (key_dir / "jwt-ed25519.pem").is_file():
        raise typer.BadParameter(
            f"no signing key in {key_dir}: start the stack with `make up` first",
            param_hint="--key-dir",
        )
    try:
        factor = loader.parse_scale(scale)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--scale") from None
    raise typer.Exit(
        loader.main(
            intake_url=intake_url,
            processing_url=processing_url,
            key_dir=key_dir,
            tokens=tokens,
            days=days,
            scale=factor,
            seed=seed,
        )
    )


@app.command()
def asyncapi(
    output: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Print the AsyncAPI document of caseflow's subjects and message schemas."""
    from shared.adapters.bus.asyncapi import document

    text = json.dumps(document(), indent=2, ensure_ascii=False)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    else:
        typer.echo(text)


if __name__ == "__main__":
    app()
