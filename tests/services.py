"""Run caseflow services as real processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import psutil
import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from services.notify import sandbox
from services.notify.sandbox import Sandbox
from shared.adapters.auth import (
    KeyPair,
    Role,
    SignedInStaff,
    SigningKey,
    ensure_key_pair,
    issue_token,
)
from shared.adapters.bus import client
from shared.adapters.bus.credentials import CredentialStore, authorities
from shared.devtools import httpcalls, waiting
from shared.devtools import servers as devservers
from shared.web.metrics import ensure_metrics_token

SERVICES = ("intake", "processing", "notify")
CASEFLOW = str(Path(sys.executable).parent / "caseflow")


@dataclass
class ServiceProcess:
    """One running service and where it answers."""

    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the service should drain and exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)


def wait_ready(service: ServiceProcess, timeout: float = waiting.READINESS) -> None:
    """Until ``/readyz`` answers 200, or fail with the service's log (at once if the
    process exits)."""
    waiting.wait_ready(
        service.base_url,
        name=service.name,
        proc=service.proc,
        timeout=timeout,
        detail=lambda: service.logs()[-3000:],
    )


def wait_for_line(
    log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = waiting.READINESS
) -> None:
    """Until ``text`` appears in ``log``, the output of ``proc`` (e.g. ``caseflow up``'s
    "ready; press Ctrl-C to stop"); at once if ``proc`` exits first. Fails with the log's end.
    """
    waiting.wait_until(
        lambda: text in log.read_text(errors="replace"),
        what=f"{text!r} in {log.name}",
        timeout=timeout,
        give_up=waiting.exited(proc, log.stem),
        detail=lambda: log.read_text(errors="replace")[-3000:],
    )


def start_process(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    port: int,
    log_dir: Path,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Start ``argv`` with ``env`` added to ours; its output goes to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    return ServiceProcess(name, proc, f"http://127.0.0.1:{port}", log_path)


def service_env(
    service: str, database_url: str, nats_url: str, port: int, **extra: str
) -> dict[str, str]:
    """The ``CASEFLOW_<SERVICE>_*`` variables for one service."""
    prefix = f"CASEFLOW_{service.upper()}_"
    bus = session_bus()
    env = {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "PORT": str(port),
        "JWT_PUBLIC_KEY_FILE": str(session_keys().public_path),
        "METRICS_TOKEN_FILE": str(session_metrics_token()),
        "NATS_SEED_FILE": str(bus.seed_path(service)),
        "NATS_RELAY_SEED_FILE": str(bus.seed_path("relay")),
        **(session_sandbox() if service == "notify" and "SMTP__HOST" not in extra else {}),
        **extra,
    }
    # An empty value leaves the setting out (e.g. NATS_RELAY_SEED_FILE="": no relay seed).
    return {prefix + key.upper(): value for key, value in env.items() if value != ""}


@functools.cache
def session_sandbox() -> dict[str, str]:
    """Notify's channel settings (without the ``CASEFLOW_NOTIFY_`` prefix) pointing at one
    sandbox mailbox and SMS gateway shared by the test run (a process stopped at exit),
    so every notify a test starts really sends its email and SMS. Tests that look at what
    was received run a sandbox of their own and pass its settings instead."""
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-outbox-"))
    proc, env = sandbox.spawn(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(devservers.stop_process, proc)
    return {k.removeprefix("CASEFLOW_NOTIFY_"): v for k, v in env.items()}


class ThreadedSandbox:
    """The sandbox receivers on an event loop of their own (the test itself is sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sandbox = Sandbox()

    def __enter__(self) -> Sandbox:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sandbox.start(), self.loop).result(20)
        return self.sandbox

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def running_stack(
    database_url: str, nats_url: str, log_dir: Path, **extra: str
) -> contextlib.AbstractContextManager[dict[str, ServiceProcess]]:
    """:func:`running_stack_each` with the same ``extra`` settings for every service."""
    return running_stack_each(database_url, nats_url, log_dir, {}, **extra)


@contextlib.contextmanager
def running_stack_each(
    database_url: str,
    nats_url: str,
    log_dir: Path,
    per_service: Mapping[str, Mapping[str, str]],
    **extra: str,
) -> Iterator[dict[str, ServiceProcess]]:
    """The three services as processes (``caseflow serve``), ready, stopped at the end.

    The packaged delegation instruments are published first, as ``caseflow up`` does."""
    stack: dict[str, ServiceProcess] = {}
    seed_delegations(database_url)
    try:
        for name in SERVICES:
            port = devservers.free_port()
            stack[name] = start_process(
                name,
                [sys.executable, "-m", "shared.cli.main", "serve", name],
                service_env(
                    name, database_url, nats_url, port, **extra, **per_service.get(name, {})
                ),
                port,
                log_dir,
            )
        for service in stack.values():
            wait_ready(service)
        yield stack
    finally:
        for service in stack.values():
            with contextlib.suppress(Exception):
                service.terminate()


