"""A background round that fails because the database or NATS is away logs one line
naming the dependency; any other failure logs its traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import MutableMapping
from typing import Any

import nats.errors
import sqlalchemy.exc
import structlog
from structlog.testing import capture_logs

from shared.adapters.outages import log_failed_round, unavailable_dependency

log = structlog.get_logger("test")


def _logged(err: BaseException) -> MutableMapping[str, Any]:
    with capture_logs() as logs:
        try:
            raise err
        except Exception:
            log_failed_round(log, "round failed; retrying", wheel="w")
    [entry] = logs
    return entry


def test_an_outage_is_one_line_naming_the_dependency() -> None:
    gone = sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("gone"))
    entry = _logged(gone)
    assert entry["log_level"] == "warning"
    assert entry["unavailable"] == "database" and entry["wheel"] == "w"
    assert "exc_info" not in entry
    entry = _logged(nats.errors.NoServersError())
    assert entry["unavailable"] == "NATS" and "exc_info" not in entry


def test_a_bug_keeps_its_traceback() -> None:
    entry = _logged(KeyError("status"))
    assert entry["log_level"] == "error" and entry.get("exc_info") is True
    assert "unavailable" not in entry
    assert unavailable_dependency(KeyError("status")) is None


def test_a_stream_without_a_leader_is_nats_away() -> None:
    """A cluster electing a new stream leader answers 503 or nothing for a few seconds."""
    import nats.js.errors

    for err in (nats.js.errors.ServiceUnavailableError(), nats.js.errors.NoStreamResponseError()):
        assert unavailable_dependency(err) == ("NATS", err)
