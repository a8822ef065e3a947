"""``caseflow nats``: the bus's users — caseflow's own, and the departments' systems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shared.adapters.bus.credentials import (
    CredentialError,
    CredentialStore,
    authorities,
    write_private,
)
from shared.settings import DEFAULT_NATS_URL

app = typer.Typer(
    help="NATS users: every client authenticates with an NKEY and gets only its subjects.",
    no_args_is_help=True,
)
Folder = Annotated[
    Path,
    typer.Option("--dir", help="the credentials folder (`caseflow up` uses <data dir>/nats)"),
]
ReferenceData = Annotated[
    Path | None,
    typer.Option(
        "--reference-data",
        envvar="CASEFLOW_PROCESSING_DATA_DIR",
        help="reference data with the organisations (default: the packaged data)",
    ),
]
DEFAULT_DIR = Path("var/nats")


def _store(folder: Path) -> CredentialStore:
    return CredentialStore(folder)


def _apply(store: CredentialStore, reference: Path | None) -> None:
    """Rewrite the server config and reload the nats-server of `caseflow up`, if it runs."""
    path = store.write_config(authorities(reference))
    pid = store.reload_server()
    if pid is not None:
        typer.echo(f"nats-server (pid {pid}) reloaded {path}")
    else:
        typer.echo(
            f"wrote {path}; no nats-server of `caseflow up` runs from {store.folder}: reload "
            "yours (`nats-server --signal reload=<pid>`, or `docker compose kill -s HUP nats`)"
        )


@app.command()
def init(folder: Folder = DEFAULT_DIR, reference: ReferenceData = None) -> None:
    """Make the seeds of the services, the relay and the operator that are missing (0600)
    and write the server config (what `caseflow up` does; for compose and other NATS)."""
    store = _store(folder)
    made = store.ensure_own()
    path = store.write_config(authorities(reference))
    typer.echo(f"seeds {'made for ' + ', '.join(made) if made else 'already there'} in {folder}")
    typer.echo(f"server config: {path}")


@app.command()
def credentials(
    department: Annotated[str, typer.Option(help="the authority, e.g. hc_forestry")],
    name: Annotated[
        str | None,
        typer.Option(help="the credential's name (default <authority>-system); lower case"),
    ] = None,
    nats_url: Annotated[
        str,
        typer.Option(
            help="the server address written into the file for the integrator (a "
            "cluster's nodes separated by commas)"
        ),
    ] = DEFAULT_NATS_URL,
    out: Annotated[
        Path | None, typer.Option(help="where to write the credential file (default <dir>/issued)")
    ] = None,
    folder: Folder = DEFAULT_DIR,
    reference: ReferenceData = None,
) -> None:
    """Issue a department system's credential: it reads only its authority's requests and
    answers only for it. Writes one file for the integrator (seed included) and reloads
    the server."""
    from shared.domain.orgs import UnknownOrganisation, load_organisations

    organisations = load_organisations(reference)
    known = ", ".join(o.code for o in organisations if o.is_authority)
    try:
        organisation = organisations.get(department)
    except UnknownOrganisation:
        raise typer.BadParameter(
            f"no authority {department!r}; known: {known}", param_hint="--department"
        ) from None
    if not organisation.is_authority:
        raise typer.BadParameter(
            f"{department} is a {organisation.kind}, not an authority; known: {known}",
            param_hint="--department",
        )
    store = _store(folder)
    if not store.credentials():
        raise typer.BadParameter(
            f"no credentials in {folder}: run `caseflow nats init` (or `caseflow up`) first",
            param_hint="--dir",
        )
    try:
        credential, file = store.issue_department(
            department, name or f"{department}-system", nats_url=nats_url
        )
    except CredentialError as err:
        raise typer.BadParameter(str(err), param_hint="--name") from None
    target = out or folder / "issued" / f"{credential.name}.json"
    write_private(target, json.dumps(file, indent=2, ensure_ascii=False) + "\n")
    typer.echo(
        f"credential {credential.name} for {department} ({credential.public_key}): {target} "
        "(readable by you only: hand it to the department's integrator, keep no copy)"
    )
    _apply(store, reference)


@app.command("list")
def list_credentials(
    folder: Folder = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of lines")] = False,
) -> None:
    """Every credential: name, kind, authority, public key, issued and revoked."""
    found = _store(folder).credentials()
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in found], indent=2))
        return
    for c in found:
        state = f"revoked {c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "active"
        typer.echo(f"{c.name:<24} {c.kind:<10} {c.authority or '-':<20} {c.public_key}  {state}")


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="the credential's name")],
    folder: Folder = DEFAULT_DIR,
    reference: ReferenceData = None,
) -> None:
    """Revoke a department credential: the server refuses it from the reload on (and drops
    its connections)."""
    store = _store(folder)
    try:
        revoked = store.revoke(name)
    except CredentialError as err:
        raise typer.BadParameter(str(err), param_hint="NAME") from None
    typer.echo(f"revoked {revoked.name} ({revoked.authority})")
    _apply(store, reference)


@app.command("server-config")
def server_config(folder: Folder = DEFAULT_DIR, reference: ReferenceData = None) -> None:
    """Print the `authorization` block for a NATS you run yourself (compose: the file
    `caseflow nats init` writes is the nats service's config)."""
    store = _store(folder)
    if not store.credentials():
        raise typer.BadParameter(
            f"no credentials in {folder}: run `caseflow nats init` first", param_hint="--dir"
        )
    typer.echo(store.server_config(authorities(reference)), nl=False)
