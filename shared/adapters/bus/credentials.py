"""caseflow's NATS credentials on disk: seeds, the register of users, the server config.

A folder (``var/nats`` for ``caseflow up``) holds:

- ``<name>.nk``: the seed of each of caseflow's own users (the three services, the relay,
  the operator), made when missing, readable by the owner only (0600);
- ``credentials.json``: every credential ever issued with its public key, kind,
  authority and, once revoked, when (revoked ones stay listed: who could answer when);
- ``nats-server.conf``: the ``authorization`` block for the active ones
  (``shared.adapters.bus.access``), rewritten on every change;
- ``nats-server.pid``: written by the nats-server ``caseflow up`` runs, so that a change
  reloads it.

A department's seed is not kept: it goes once into the credential file handed to its
integrator (:meth:`CredentialStore.issue_department`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nkeys
from pydantic import TypeAdapter

from shared.adapters.bus import access
from shared.adapters.bus.access import Credential, Kind
from shared.adapters.bus.streams import DEPT_STREAM, answer_subject, dept_durable, dept_subject
from shared.domain.events import utcnow

CREDENTIAL_FILE_VERSION = 1
"""The format of the file handed to a department's integrator."""
_REGISTER = TypeAdapter(list[Credential])


class CredentialError(ValueError):
    """A credential can't be issued or revoked as asked (names what and why)."""