@functools.cache
def session_bus() -> CredentialStore:
    """The test run's NATS credentials, in a temporary folder removed at exit: the seeds
    of the services, the relay and the operator, and the server config with their users.
    Every nats-server the suite starts takes its users from ``session_bus().config_path``
    (no anonymous access, as in production); :func:`service_env` hands each service its
    seeds. Tests that issue department credentials add them here and reload their server.
    """
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-nats-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    store = CredentialStore(folder)
    store.ensure_own()
    store.write_config(authorities())
    return store


@dataclass
class BusServer:
    """A nats-server of a test's own, with the session's users, that the test can reload
    after issuing or revoking a department credential."""

    url: str
    proc: subprocess.Popen[bytes]

    def reload(self) -> None:
        """Read the users again (what ``caseflow nats`` does to ``caseflow up``'s server)."""
        os.kill(self.proc.pid, signal.SIGHUP)


@contextlib.contextmanager
def bus_server(folder: Path) -> Iterator[BusServer]:
    """A JetStream nats-server under ``folder`` for the block."""
    port = devservers.free_port()
    proc = devservers.start_nats(
        port, folder / "jetstream", config=session_bus().config_path, log_file=folder / "nats.log"
    )
    try:
        yield BusServer(f"nats://127.0.0.1:{port}", proc)
    finally:
        devservers.stop_process(proc)


def issue_department(server: BusServer, authority: str, name: str | None = None) -> dict[str, Any]:
    """A new department credential for ``authority`` (a unique name unless given), in
    force on ``server`` once this returns; the credential file an integrator would get."""
    store = session_bus()
    name = name or f"{authority.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    _, file = store.issue_department(authority, name, nats_url=server.url)
    store.write_config(authorities())
    server.reload()
    wait_until_accepted(file)
    return file


def revoke_department(server: BusServer, name: str) -> None:
    """Revoke the credential and reload ``server`` (it refuses the credential after)."""
    store = session_bus()
    store.revoke(name)
    store.write_config(authorities())
    server.reload()


async def connect_department(file: Mapping[str, Any], **options: Any) -> NATS:
    """Connect as a department system does, from its credential file."""
    return await nats.connect(
        list(file["servers"]),
        nkeys_seed_str=file["seed"],
        inbox_prefix=file["inbox_prefix"],
        **options,
    )


async def try_connect(file: Mapping[str, Any]) -> str | None:
    """None if the credential is let in, else the server's refusal."""
    try:
        nc = await connect_department(
            file, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
        )
    except Exception as err:
        return str(err) or type(err).__name__
    await nc.close()
    return None


def wait_until_accepted(file: Mapping[str, Any], timeout: float = 15.0) -> None:
    """Until the server (reloaded in the background) lets the credential in (from sync or
    async tests alike: the tries run in a thread with an event loop of their own)."""
    from concurrent.futures import ThreadPoolExecutor

    def accepted() -> bool:
        with ThreadPoolExecutor(1) as pool:
            refused = pool.submit(asyncio.run, try_connect(file)).result()
        if refused is not None:
            raise PermissionError(refused)
        return True

    waiting.wait_until(
        accepted,
        what="the server to let the credential in",
        timeout=timeout,
        ignoring=(PermissionError,),
    )


async def connect_as(url: str, user: str, **options: Any) -> NATS:
    """A NATS connection as one of caseflow's own users (``notify``, ``relay``,
    ``operator``…) with the session's seeds."""
    return await client.connect(url, user=user, seed_file=session_bus().seed_path(user), **options)


@functools.cache
def session_keys() -> KeyPair:
    """The test run's token key pair, in a temporary folder removed at exit.

    Service processes started by these helpers check tokens against it; :func:`token_for`
    signs with it. The ``auth_keys`` fixture hands it to tests.
    """
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-keys-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    pair, _ = ensure_key_pair(folder)
    return pair


@functools.cache
def session_metrics_token() -> Path:
    """The test run's ``/metrics`` token file, in the key folder of :func:`session_keys`;
    :func:`metrics_headers` sends it."""
    path, _ = ensure_metrics_token(session_keys().directory / "metrics-token")
    return path


def metrics_headers() -> dict[str, str]:
    """``{"Authorization": "Bearer <the run's metrics token>"}``."""
    return {"Authorization": f"Bearer {session_metrics_token().read_text().strip()}"}


def token_for(
    user: str,
    role: Role | str,
    org: str,
    *,
    name: str | None = None,
    ttl: timedelta = timedelta(hours=1),
    permissions: frozenset[str] = frozenset(),
) -> str:
    """A bearer token signed with :func:`session_keys`, e.g. ``token_for("li", "reviewer",
    "xuefeng_station")``. No check that the role fits the org: tests of refusals need that."""
    staff = SignedInStaff(user=user, role=Role(role), org=org, name=name, permissions=permissions)
    return issue_token(staff, SigningKey.load(session_keys().directory), ttl=ttl)


def staff_headers(user: str, role: Role | str, org: str, **kwargs: Any) -> dict[str, str]:
    """``{"Authorization": "Bearer …"}`` for :func:`token_for`."""
    return {"Authorization": f"Bearer {token_for(user, role, org, **kwargs)}"}


