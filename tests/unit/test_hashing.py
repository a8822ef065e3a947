"""The canonical encoding behind each event's hash."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from shared.adapters.eventlog.hashing import HASHED_FIELDS, canonical_bytes, event_hash


def fields(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {name: None for name in HASHED_FIELDS}
    base.update(
        event_id=uuid.UUID(int=1),
        case_id=uuid.UUID(int=2),
        case_kind="application",
        version=1,
        event_type="CaseReceived",
        schema_version=1,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        recorded_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        actor_user="u",
        actor_role="r",
        payload={"b": 1, "a": "张"},
    )
    base.update(changes)
    return base


def test_key_order_and_time_zone_do_not_change_the_hash() -> None:
    beijing = timezone(timedelta(hours=8))
    same = fields(
        payload={"a": "张", "b": 1}, occurred_at=datetime(2026, 1, 2, 11, 4, 5, tzinfo=beijing)
    )
    assert event_hash(same) == event_hash(fields())


def test_any_change_changes_the_hash() -> None:
    assert event_hash(fields(payload={"b": 2, "a": "张"})) != event_hash(fields())
    assert event_hash(fields(prev_hash="0" * 64)) != event_hash(fields())
    assert event_hash(fields(actor_user="v")) != event_hash(fields())


def test_encoding_is_compact_sorted_utf8() -> None:
    encoded = canonical_bytes(fields())
    assert encoded.startswith(b'{"actor_role":"r","actor_station":null,')
    assert "张".encode() in encoded and b" " not in encoded
