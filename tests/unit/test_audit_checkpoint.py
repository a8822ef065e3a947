"""The checkpoint's leaf list and digest, and the portable row's hash (pure)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.adapters.eventlog.hashing import event_hash
from shared.application.audit.checkpoint import (
    LeafFormatError,
    decode_leaves,
    encode_leaves,
    sign_checkpoint,
    signature_valid,
)
from shared.application.audit.keys import keys_by_id
from shared.application.audit.rows import COLUMNS, iso_utc, row_hash


def test_leaves_round_trip_with_gaps_and_runs() -> None:
    positions = [3, 4, 5, 9, 10, 42]
    records = [bytes([n]) * 64 for n in range(len(positions))]
    leaves = decode_leaves(encode_leaves(positions, records))
    assert list(leaves.positions) == positions
    assert [leaves.record(i) for i in range(len(positions))] == records
    with pytest.raises(ValueError, match="ascend"):
        encode_leaves([2, 1], records[:2])
    with pytest.raises(LeafFormatError):
        decode_leaves(encode_leaves(positions, records)[:-1])


def test_digest_covers_range_count_leaves_and_the_previous_digest() -> None:
    key = Ed25519PrivateKey.generate()
    keys = keys_by_id([key.public_key()])
    cp = sign_checkpoint(
        key,
        seq=2,
        after_position=10,
        upto_position=12,
        positions=[11, 12],
        records=[b"a" * 64, b"b" * 64],
        prev_digest="ab" * 32,
        created_at="2026-01-01T00:00:00.000000Z",
    )
    assert cp.expected_digest() == cp.digest and signature_valid(cp, keys)
    for change in (
        {"upto_position": 13},
        {"after_position": 9},
        {"event_count": 1},
        {"prev_digest": "cd" * 32},
        {"leaves": encode_leaves([11, 12], [b"a" * 64, b"c" * 64])},
    ):
        assert dataclasses.replace(cp, **change).expected_digest() != cp.digest, change
    forged = dataclasses.replace(cp, signature=Ed25519PrivateKey.generate().sign(b"x").hex())
    assert not signature_valid(forged, keys)
    assert not signature_valid(cp, keys_by_id([Ed25519PrivateKey.generate().public_key()]))


def test_portable_row_hashes_as_the_log_does() -> None:
    moment = datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
    fields = {
        "event_id": uuid.uuid4(),
        "case_id": uuid.uuid4(),
        "case_kind": "application",
        "version": 2,
        "event_type": "CaseAccepted",
        "schema_version": 1,
        "occurred_at": moment,
        "recorded_at": moment,
        "actor_user": "u",
        "actor_role": "window_clerk",
        "actor_station": "xuefeng_station",
        "authority": None,
        "delegation_id": "d-1",
        "delegation_version": 3,
        "correlation_id": None,
        "causation_id": None,
        "payload": {"b": [1, 2.5, None], "a": "张三"},
        "prev_hash": "0" * 64,
    }
    row = {
        **fields,
        "event_id": str(fields["event_id"]),
        "case_id": str(fields["case_id"]),
        "occurred_at": iso_utc(moment),
        "recorded_at": iso_utc(moment),
        "position": 7,
        "hash": "",
        "tx_id": 99,
    }
    assert set(row) == set(COLUMNS)
    assert row_hash(row) == event_hash(fields)
    assert row_hash({**row, "payload": {"a": "张三", "b": [1, 2.5, None]}}) == event_hash(fields)
    assert row_hash({**row, "version": 3}) != event_hash(fields)
    assert row_hash({**row, "extra": 1}) != event_hash(fields)
