"""Real servers for the suite: nats-server from its wheel, PostgreSQL from its wheel (or
``CASEFLOW_TEST_POSTGRES_URL``), and SQLite files. Each test gets a fresh database."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.adapters.auth import KeyPair
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import EventLog
from shared.devtools import servers as devservers
from shared.devtools import waiting
from tests.services import BusServer, bus_server, seed_delegations, session_keys

TEMPLATE = f"caseflow_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
"""The migrated database each test's PostgreSQL database is cloned from; one per test
process, since parallel workers may share an outside server."""

SEEDED_TEMPLATE = f"{TEMPLATE}_seeded"
"""The same with the packaged delegation instruments published, as ``caseflow up`` does:
for tests of the services' APIs, which act under them."""


SECURITY_SUITE = frozenset(
    {
        "tests/security/test_cross_station.py",
        "tests/security/test_suite_files.py",
        "tests/e2e/test_bus_privacy.py",
        "tests/e2e/test_department_answers.py",
        "tests/e2e/test_idempotency_keys.py",
        "tests/e2e/test_relay_credential.py",
        "tests/integration/test_body_limits.py",
        "tests/integration/test_claims.py",
        "tests/integration/test_content_type.py",
        "tests/integration/test_idempotency_replays.py",
        "tests/integration/test_input_checks.py",
        "tests/integration/test_metrics_labels.py",
        "tests/integration/test_metrics_token.py",
        "tests/integration/test_nats_auth.py",
        "tests/integration/test_nats_cli.py",
        "tests/integration/test_token_edge.py",
        "tests/integration/test_unavailable.py",
        "tests/integration/test_webhook_egress.py",
        "tests/unit/test_egress.py",
        "tests/unit/test_nats_access.py",
    }
)
"""The files of the security suite (``pytest -m security``; see ``tests/security``)."""


PROCESS_TEST_TIMEOUT = 300.0
"""pytest-timeout's limit (before scaling) for the end-to-end tests and others marked so:
they start service processes, whose readiness alone may take ``waiting.READINESS``."""


LONGEST_FIRST = (
    "tests/integration/test_api_fuzz.py",
    "tests/integration/test_bench_faults.py",
    "tests/e2e/test_cluster.py",
    "tests/e2e/test_audit_replay.py",
    "tests/integration/test_audit_segments.py",
    "tests/e2e/test_lifecycles.py",
    "tests/e2e/test_idempotency_keys.py",
    "tests/e2e/test_notifications.py",
    "tests/integration/test_bench_runs.py",
    "tests/integration/test_consumer_outage.py",
    "tests/e2e/test_operations.py",
    "tests/integration/test_notify_recording.py",
    "tests/integration/test_input_checks.py",
    "tests/security/test_cross_station.py",
    "tests/e2e/",
    "tests/browser/",
    "tests/security/",
    "tests/integration/test_bench_",
)
"""Files in the order parallel workers (``make test``) should start them: the longest
first, as measured on two cores (a file's tests run on one worker), then the other
end-to-end files, the other integration files and the unit tests. The run then ends on
many short files, not one long one (``--no-loadscope-reorder`` keeps this order)."""


