"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against the real stack: the three services as processes on PostgreSQL and nats-server,
and the console as ``caseflow serve console`` with the embedded default's local sign-in.

``make test`` installs Chromium where it is missing; without it these tests fail, they
are not skipped."""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, sync_playwright

from shared.application.audit.keys import ensure_audit_key
from shared.devtools import servers as devservers
from tests.conftest import fresh_postgres_db
from tests.services import ServiceProcess, running_stack, session_keys, start_process, wait_ready

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
# As root, in a sandbox with no network but loopback: no sandbox of Chromium's own, and
# none of its background connections (refused here, slowly).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STATION_PC: ViewportSize = {"width": 1366, "height": 768}


@dataclass
class Console:
    """The running console and the stack behind it."""

    url: str
    stack: dict[str, ServiceProcess]
    process: ServiceProcess


@contextlib.contextmanager
def outside_playwright(manager: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter and leave ``manager`` in a thread of its own: Playwright's sync API keeps an
    event loop running in the test's thread, where the helpers' ``asyncio.run()`` (the
    database's set-up, the delegations' seeding) would refuse to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as worker:
        value = worker.submit(manager.__enter__).result()
        try:
            yield value
        except BaseException as err:
            if not worker.submit(manager.__exit__, type(err), err, err.__traceback__).result():
                raise
        else:
            worker.submit(manager.__exit__, None, None, None).result()


@contextlib.contextmanager
def console_on(
    stack: dict[str, ServiceProcess], logs: Path, **settings: str
) -> Iterator[ServiceProcess]:
    """``caseflow serve console`` in front of ``stack`` (``CASEFLOW_CONSOLE_<KEY>``; a
    ``{self}`` in a value is the console's own address, e.g. for its public URL)."""
    port = devservers.free_port()
    own = f"http://127.0.0.1:{port}"
    env = {
        "CASEFLOW_CONSOLE_PORT": str(port),
        "CASEFLOW_CONSOLE_INTAKE_URL": stack["intake"].base_url,
        "CASEFLOW_CONSOLE_PROCESSING_URL": stack["processing"].base_url,
        "CASEFLOW_CONSOLE_NOTIFY_URL": stack["notify"].base_url,
        **{f"CASEFLOW_CONSOLE_{k.upper()}": v.replace("{self}", own) for k, v in settings.items()},
    }
    argv = [sys.executable, "-m", "shared.cli.main", "serve", "console"]
    process = start_process("console", argv, env, port, logs)
    try:
        wait_ready(process)
        yield process
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def stack(
    postgres_server: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    """The three services on a fresh PostgreSQL database, for a module's tests."""
    logs = tmp_path_factory.mktemp("logs")
    audit_key = logs / "audit-ed25519.pem"  # processing signs checkpoints and verifies the log
    ensure_audit_key(audit_key)
    with (
        outside_playwright(fresh_postgres_db(postgres_server)) as url,
        outside_playwright(
            running_stack(url, nats_url, logs, AUDIT_KEY_FILE=str(audit_key))
        ) as services,
    ):
        yield services


@pytest.fixture(scope="module")
def console(
    stack: dict[str, ServiceProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """The console with the embedded default's local sign-in."""
    keys = str(session_keys().directory)
    with console_on(stack, tmp_path_factory.mktemp("console"), local_sign_in_key_dir=keys) as c:
        yield Console(c.base_url, stack, c)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Per module, not per session: while Playwright's sync API runs, its event loop is
    the running loop of the worker's thread, and the next file's ``asyncio.run()`` (or
    pytest-asyncio's loop) would refuse to start."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).exists():
        pytest.fail("no chromium: `make test` installs Debian's chromium package")
    chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=STATION_PC, locale="zh-CN")
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()
