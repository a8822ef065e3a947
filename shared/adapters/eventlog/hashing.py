"""Canonical encoding and SHA-256 hash of an event, linking it to the case's previous one.

The encoding is JSON with sorted keys, no insignificant whitespace, UTF-8, and times as
ISO 8601 in UTC with microseconds. It covers everything about the event except what the
database assigns (global position, transaction id): those are covered by signed checkpoints.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

HASHED_FIELDS = (
    "event_id",
    "case_id",
    "case_kind",
    "version",
    "event_type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "actor_user",
    "actor_role",
    "actor_station",
    "authority",
    "delegation_id",
    "delegation_version",
    "correlation_id",
    "causation_id",
    "payload",
    "prev_hash",
)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """The canonical encoding of an event's hashed fields."""
    doc: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = fields[name]
        if isinstance(value, datetime):
            value = _iso(value)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        doc[name] = value
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def event_hash(fields: dict[str, Any]) -> str:
    """Hex SHA-256 over the canonical encoding."""
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()