def _run_order(path: str) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if path.startswith(prefix):
            return rank
    return len(LONGEST_FIRST) + (1 if path.startswith("tests/unit/") else 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    paths = {}
    for item in items:
        path = paths[item] = item.path.relative_to(root).as_posix()
        if path in SECURITY_SUITE:
            item.add_marker(pytest.mark.security)
        _scale_timeout(config, item, PROCESS_TEST_TIMEOUT if path.startswith("tests/e2e/") else 0)
    items.sort(key=lambda item: _run_order(paths[item]))  # stable: a file's order is kept


def _scale_timeout(config: pytest.Config, item: pytest.Item, floor: float) -> None:
    """Give ``item`` pytest-timeout's limit (its marker's, else the configured one), at least
    ``floor``, times ``CASEFLOW_TEST_TIME_SCALE``: the waits inside a test are scaled, so
    the limit around them must be too."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    marker = item.get_closest_marker("timeout")
    given = None
    if marker is not None:
        given = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if given is None:
        given = (
            config.getoption("timeout", None)
            or os.environ.get("PYTEST_TIMEOUT")
            or config.getini("timeout")
            or 0
        )
    seconds = float(given)
    if seconds <= 0:  # no limit asked for (e.g. --timeout=0 while debugging)
        return
    limit = waiting.scaled(max(seconds, floor))
    if limit != seconds:
        # The marker's other settings (method, func_only) stay as they were.
        rest = marker.args[1:] if marker is not None else ()
        options = {k: v for k, v in marker.kwargs.items() if k != "timeout"} if marker else {}
        item.add_marker(pytest.mark.timeout(limit, *rest, **options), append=False)


def pytest_configure(config: pytest.Config) -> None:
    """Give the run a base temp folder of its own, outside pytest's numbered rotation.

    pytest keeps the last N ``pytest-<n>`` folders and deletes older ones when a new run
    starts; with several runs at once (developers, helpers, a ``make test`` beside CI) a
    long run lost its folder mid-way, and with it the embedded PostgreSQL's data directory.
    The folder is removed at exit when the run passed and kept (and named) when it failed.
    """
    if config.option.basetemp is not None:
        return
    base = Path(tempfile.mkdtemp(prefix="caseflow-pytest-"))
    config.option.basetemp = str(base)
    outcome: dict[str, int] = {}
    config.stash[_OUTCOME] = outcome
    # Registered before any server fixture's own exit handler, so it runs after them.
    atexit.register(_remove_if_passed, base, outcome)


_OUTCOME = pytest.StashKey[dict[str, int]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    outcome = session.config.stash.get(_OUTCOME, None)
    if outcome is not None:
        outcome["status"] = int(exitstatus)


def _remove_if_passed(base: Path, outcome: dict[str, int]) -> None:
    if outcome.get("status") == 0:
        shutil.rmtree(base, ignore_errors=True)
    elif base.exists():
        print(f"caseflow: this test run's files are kept in {base}", file=sys.stderr)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(url: str, *statements: str) -> None:
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.query.get("host") or u.host,
        port=u.port,
        user=u.username,
        password=u.password,
        database=u.database or "postgres",
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database, with a migrated template."""
    external = os.environ.get("CASEFLOW_TEST_POSTGRES_URL")
    handle = None
    if external:
        url = external
    else:
        url, handle = devservers.embedded_postgres_url(tmp_path_factory.mktemp("pgdata"))
    template_url = make_url(url).set(database=TEMPLATE).render_as_string(hide_password=False)
    asyncio.run(
        _admin(
            url,
            f"DROP DATABASE IF EXISTS {SEEDED_TEMPLATE}",
            f"DROP DATABASE IF EXISTS {TEMPLATE}",
            f"CREATE DATABASE {TEMPLATE}",
        )
    )
    migrate(template_url)
    asyncio.run(_admin(url, f"CREATE DATABASE {SEEDED_TEMPLATE} TEMPLATE {TEMPLATE}"))
    seed_delegations(make_url(template_url).set(database=SEEDED_TEMPLATE).render_as_string(False))
    yield url
    del handle


@contextlib.contextmanager
def fresh_postgres_db(server_url: str, *, seeded: bool = False) -> Iterator[str]:
    """A new database cloned from the migrated template (``seeded``: with the packaged
    delegations published), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    template = SEEDED_TEMPLATE if seeded else TEMPLATE
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template}"))
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def fresh_sqlite_db(folder: Path, *, seeded: bool = False) -> str:
    """A new migrated SQLite database file in ``folder`` (``seeded``: with the packaged
    delegations published): a copy of one made once per test process (the migrations take
    ~0.1 s, publishing the delegations ~0.2 s, a copy ~1 ms)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "log.db"
    shutil.copyfile(_sqlite_template(seeded=seeded), target)
    return f"sqlite+aiosqlite:///{target}"


@functools.cache
def _sqlite_template(*, seeded: bool) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-sqlite-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    template = folder / "template.db"
    if seeded:
        shutil.copyfile(_sqlite_template(seeded=False), template)
        seed_delegations(f"sqlite+aiosqlite:///{template}")
    else:
        migrate(f"sqlite+aiosqlite:///{template}")
    return template


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    with fresh_postgres_db(postgres_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file for one test."""
    return fresh_sqlite_db(tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on both backends."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def seeded_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each backend with the packaged delegation instruments published
    (as ``caseflow up`` publishes them): for tests that act through the services' APIs."""
    if request.param == "sqlite":
        yield fresh_sqlite_db(tmp_path, seeded=True)
    else:
        with fresh_postgres_db(request.getfixturevalue("postgres_server"), seeded=True) as url:
            yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per backend shared by a module's tests (for slow-to-start stacks)."""
    if request.param == "sqlite":
        yield fresh_sqlite_db(tmp_path_factory.mktemp("sqlite"))
    else:
        with fresh_postgres_db(request.getfixturevalue("postgres_server")) as url:
            yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def log(engine: AsyncEngine) -> EventLog:
    return EventLog(engine)


@pytest.fixture(scope="session")
def nats_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusServer]:
    """A JetStream-enabled nats-server shared by the session (tests use unique streams),
    with the session's users (``tests.services.session_bus``): nobody connects without
    an NKEY. Tests that need a department's credential issue it on this server
    (``tests.services.issue_department``)."""
    with bus_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_bus: BusServer) -> str:
    """The session's nats-server (see ``nats_bus``)."""
    return nats_bus.url


@pytest.fixture(scope="session")
def auth_keys() -> KeyPair:
    """The session's temporary token key pair: services started by ``tests.services`` check
    tokens against ``auth_keys.public_path``; ``tests.services.token_for`` signs with it."""
    return session_keys()
