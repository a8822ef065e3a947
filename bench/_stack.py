"""The three services as real processes, for the end-to-end benchmark.

Adapted from the end-to-end tests' helpers (the benchmark does not import the tests).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from services.notify import sandbox
from shared.adapters.bus.access import RELAY
from shared.adapters.bus.credentials import CredentialStore, authorities
from shared.adapters.db import create_engine
from shared.adapters.delegations import publish_seed
from shared.adapters.eventlog import EventLog
from shared.devtools import servers as devservers
from shared.devtools import waiting

SERVICES = ("intake", "processing", "notify")


@dataclass
class ServiceProcess:
    """One running service and where it answers."""

    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    """The ``CASEFLOW_*`` settings it was started with (its port among them)."""

    @classmethod
    def launch(cls, name: str, base_url: str, log_path: Path, env: dict[str, str]) -> Self:
        """``caseflow serve <name>`` with ``env`` added to this process's environment,
        its output appended to ``log_path``; not yet ready (see :meth:`wait_ready`)."""
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shared.cli.main", "serve", name],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(name, proc, base_url, log_path, env)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, as a crash or the OOM killer would end it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def start_again(self, timeout: float = waiting.READINESS) -> None:
        """Start it anew with the same settings and port, and wait until it is ready."""
        again = self.launch(self.name, self.base_url, self.log_path, self.env)
        self.proc = again.proc
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = waiting.READINESS) -> None:
        """Until ``/readyz`` answers 200 (``waiting.WaitFailed``, with its log's end, if
        not; at once if the process exits)."""
        waiting.wait_ready(
            self.base_url, name=self.name, proc=self.proc, timeout=timeout, detail=self.tail
        )

    def tail(self, chars: int = 3000) -> str:
        """The end of the service's log."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the service drains and exits), SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def publish_delegations(database_url: str) -> int:
    """Publish the packaged delegation instruments (idempotent), as ``caseflow up`` does:
    without them no station may act for a city department. How many were published."""
    engine = create_engine(database_url)
    try:
        return len(await publish_seed(EventLog(engine)))
    finally:
        await engine.dispose()


def nats_credentials(folder: Path) -> CredentialStore:
    """caseflow's NATS users in ``folder`` (made if missing) and the server config, as
    ``caseflow up`` makes them: every connection of the benchmark authenticates."""
    store = CredentialStore(folder)
    store.ensure_own()
    store.write_config(authorities())
    return store


@contextlib.contextmanager
def running_services(
    database_url: str,
    nats_url: str,
    log_dir: Path,
    *,
    public_key_file: Path,
    credentials: CredentialStore,
    sandbox_env: dict[str, str] | None = None,
    **extra: str,
) -> Iterator[dict[str, ServiceProcess]]:
    """``caseflow serve <name>`` for each service, ready; stopped at the end.

    Every service checks staff tokens against ``public_key_file`` (PEM) and connects to
    NATS with its seeds from ``credentials``. ``extra`` adds
    settings to every service (``log_level="warning"`` becomes
    ``CASEFLOW_<SERVICE>_LOG_LEVEL=warning``). Notify sends to the receivers that
    ``sandbox_env`` points at (``Sandbox.environment()``), or to a sandbox of its own in a
    child process.
    """
    stack: dict[str, ServiceProcess] = {}
    # Notify sends real email and SMS, to the sandbox's mailbox and gateway.
    sandbox_proc = None
    if sandbox_env is None:
        sandbox_proc, sandbox_env = sandbox.spawn(log_dir / "outbox")
    try:
        for name in SERVICES:
            port = devservers.free_port()
            settings = {
                "database_url": database_url,
                "nats_url": nats_url,
                "port": str(port),
                "jwt_public_key_file": str(public_key_file),
                "nats_seed_file": str(credentials.seed_path(name)),
                "nats_relay_seed_file": str(credentials.seed_path(RELAY)),
            }
            prefix = f"CASEFLOW_{name.upper()}_"
            env = {prefix + key.upper(): value for key, value in {**settings, **extra}.items()}
            if name == "notify":
                env = {**sandbox_env, **env}
            base_url = f"http://127.0.0.1:{port}"
            stack[name] = ServiceProcess.launch(name, base_url, log_dir / f"{name}.log", env)
        for service in stack.values():
            service.wait_ready()
        yield stack
    finally:
        for service in stack.values():
            with contextlib.suppress(Exception):
                service.stop()
        if sandbox_proc is not None:
            devservers.stop_process(sandbox_proc)
