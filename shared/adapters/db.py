"""Database engines for both backends, with durability on.

SQLite runs in WAL mode with ``synchronous=FULL`` and a busy timeout, so that the three
services can share one file; PostgreSQL keeps its defaults (fsync and synchronous_commit on).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from shared.domain.privacy import hide_url_passwords

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_JSON_CODEC: dict[str, Any] = {
    "json_serializer": lambda obj: orjson.dumps(obj).decode(),
    "json_deserializer": orjson.loads,
}
PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before it is handed out."""
_LAST_USED = "caseflow_last_used"
WRITE_OPTION = "caseflow_write"
"""Execution option marking a connection that will write (SQLite: BEGIN IMMEDIATE)."""


STATEMENTS = Counter(
    "caseflow_db_statements_total",
    "Statements sent to the database: SQL by its first word, and the transactions' begin, "
    "commit and rollback and the pool's pings, each a round trip",
    ["kind"],
)
_KINDS = frozenset({"select", "insert", "update", "delete", "with", "begin", "pragma"})


def _counted(engine: AsyncEngine) -> None:
    """Count what ``engine`` sends (:data:`STATEMENTS`): the figure the engine's speed is
    judged by is round trips per case, and the operator sees it next to the requests."""
    counters = {kind: STATEMENTS.labels(kind) for kind in (*_KINDS, "other", "commit", "rollback")}
    other = counters["other"]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _statement(*args: Any) -> None:
        words: list[str] = args[2][:16].split(None, 1)
        counters.get(words[0].lower(), other).inc() if words else other.inc()

    def sent(conn: Any) -> bool:  # in autocommit, no BEGIN, COMMIT or ROLLBACK is sent
        return bool(conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT")

    @event.listens_for(engine.sync_engine, "commit")
    def _commit(conn: Any) -> None:
        if sent(conn):
            counters["commit"].inc()

    @event.listens_for(engine.sync_engine, "rollback")
    def _rollback(conn: Any) -> None:
        if sent(conn):
            counters["rollback"].inc()

    if not is_sqlite(engine.url.render_as_string()):  # SQLite's BEGIN is a statement above

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            if sent(conn):
                counters["begin"].inc()


def shown_url(url: str) -> str:
    """The database URL as it may be printed or logged: its password as ``***``."""
    return make_url(url).render_as_string(hide_password=True)


def with_password_file(url: str, password_file: Path | None) -> str:
    """``url`` with the password read from ``password_file`` (a compose secret), so that
    the password need not travel in the environment inside a URL. ValueError if the URL
    has a password of its own, or the file can't be read or is empty."""
    if password_file is None:
        return url
    parsed = make_url(url)
    if parsed.password:
        raise ValueError("the database URL has a password and a password file gives one: keep one")
    try:
        password = password_file.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ValueError(f"{password_file}: can't read the password ({err.strerror})") from None
    if not password:
        raise ValueError(f"{password_file} is empty")
    return parsed.set(password=password).render_as_string(hide_password=False)


def database_problem(url: str, err: BaseException) -> str:
    """One line for an operator about a database that can't be used at start-up: the URL
    (its password hidden, even a URL too broken to parse) and what went wrong, without a
    traceback and without the secret."""
    cause: BaseException = err
    while cause.__cause__ is not None or (
        cause.__context__ is not None and not cause.__suppress_context__
    ):
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    words = str(cause) or str(err) or type(err).__name__
    return hide_url_passwords(
        f"can't use the database at {hide_url_passwords(url)}: {words} ({type(cause).__name__})"
    )


def is_sqlite(url: str) -> bool:
    """Whether the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``)."""
    if is_sqlite(url):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **_JSON_CODEC)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the write lock at BEGIN: a deferred transaction that reads and
            # then writes can fail with SQLITE_BUSY at once instead of waiting its turn.
            writer = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is disabled).
        @event.listens_for(engine.sync_engine, "connect", insert=True)
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        _counted(engine)
        return engine
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, **_JSON_CODEC)
    _counted(engine)
    ping = STATEMENTS.labels("ping")

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # Only a connection that lay idle is pinged: one given back a moment ago was
        # working then, and under load every checkout would otherwise cost a round trip.
        # If the server went away in between after all, the statement fails as a
        # disconnect: SQLAlchemy drops the pool's connections and the caller's outage
        # handling answers 503 (a request) or tries again (a consumer, a timer).
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        # The pool's own pre-ping costs three round trips on asyncpg (BEGIN, ping,
        # ROLLBACK); a simple-protocol SELECT 1 is one and tells the same. Like pre-ping, a
        # failed ping drops the pool's connections and the checkout reconnects.
        ping.inc()
        try:
            await_only(dbapi_conn.driver_connection.execute("SELECT 1"))
        except Exception as err:
            raise exc.InvalidatePoolError(f"ping failed: {err!r}") from err

    return engine


def alembic_config(url: str) -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    from alembic.config import Config  # only migrations need Alembic, not every service start

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (blocking; call from a thread in async code)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