def new_seed() -> str:
    """A new NKEY user seed (``SU…``), from the operating system's random source."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The user public key (``U…``) of ``seed``; ValueError if it is not a user seed."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip().encode()))
    except nkeys.NkeysError as err:
        raise ValueError(f"not an NKEY seed: {err}") from None
    key = str(pair.public_key.decode())
    pair.wipe()
    if not key.startswith("U"):
        raise ValueError("not a user seed (it should start with SU)")
    return key


def read_seed_file(path: Path) -> str:
    """The seed in ``path``; ValueError naming the file if it holds none."""
    try:
        seed = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: can't read the seed ({err})") from None
    public_key(seed)
    return seed


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only, replacing it atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(partial, path)


class CredentialStore:
    """The folder of caseflow's NATS credentials (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def register_path(self) -> Path:
        return self.folder / "credentials.json"

    @property
    def config_path(self) -> Path:
        return self.folder / "nats-server.conf"

    @property
    def pid_path(self) -> Path:
        return self.folder / "nats-server.pid"

    def seed_path(self, name: str) -> Path:
        """Where the seed of one of caseflow's own users is kept."""
        if name not in (*access.SERVICES, access.RELAY, access.OPERATOR):
            raise ValueError(f"caseflow keeps no seed for {name!r}")
        return self.folder / f"{name}.nk"

    # -- the register ------------------------------------------------------------------

    def credentials(self) -> list[Credential]:
        """Every credential in the register, revoked ones included."""
        if not self.register_path.exists():
            return []
        return _REGISTER.validate_json(self.register_path.read_bytes())

    def _save(self, credentials: Sequence[Credential]) -> None:
        text = json.dumps(
            [c.model_dump(mode="json") for c in credentials], indent=2, ensure_ascii=False
        )
        write_private(self.register_path, text + "\n")

    def active(self, name: str) -> Credential | None:
        """The active credential called ``name``, if there is one."""
        return next((c for c in self.credentials() if c.name == name and c.active), None)

    # -- caseflow's own users ----------------------------------------------------------

    def ensure_own(self) -> list[str]:
        """Make the seeds of the services, the relay and the operator that are missing and
        register their keys (a seed file is the truth: a changed one is registered anew).
        Returns the names whose seed was made now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        made = []
        register = self.credentials()
        for name, kind in (
            *((service, Kind.service) for service in access.SERVICES),
            (access.RELAY, Kind.relay),
            (access.OPERATOR, Kind.operator),
        ):
            path = self.seed_path(name)
            if not path.exists():
                write_private(path, new_seed() + "\n")
                made.append(name)
            key = public_key(read_seed_file(path))
            current = next((c for c in register if c.name == name and c.active), None)
            if current is not None and current.public_key == key:
                continue
            now = utcnow()
            register = [
                c.model_copy(update={"revoked_at": now}) if c is current else c for c in register
            ]
            register.append(Credential(name=name, kind=kind, public_key=key, issued_at=now))
        self._save(register)
        return made

    # -- departments -------------------------------------------------------------------

    def issue_department(
        self, authority: str, name: str, *, nats_url: str
    ) -> tuple[Credential, dict[str, Any]]:
        """Register a new credential for ``authority``'s system, called ``name``; returns
        it and the credential file for the integrator (seed included: the only copy).
        The caller checks that the authority exists."""
        if not access.valid_name(name):
            raise CredentialError(
                f"{name!r} can't name a credential: lower-case letters, digits, - and _"
            )
        if name in access.RESERVED_NAMES:
            raise CredentialError(f"{name!r} is reserved for caseflow's own users")
        register = self.credentials()
        if any(c.name == name for c in register):
            raise CredentialError(
                f"a credential called {name!r} exists (or existed): pick another name"
            )
        seed = new_seed()
        credential = Credential(
            name=name,
            kind=Kind.department,
            authority=authority,
            public_key=public_key(seed),
            issued_at=utcnow(),
        )
        self._save([*register, credential])
        return credential, department_file(credential, seed, nats_url)

    def revoke(self, name: str) -> Credential:
        """Revoke the active credential called ``name`` (caseflow's own users can't be:
        remove their seed file and start again to replace one)."""
        register = self.credentials()
        found = next((c for c in register if c.name == name and c.active), None)
        if found is None:
            raise CredentialError(f"no active credential called {name!r}")
        if found.kind is not Kind.department:
            raise CredentialError(
                f"{name!r} is caseflow's own {found.kind} user: delete {self.seed_path(name)} "
                "and start caseflow again to replace its key"
            )
        revoked = found.model_copy(update={"revoked_at": utcnow()})
        self._save([revoked if c is found else c for c in register])
        return revoked

    # -- the server --------------------------------------------------------------------

    def server_config(self, authorities: Sequence[str]) -> str:
        """The ``authorization`` block for the active credentials."""
        return access.render_authorization(self.credentials(), authorities)

    def write_config(self, authorities: Sequence[str]) -> Path:
        """Write ``nats-server.conf`` for the active credentials."""
        write_private(self.config_path, self.server_config(authorities))
        return self.config_path

    def reload_server(self) -> int | None:
        """Tell the nats-server that ``caseflow up`` runs (its pid file) to read its config
        again; the pid, or None if none runs. Clients whose user is gone are dropped."""
        try:
            pid = int(self.pid_path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        if not _is_nats_server(pid):
            return None  # a stale pid file: that process is gone or is something else
        os.kill(pid, signal.SIGHUP)  # what `nats-server --signal reload=<pid>` sends
        return pid


def department_file(credential: Credential, seed: str, nats_url: str) -> dict[str, Any]:
    """Everything a department's system needs to connect, read and answer."""
    assert credential.authority is not None
    return {
        "caseflow_nats_credential": CREDENTIAL_FILE_VERSION,
        "name": credential.name,
        "authority": credential.authority,
        "public_key": credential.public_key,
        "seed": seed,
        # Every node of a cluster (given separated by commas), when it is one.
        "servers": [url.strip() for url in nats_url.split(",")],
        "inbox_prefix": access.inbox_prefix(credential.name),
        "stream": DEPT_STREAM,
        "durable": dept_durable(credential.authority),
        "requests_subject": dept_subject(credential.authority, "requests"),
        "answer_subject": answer_subject(credential.authority, credential.name),
    }


def _is_nats_server(pid: int) -> bool:
    """Whether process ``pid`` runs nats-server (a pid file can outlive its process)."""
    with contextlib.suppress(OSError):
        return b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        name = subprocess.run(  # noqa: S603 - fixed program; no /proc (macOS)
            ["ps", "-p", str(pid), "-o", "comm="],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return "nats-server" in name
    return False


def authorities(data_dir: Path | None = None) -> list[str]:
    """The authorities of the organisations registry (city departments and town
    governments): who can be forwarded cases and hold department credentials."""
    from shared.domain.orgs import load_organisations

    return [org.code for org in load_organisations(data_dir) if org.is_authority]