def wait_for_event(
    base_url: str,
    case_id: str,
    event_type: str,
    timeout: float = 15.0,
    headers: Mapping[str, str] | None = None,
    where: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> list[dict[str, Any]]:
    """Poll the case's history until an ``event_type`` event for which ``where`` holds
    appears; return the history (read as Xuefeng's window clerk unless ``headers`` say
    otherwise)."""
    seen: list[str] = []

    def history() -> list[dict[str, Any]] | None:
        response = httpcalls.get(f"{base_url}/cases/{case_id}/events", timeout=5, headers=headers)
        if response.status_code != 200:
            seen[:] = [f"HTTP {response.status_code}"]
            return None
        events: list[dict[str, Any]] = response.json()["events"]
        seen[:] = [e["event_type"] for e in events]
        return events if any(e["event_type"] == event_type and where(e) for e in events) else None

    headers = headers or CLERK
    return waiting.wait_until(
        history,
        what=f"a {event_type} in case {case_id}'s history",
        timeout=timeout,
        interval=0.05,
        detail=lambda: f"history: {seen}",
    )


VALID_APPLICANT: dict[str, str] = {
    "name": "王秀英",
    "phone": "13812345678",
    "id_number": "11010519491231002X",
}
VALID_APPLICATION: dict[str, Any] = {
    "item_code": "pension_enrolment",
    "applicant": VALID_APPLICANT,
    "materials": [
        {"code": "id_card", "original_checked": True},
        {"code": "household_register", "original_checked": True},
        "application_form",
    ],
}
"""A complete application for a station-completed item: accepted at the window."""


class _LazyHeaders(Mapping[str, str]):
    """Staff headers signed on first use (the session's key pair is made lazily)."""

    def __init__(self, user: str, role: str, org: str) -> None:
        self._args = (user, role, org)

    @functools.cached_property
    def _headers(self) -> dict[str, str]:
        return staff_headers(*self._args)

    def __getitem__(self, key: str) -> str:
        return self._headers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


SERVICES = ("intake", "processing", "notify")
CASEFLOW = str(Path(sys.executable).parent / "caseflow")
SANDBOX = ("sandbox-smtp", "sandbox-sms", "sandbox-webhook")
"""each ``caseflow up`` of a test on ports of its own, also the sandbox's receivers (a
``make up`` beside the tests holds the default ones)."""

CLERK: Mapping[str, str] = _LazyHeaders("li.clerk", "window_clerk", "xuefeng_station")
REVIEWER: Mapping[str, str] = _LazyHeaders("wang.reviewer", "reviewer", "xuefeng_station")
HEAD: Mapping[str, str] = _LazyHeaders("zhao.head", "station_head", "xuefeng_station")


def seed_delegations(database_url: str) -> int:
    """Publish the packaged delegation instruments into ``database_url`` (idempotent), as
    ``caseflow up`` does for the embedded default; how many were published."""
    import asyncio

    from shared.cli.supervisor import publish_seed_delegations

    return asyncio.run(publish_seed_delegations(database_url))


_HELD: list[socket.socket] = []


def refusing_port() -> int:
    """A port on 127.0.0.1 this process holds bound but never listens on, as long as it runs:
    a connection there is refused at once, and no server (a ``make up`` beside the tests, a
    test's own nats-server) can take it meanwhile, as it could a fixed port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return int(sock.getsockname()[1])


NOT_LISTENING = f"nats://127.0.0.1:{refusing_port()}"
"""A NATS address nothing listens on: in-process apps that need no bus."""


def build_app(service: str, database_url: str, **settings: Any) -> FastAPI:
    """One service as its composition root builds it, in-process (no lifespan run), with
    the session's signing key and no NATS; ``settings`` add to or override those."""
    from services.intake.app import create_app as create_intake
    from services.intake.settings import IntakeSettings
    from services.notify.app import create_app as create_notify
    from services.notify.settings import NotifySettings
    from services.processing.app import create_app as create_processing
    from services.processing.settings import ProcessingSettings

    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_public_key_file": session_keys().public_path,
        "nats_url": NOT_LISTENING,
        **settings,
    }
    if service == "intake":
        return create_intake(IntakeSettings(**values))
    if service == "processing":
        return create_processing(ProcessingSettings(**values))
    return create_notify(NotifySettings(**values))


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn on a free port, in a thread; yields its base URL."""
    port = devservers.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    waiting.wait_until(
        lambda: server.started,
        what="uvicorn to start",
        timeout=10,
        interval=0.01,
        give_up=lambda: None if thread.is_alive() else "uvicorn's thread ended",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def caseflow_up(data: Path, ports: dict[str, int], log: Path) -> subprocess.Popen[bytes]:
    """``caseflow up`` on the embedded default in ``data``, on ``ports`` (``{"intake": …,
    "processing": …, "console": …, "nats": …, sandbox's…}``), once it says it is ready."""
    args = [CASEFLOW, "up", "--data-dir", str(data)]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    wait_for_line(log, "ready; press Ctrl-C to stop", proc)
    return proc


def stop_caseflow_up(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """Ctrl-C, as an operator stops it; the processes left behind."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    return list(psutil.wait_procs(children, timeout=10)[1])
