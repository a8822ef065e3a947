"""``caseflow up``: the embedded default on one machine, and Ctrl-C that leaves nothing behind.

Makes the NATS credentials that are missing under ``<data folder>/nats`` (the services',
the relay's and the operator's seeds, and the server config with their users), starts
nats-server (from its wheel) with that config and JetStream under the data folder unless
an external NATS is named, migrates the database, starts the three services as child
processes (each with its seeds), waits until each answers ``/readyz`` and prints their
addresses. SIGINT or SIGTERM stops the services (they finish in-flight work and drain),
then nats-server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from shared.adapters.auth import KeyPair, ensure_key_pair
from shared.adapters.bus.access import RELAY
from shared.adapters.bus.credentials import CredentialStore, authorities
from shared.adapters.db import database_problem, migrate, shown_url
from shared.application.audit.keys import DEFAULT_AUDIT_KEY_FILE, ensure_audit_key
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.devtools.waiting import READINESS, scaled
from shared.web.metrics import DEFAULT_METRICS_TOKEN_FILE, ensure_metrics_token

SANDBOX_PORTS = {"smtp": 8025, "sms": 8004, "webhook": 8005}
"""The sandbox's receivers' ports unless ``caseflow up --sandbox-<what>-port`` says."""


_UNDERNEATH = ("sandbox", "nats-server")
"""Children the services use, stopped after them in this order."""


class Stack:
    """The processes of one ``caseflow up``."""

    def __init__(
        self,
        *,
        data_dir: Path,
        database_url: str | None,
        nats_url: str | None,
        host: str,
        ports: dict[str, int],
        nats_port: int,
        nats_dir: Path | None = None,
        sandbox_ports: dict[str, int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.sandbox_ports = {**SANDBOX_PORTS, **(sandbox_ports or {})}
        """The embedded default's local mailbox, SMS gateway and webhook receiver."""
        self.database_url = database_url or f"sqlite+aiosqlite:///{data_dir / 'caseflow.db'}"
        self.nats_url = nats_url
        self.host = host
        self.ports = ports
        self.nats_port = nats_port
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.key_pair = KeyPair(data_dir / "keys")
        self.credentials = CredentialStore(nats_dir or data_dir / "nats")
        """caseflow's NATS users: under the data folder, or the folder an external NATS
        already takes its users from (``caseflow nats init --dir``)."""
        self.notify_env: dict[str, str] = {}
        """Where notify sends email and SMS: the sandbox's receivers, unless configured."""

    def _say(self, text: str) -> None:
        print(f"caseflow: {text}", flush=True)

    def _check_port_free(self, port: int, what: str) -> None:
        with socket.socket() as sock:
            if sock.connect_ex((self.host if what != "nats" else "127.0.0.1", port)) == 0:
                raise SystemExit(
                    f"caseflow: port {port} for {what} is in use; "
                    f"stop what uses it or pick another with --{what}-port"
                )

    def _start_nats(self) -> str:
        self._check_port_free(self.nats_port, "nats")
        try:
            devservers.nats_server_binary()
        except RuntimeError as err:  # the `local` extra is not installed
            raise SystemExit(f"caseflow: {err}") from None
        log_file = self.data_dir / "nats.log"
        proc = devservers.start_nats(
            self.nats_port,
            self.data_dir / "jetstream",
            config=self.credentials.config_path,
            pid_file=self.credentials.pid_path,
            log_file=log_file,
        )
        self.children["nats-server"] = proc
        url = f"nats://127.0.0.1:{self.nats_port}"
        self._say(f"nats-server with JetStream at {url} (data in {self.data_dir / 'jetstream'})")
        return url

    def ensure_nats_credentials(self) -> None:
        """The NATS users' seeds (0600) and the server config, made or brought up to date."""
        store = self.credentials
        made = store.ensure_own()
        data_dir = os.environ.get("CASEFLOW_PROCESSING_DATA_DIR")
        store.write_config(authorities(Path(data_dir) if data_dir else None))
        state = f"made for {', '.join(made)}" if made else "found"
        self._say(f"NATS credentials {state} in {store.folder}; no anonymous access")
        if self.nats_url:
            self._say(
                f"{self.nats_url} must know caseflow's users: include {store.config_path} in "
                "its configuration (or print it: caseflow nats server-config)"
            )

    def _start_sandbox(self) -> None:
        """Local receivers for notify's email and SMS (nothing leaves the machine): what
        would have been sent is written under ``<data dir>/outbox``. Skipped when the
        operator configured a real SMTP server or SMS gateway for notify."""
        if any(
            k.startswith(("CASEFLOW_NOTIFY_SMTP__", "CASEFLOW_NOTIFY_SMS__")) for k in os.environ
        ):
            self._say("notify uses the SMTP server and SMS gateway configured in the environment")
            return
        for what, port in self.sandbox_ports.items():
            self._check_port_free(port, f"sandbox-{what}")
        folder = self.data_dir / "outbox"
        try:
            # Here, not at the top: the sandbox's mailbox is aiosmtpd, of the `local` extra,
            # and `caseflow migrate` in the image imports this module too.
            from services.notify import sandbox
        except ModuleNotFoundError as err:
            raise SystemExit(
                f"caseflow: the sandbox needs {err.name}: pip install 'caseflow[local]' "
                "(or configure notify's SMTP server and SMS gateway)"
            ) from None
        try:
            proc, self.notify_env = sandbox.spawn(
                folder,
                smtp_port=self.sandbox_ports["smtp"],
                sms_port=self.sandbox_ports["sms"],
                webhook_port=self.sandbox_ports["webhook"],
            )
        except RuntimeError as err:
            raise SystemExit(f"caseflow: {err}") from None
        self.children["sandbox"] = proc
        self._say(
            f"sandbox mailbox smtp://127.0.0.1:{self.sandbox_ports['smtp']}, SMS gateway "
            f"http://127.0.0.1:{self.sandbox_ports['sms']} and webhook receiver "
            f"http://127.0.0.1:{self.sandbox_ports['webhook']} (the one local address "
            f"webhooks may reach): what notify sends is in {folder}"
        )

    def ensure_keys(self) -> None:
        """The key pair that signs staff tokens (``caseflow keys init``), made if missing."""
        folder = self.key_pair.directory
        try:
            _, created = ensure_key_pair(folder)
        except FileExistsError as err:
            raise SystemExit(f"caseflow: {err}") from None
        self._say(
            f"staff token key {'created' if created else 'found'} in {folder}; sign a "
            f"token with: caseflow token --key-dir {folder} --user U --role R --org O"
        )
        audit, created = ensure_audit_key(folder / DEFAULT_AUDIT_KEY_FILE.name)
        self._say(f"audit checkpoint key {'created' if created else 'found'}: {audit.public_path}")
        token, created = ensure_metrics_token(self.metrics_token_file)
        self._say(
            f"metrics token {'created' if created else 'found'}: {token} (/metrics answers "
            "only to 'Authorization: Bearer <token>'; Prometheus: bearer_token_file)"
        )

    @property
    def metrics_token_file(self) -> Path:
        """The bearer token ``/metrics`` asks for (one for the three services)."""
        return self.key_pair.directory / DEFAULT_METRICS_TOKEN_FILE.name

    def console_env(self) -> dict[str, str]:
        """The staff console's environment: the three services' addresses, and the local
        key, with which it signs the token of the demo member a person picks at sign-in."""
        prefix = "CASEFLOW_CONSOLE_"
        env = {
            **os.environ,
            prefix + "HOST": self.host,
            prefix + "PORT": str(self.ports["console"]),
            prefix + "LOCAL_SIGN_IN_KEY_DIR": str(self.key_pair.directory),
        }
        for service in ("intake", "processing", "notify"):
            if service in self.ports:
                env[f"{prefix}{service.upper()}_URL"] = f"http://{self.host}:{self.ports[service]}"
        return env

    def service_env(self, service: str, nats_url: str) -> dict[str, str]:
        """The environment a service process starts with."""
        if service == "console":
            return self.console_env()
        prefix = f"CASEFLOW_{service.upper()}_"
        env = {
            **os.environ,
            prefix + "DATABASE_URL": self.database_url,
            prefix + "NATS_URL": nats_url,
            prefix + "NATS_SEED_FILE": str(self.credentials.seed_path(service)),
            prefix + "NATS_RELAY_SEED_FILE": str(self.credentials.seed_path(RELAY)),
            prefix + "HOST": self.host,
            prefix + "PORT": str(self.ports[service]),
        }
        # Staff tokens are checked against the local key unless the operator named keys.
        env.setdefault(prefix + "JWT_PUBLIC_KEY_FILE", str(self.key_pair.public_path))
        env.setdefault(prefix + "METRICS_TOKEN_FILE", str(self.metrics_token_file))
        if service == "processing":
            audit_key = self.key_pair.directory / DEFAULT_AUDIT_KEY_FILE.name
            env.setdefault(prefix + "AUDIT_KEY_FILE", str(audit_key))
        if service == "notify":
            env.update(self.notify_env)
            # Webhooks may reach the sandbox's receiver, and what the operator allows.
            allowed = "CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS"
            if os.environ.get(allowed) and allowed in self.notify_env:
                env[allowed] = f"{os.environ[allowed]},{self.notify_env[allowed]}"
        return env

    def _start_service(self, service: str, nats_url: str) -> None:
        self.children[service] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "shared.cli.main", "serve", service],
            env=self.service_env(service, nats_url),
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )

    def _wait_ready(self, timeout: float | None = None) -> None:
        # As long as the tests give a service (a loaded station PC starts slowly too).
        timeout = scaled(READINESS) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pending = set(self.ports)
        while pending and time.monotonic() < deadline:
            for service in sorted(pending):
                if self.children[service].poll() is not None:
                    raise SystemExit(f"caseflow: {service} exited during start-up")
                try:
                    url = f"http://{self.host}:{self.ports[service]}/readyz"
                    if httpcalls.get(url, timeout=1.0).status_code == 200:
                        pending.discard(service)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        if pending:
            raise SystemExit(
                f"caseflow: not ready after {timeout:.0f}s: {', '.join(sorted(pending))}"
            )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def stop(self) -> None:
        """Stop the services first (they drain: the batch in hand, the relay's round, NATS),
        then what they use: the sandbox's receivers, then nats-server."""
        services = [name for name in self.children if name not in _UNDERNEATH]
        for name in services:
            if self.children[name].poll() is None:
                self.children[name].send_signal(signal.SIGTERM)
        for name in services:
            devservers.stop_process(self.children[name], timeout=20)
        if services:
            self._say(f"stopped {', '.join(services)}")
        for name in _UNDERNEATH:
            if name in self.children:
                devservers.stop_process(self.children[name])
                self._say(f"stopped {name}")
        self._say("stopped")

    seed_delegations: bool = True
    """Publish the packaged delegation instruments that are not yet in the log (the
    embedded default's city departments delegating to its stations)."""

    def run(self) -> int:
        """Start everything, print the addresses and wait for Ctrl-C."""
        # The event log, the keys and the NATS seeds hold citizens' data and secrets:
        # readable by the operator's account only (the services inherit the umask).
        os.umask(0o077)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            for service, port in self.ports.items():
                self._check_port_free(port, service)
            self.ensure_keys()
            self.ensure_nats_credentials()
            nats_url = self.nats_url or self._start_nats()
            try:
                migrate(self.database_url)
                shown = shown_url(self.database_url)
                published = (
                    asyncio.run(publish_seed_delegations(self.database_url))
                    if self.seed_delegations
                    else 0
                )
            except Exception as err:  # unreachable, refused, a broken URL: one line, no secret
                raise SystemExit(f"caseflow: {database_problem(self.database_url, err)}") from None
            self._say(f"event log at {shown}")
            if published:
                self._say(f"published {published} delegation instruments (shared/data)")
            self._start_sandbox()
            for service in self.ports:
                self._start_service(service, nats_url)
            self._wait_ready()
            for service, port in self.ports.items():
                what = "(staff sign in here)" if service == "console" else "(docs: /docs)"
                self._say(f"{service:<10} http://{self.host}:{port}  {what}")
            self._say("ready; press Ctrl-C to stop")
            while not self.stopping:
                for name, proc in self.children.items():
                    if proc.poll() is not None:
                        self._say(f"{name} exited with {proc.returncode}; stopping")
                        return 1
                time.sleep(0.2)
            return 0
        finally:
            self.stop()


async def publish_seed_delegations(database_url: str) -> int:
    """Publish the seed instruments missing from the log; how many were published."""
    from shared.adapters.db import create_engine
    from shared.adapters.delegations import publish_seed
    from shared.adapters.eventlog import EventLog

    engine = create_engine(database_url)
    try:
        return len(await publish_seed(EventLog(engine)))
    finally:
        await engine.dispose()
