"""``caseflow audit``'s tamper-evidence commands: keys, checkpoints, verify, export, replay.

Registered on the ``caseflow audit`` group by :func:`register` (see ``shared.cli.audit``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import orjson
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.db import shown_url
from shared.application.audit.keys import (
    DEFAULT_AUDIT_KEY_FILE,
    AuditKeyError,
    ensure_audit_key,
    key_pair,
    keys_by_id,
    load_signing_key,
    public_pem,
    read_public_keys,
)
from shared.application.audit.verify import Report
from shared.settings import DEFAULT_DATABASE_URL

if TYPE_CHECKING:
    from shared.application.audit.bundle import Bundle
    from shared.application.audit.bundle_claims import Scope
    from shared.application.audit.checkpoint import Checkpoint

KeyFile = Annotated[
    Path,
    typer.Option(
        "--key-file",
        envvar="CASEFLOW_AUDIT_KEY_FILE",
        help="the audit's Ed25519 private key (PEM); its public key sits beside it as .pub.pem",
    ),
]
DatabaseUrl = Annotated[
    str, typer.Option("--database-url", envvar="CASEFLOW_DATABASE_URL", help="the log")
]
PublicKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        envvar="CASEFLOW_AUDIT_PUBLIC_KEY_FILE",
        help="PEM public key(s) the checkpoints must be signed with "
        "(default: the one beside --key-file; for a bundle, the one it carries)",
    ),
]

err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]caseflow audit:[/] {message}", highlight=False)
    return typer.Exit(code)


def _public_keys(public_key: Path | None, key_file: Path) -> dict[str, Ed25519PublicKey]:
    path = public_key or key_pair(key_file).public_path
    try:
        return read_public_keys(path)
    except AuditKeyError as e:
        if public_key is None and key_file.is_file():
            return keys_by_id([load_signing_key(key_file).public_key()])
        raise _fail(f"{e}; name the audit public key with --public-key") from None


def _check_url(url: str) -> str:
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise _fail("--database-url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    return url


def _check_database(url: str) -> None:
    """The log must exist: a SQLite path that doesn't is refused, not created."""
    _check_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).is_file():
            raise _fail(f"no database at {path} (give --database-url or CASEFLOW_DATABASE_URL)")


