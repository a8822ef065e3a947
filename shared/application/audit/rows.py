"""An event row in its portable form: what verification reads and an export writes.

Every column of ``events``, exactly as stored, as JSON values: UUIDs as lower-case hyphenated
text, times as ISO 8601 in UTC with microseconds and a ``Z`` (the canonical form the hash
encodes), the payload as the JSON object. Both database readers and an exported bundle
yield rows in this form, so one pure verifier serves both.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.adapters.eventlog.hashing import HASHED_FIELDS
from shared.adapters.tables.eventlog import events as events_table

EventRow = dict[str, Any]

COLUMNS = tuple(str(column.name) for column in events_table.columns)  # plain str: orjson keys
"""The events table's columns, in its order."""

assert set(COLUMNS) - {"position", "hash", "tx_id"} == set(HASHED_FIELDS)

_NOT_HASHED = ("position", "hash", "tx_id")
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def row_hash(row: EventRow) -> str:
    """The SHA-256 the log computes for this row (see ``shared.adapters.eventlog.hashing``).

    Same encoding as :func:`shared.adapters.eventlog.hashing.canonical_bytes`, on values that are
    already in canonical text form (a test pins the two together).
    """
    doc = dict(row)
    # Everything but what the database assigns (and the hash itself). A row with a column
    # too many or too few hashes differently, which is what tampering should do.
    for name in _NOT_HASHED:
        doc.pop(name, None)
    return hashlib.sha256(orjson.dumps(doc, option=_CANONICAL)).hexdigest()


def iso_utc(ts: datetime) -> str:
    """A time in the canonical text form (a naive time is taken as UTC, as the log does)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """The aware UTC time of a canonical text form."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def sqlite_time(stored: str) -> str:
    """SQLite's stored ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) in the canonical text form."""
    if len(stored) == 26 and stored[10] == " ":
        return f"{stored[:10]}T{stored[11:]}Z"
    return iso_utc(datetime.fromisoformat(stored))


def hyphenated(stored: str) -> str:
    """A UUID as SQLite stores it (32 hex digits) in its hyphenated text form."""
    if len(stored) == 32:
        s = stored.lower()
        return f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"
    return str(uuid.UUID(stored))


def to_database(row: EventRow) -> dict[str, Any]:
    """The row as values for an INSERT through the events table (for a replay)."""
    values = dict(row)
    values["event_id"] = uuid.UUID(row["event_id"])
    values["case_id"] = uuid.UUID(row["case_id"])
    values["occurred_at"] = parse_time(row["occurred_at"])
    values["recorded_at"] = parse_time(row["recorded_at"])
    return values


def case_number(row: EventRow) -> str | None:
    """The case number an event records, if it records one (acceptance and later)."""
    payload = row["payload"]
    number = payload.get("case_number") if isinstance(payload, dict) else None
    return number if isinstance(number, str) else None
