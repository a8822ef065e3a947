"""Whether a failure is an outage of a dependency (the database, NATS) rather than a bug.

An outage is waited out: an HTTP request answers 503 with Retry-After, a background
round or a consumer tries again later, and the log gets one line, not a traceback.
"""

from __future__ import annotations

import socket
import sqlite3
import sys

import asyncpg
import nats.errors
import nats.js.errors
import sqlalchemy.exc
import structlog

_NATS_DOWN: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    nats.errors.TimeoutError,
    # JetStream has no leader for the stream just now (a cluster node died, an election
    # is under way): it answers again in seconds.
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
_DATABASE_DOWN: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.DisconnectionError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    sqlite3.OperationalError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what caused it, and the members of exception groups, once each."""
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            pending.append(orig)
    return found


def _raised_connecting(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while asyncpg opened a connection: an embedded
    PostgreSQL that is stopped has no socket file, and connecting to it raises a bare
    ``FileNotFoundError`` (no file name) from there."""
    tb = exc.__traceback__
    while tb is not None:
        if "asyncpg" in tb.tb_frame.f_code.co_filename and "connect" in tb.tb_frame.f_code.co_name:
            return True
        tb = tb.tb_next
    return False


def unavailable_dependency(exc: BaseException) -> tuple[str, BaseException] | None:
    """``("NATS" | "database", the cause)`` when ``exc`` comes from a dependency that
    can't be reached (refused, gone, timed out, shut down, its socket file gone), else
    None."""
    for cause in _causes(exc):
        if isinstance(cause, _NATS_DOWN):
            return "NATS", cause
        if (
            isinstance(cause, _DATABASE_DOWN)
            or (isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated)
            or (isinstance(cause, OSError) and _raised_connecting(cause))
        ):
            return "database", cause
    return None


def log_failed_round(log: structlog.typing.FilteringBoundLogger, event: str, **kw: object) -> None:
    """Log the failure being handled (call it in an ``except`` block): one line naming the
    dependency while it is an outage, the traceback for anything else."""
    err = sys.exc_info()[1]
    down = unavailable_dependency(err) if err is not None else None
    if down is None:
        log.exception(event, **kw)
    else:
        dependency, cause = down
        log.warning(event, unavailable=dependency, error=repr(cause)[:300], **kw)