def _on_log(url: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` on the existing log at ``url``; database faults become messages."""
    _check_database(url)

    async def main() -> T:
        engine = _engine(url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    shown = shown_url(url)
    try:
        return asyncio.run(main())
    except (SQLAlchemyError, OSError) as e:
        text = str(getattr(e, "orig", None) or e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "no such table" in text or "does not exist" in text:
            raise _fail(
                f"the database at {shown} has no caseflow schema yet ({first}): "
                "run `caseflow migrate`, or give the log's --database-url"
            ) from None
        raise _fail(f"can't read the log at {shown}: {first}") from None


def _engine(url: str) -> AsyncEngine:
    from shared.adapters.db import create_engine

    return create_engine(_check_url(url), pool_size=2)


def init_key(key_file: KeyFile = DEFAULT_AUDIT_KEY_FILE) -> None:
    """Create the audit's signing key pair (separate from the staff token key), unless it exists."""
    try:
        pair, created = ensure_audit_key(key_file)
    except FileExistsError as e:
        raise _fail(str(e)) from None
    state = "created" if created else "already there, kept"
    typer.echo(f"audit key pair {state}: {pair.private_path} (private), {pair.public_path}")


def public_key(key_file: KeyFile = DEFAULT_AUDIT_KEY_FILE) -> None:
    """Print the audit public key (PEM): what auditors verify checkpoints with."""
    pub = key_pair(key_file).public_path
    try:
        key = load_signing_key(key_file).public_key()
    except AuditKeyError as e:
        if not pub.is_file():
            raise _fail(str(e)) from None
        typer.echo(pub.read_text(encoding="ascii"), nl=False)
        return
    typer.echo(public_pem(key), nl=False)


def checkpoint(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL, key_file: KeyFile = DEFAULT_AUDIT_KEY_FILE
) -> None:
    """Sign checkpoints over every event not yet covered (the service does it periodically)."""
    from shared.application.audit.writer import CheckpointBusy, write_all

    try:
        key = load_signing_key(key_file)
    except AuditKeyError as e:
        raise _fail(str(e)) from None

    async def run(engine: AsyncEngine) -> list[Checkpoint]:
        try:
            return await write_all(engine, key)
        except CheckpointBusy as e:
            raise _fail(str(e), 1) from None

    written = _on_log(database_url, run)
    if not written:
        typer.echo("nothing new to sign: every final event is covered")
    for cp in written:
        typer.echo(
            f"checkpoint {cp.seq}: positions {cp.after_position + 1}–{cp.upto_position}, "
            f"{cp.event_count} events, digest {cp.digest}"
        )


def _scope_line(scope: Scope) -> str:
    if scope.complete:
        return f"[bold]scope:[/] {scope.describe()}"
    return f"[bold yellow]scope: {scope.describe()}[/]"


def _print_report(report: Report, title: str, scope: Scope) -> None:
    out = Console()
    out.print(_scope_line(scope), highlight=False)
    summary = Table(title=title, show_header=False, box=None)
    summary.add_row("events", f"{report.events:,}")
    summary.add_row("cases", f"{report.cases:,}")
    summary.add_row("checkpoints", f"{report.valid_checkpoints} valid of {report.checkpoints}")
    summary.add_row(
        "covered by checkpoints",
        f"{report.covered_events:,} events (positions up to {report.covered_upto})",
    )
    summary.add_row("after the last checkpoint", f"{report.uncovered_events:,} events")
    out.print(summary)
    if report.ok:
        where = "" if scope.complete else f" in the {scope.cases or 0} selected cases"
        out.print(f"[green]no tampering found{where}[/]")
        return
    table = Table(title=f"{len(report.findings)} findings", show_lines=False)
    for column in ("kind", "position", "event", "case", "version", "checkpoint", "what"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        table.add_row(
            f"[red]{f.kind}[/]",
            str(f.position or ""),
            f.event_id or "",
            f.case_number or f.case_id or "",
            str(f.version or ""),
            str(f.checkpoint or ""),
            f.detail,
        )
    out.print(table)


def verify(
    database_url: Annotated[
        str,
        typer.Option("--database-url", envvar="CASEFLOW_DATABASE_URL", help="the log to verify"),
    ] = DEFAULT_DATABASE_URL,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="verify an exported bundle instead")
    ] = None,
    public_key_file: PublicKeyFile = None,
    key_file: KeyFile = DEFAULT_AUDIT_KEY_FILE,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    """Check every event's hash, every case's links and versions, and every signed
    checkpoint; name each tampered event. Exit 0 if clean, 1 if anything was found.

    A bundle may be a selection (a station's, a period's cases): the report says so, and
    cases outside it are not checked."""
    from shared.application.audit.bundle_claims import COMPLETE

    if bundle is not None:
        (report, scope), title = _verify_bundle(bundle, public_key_file), f"bundle {bundle}"
    else:
        _check_url(database_url)
        keys = _public_keys(public_key_file, key_file)
        report, scope, title = _verify_database(database_url, keys), COMPLETE, "the log"
    if as_json:
        typer.echo(orjson.dumps({**report.as_dict(), "scope": scope.as_dict()}).decode())
    else:
        _print_report(report, f"verified {title}", scope)
    raise typer.Exit(0 if report.ok else 1)


def _verify_database(url: str, keys: Mapping[str, Ed25519PublicKey]) -> Report:
    from shared.application.audit.database import verify_database

    return _on_log(url, lambda engine: verify_database(engine, keys))


def _open_bundle(
    path: Path, public_key_file: Path | None
) -> tuple[Bundle, dict[str, Ed25519PublicKey]]:
    from shared.application.audit.bundle import BundleError, open_bundle

    try:
        opened = open_bundle(path)
        keys = read_public_keys(public_key_file) if public_key_file else opened.keys()
    except (BundleError, AuditKeyError) as e:
        raise _fail(str(e)) from None
    if public_key_file is None:
        ids = ", ".join(keys) or "none"
        err.print(
            f"[yellow]verifying with the public key the bundle carries (id {ids}); "
            "compare it with the one the city publishes, or pass --public-key[/]"
        )
    return opened, keys


def _verify_bundle(path: Path, public_key_file: Path | None) -> tuple[Report, Scope]:
    from shared.application.audit.bundle import BundleError, verify_bundle

    opened, keys = _open_bundle(path, public_key_file)
    try:
        return verify_bundle(opened, keys), opened.scope
    except BundleError as e:
        raise _fail(str(e)) from None


def _date(text: str | None, option: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option} must be a date like 2026-03-01, not {text!r}") from None


def export(
    out: Annotated[Path, typer.Option("--out", help="a new folder for the bundle")],
    date_from: Annotated[
        str | None, typer.Option("--from", help="first day (local date, YYYY-MM-DD)")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="last day, inclusive (YYYY-MM-DD)")
    ] = None,
    station: Annotated[str | None, typer.Option("--station", help="a station's code")] = None,
    public_key_file: PublicKeyFile = None,
    key_file: KeyFile = DEFAULT_AUDIT_KEY_FILE,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Write a portable, verifiable bundle: events as JSON Lines, the signed checkpoints
    and a manifest with the files' hashes and the public key."""
    from shared.application.audit.bundle import BundleError, Selection, export_bundle

    _check_url(database_url)
    start, end = _date(date_from, "--from"), _date(date_to, "--to")
    if start and end and end < start:
        raise _fail("--to is before --from")
    keys = _public_keys(public_key_file, key_file)

    async def run(engine: AsyncEngine) -> dict[str, object]:
        try:
            return await export_bundle(engine, out, keys, Selection(station, start, end))
        except BundleError as e:
            raise _fail(str(e)) from None

    manifest = _on_log(database_url, run)
    counts = manifest["events"]
    assert isinstance(counts, dict)
    typer.echo(
        f"bundle written to {out}: {counts['count']} events of {manifest['case_count']} cases, "
        f"{len(manifest['checkpoints'])} checkpoints"  # type: ignore[arg-type]
    )


def replay(
    bundle: Annotated[Path, typer.Argument(help="the bundle folder")],
    database_url: Annotated[
        str, typer.Option("--database-url", help="an empty database to replay into")
    ],
    public_key_file: PublicKeyFile = None,
) -> None:
    """Verify a bundle, load it into an empty database and rebuild the read models."""
    from shared.application.audit.bundle import BundleError
    from shared.application.audit.replay import ReplayRefused, replay_bundle

    opened, keys = _open_bundle(bundle, public_key_file)

    async def run() -> None:
        engine = _engine(database_url)
        try:
            await replay_bundle(opened, engine, database_url, keys)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except ReplayRefused as e:
        raise _fail(str(e), 1) from None
    except BundleError as e:  # a damaged bundle, as when opening it
        raise _fail(str(e)) from None
    count = opened.manifest["events"]["count"]
    typer.echo(f"replayed {count} events and {len(opened.checkpoints)} checkpoints")
    scope = opened.scope
    typer.echo(
        f"scope: {scope.describe()}"
        + ("" if scope.complete else "; the read models hold these cases only")
    )


def register(app: typer.Typer) -> None:
    """Add these commands to ``caseflow audit``."""
    app.command("init-key")(init_key)
    app.command("public-key")(public_key)
    app.command("checkpoint")(checkpoint)
    app.command("verify")(verify)
    app.command("export")(export)
    app.command("replay")(replay)
