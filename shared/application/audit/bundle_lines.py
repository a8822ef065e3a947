"""The shape of a bundle's lines (pure): an event row of ``events.jsonl`` and a checkpoint of
``checkpoints.jsonl``, checked before anything reads them.

A line that is valid JSON but not a row (a field missing or extra, a value of the wrong
type or form) can't be verified or replayed: it is a damaged bundle, reported with its line
number, not a traceback. Tampering with a well-formed row is the verifier's business.
The checks are explicit (no model per row): a bundle holds millions of rows.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import operator
import re
from typing import Any

from shared.application.audit.checkpoint import Checkpoint
from shared.application.audit.rows import COLUMNS, EventRow

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
_INT64 = 2**63
_UINT64 = 2**64
_NONE = type(None)

_ROW_TYPES: dict[str, tuple[type, ...]] = {
    "position": (int,),
    "event_id": (str,),
    "case_id": (str,),
    "case_kind": (str,),
    "version": (int,),
    "event_type": (str,),
    "schema_version": (int,),
    "occurred_at": (str,),
    "recorded_at": (str,),
    "actor_user": (str,),
    "actor_role": (str,),
    "actor_station": (str, _NONE),
    "authority": (str, _NONE),
    "delegation_id": (str, _NONE),
    "delegation_version": (int, _NONE),
    "correlation_id": (str, _NONE),
    "causation_id": (str, _NONE),
    "payload": (dict,),
    "prev_hash": (str, _NONE),
    "hash": (str,),
    "tx_id": (int,),
}
assert tuple(_ROW_TYPES) == COLUMNS
_ROW_KEYS = frozenset(COLUMNS)
_ROW_VALUE_TYPES = frozenset(itertools.product(*_ROW_TYPES.values()))
"""Every allowed tuple of the values' types, in column order (one set look-up a row)."""
_ROW_FORM = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n" * 2
    + r"[0-9a-f]{64}\n"
    + r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\n" * 2
    + r"(?:[0-9a-f]{64})?\Z"
)
_FORM_COLUMNS = operator.itemgetter("event_id", "case_id", "hash", "occurred_at", "recorded_at")
_VALUES = operator.itemgetter(*COLUMNS)
_ROW_FORMS = (
    ("event_id", _UUID, "a UUID"),
    ("case_id", _UUID, "a UUID"),
    ("hash", _HEX64, "64 hex digits"),
    ("occurred_at", _TIME, "a UTC time like 2026-03-01T08:00:00.000000Z"),
    ("recorded_at", _TIME, "a UTC time like 2026-03-01T08:00:00.000000Z"),
)


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", dict: "an object", _NONE: "null"}
    return " or ".join(names[t] for t in types)


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "an object", _NONE: "null"}
    return names.get(type(value), type(value).__name__)


def row_types_ok(row: Any) -> bool:
    """Whether a parsed line has exactly the row's fields, each of its type (quick: run on
    every row a verification reads)."""
    try:
        return len(row) == len(COLUMNS) and tuple(map(type, _VALUES(row))) in _ROW_VALUE_TYPES
    except (KeyError, TypeError):
        return False


def row_forms_ok(row: EventRow) -> bool:
    """Whether a well-typed row's ids, hashes, times and numbers have their forms."""
    return (
        _ROW_FORM.match("\n".join((*_FORM_COLUMNS(row), row["prev_hash"] or ""))) is not None
        and 0 < row["position"] < _INT64
        and 0 < row["version"] < 2**31
    )


def row_problem(row: Any) -> str | None:
    """What makes a parsed line not an event row, or ``None`` if it is one."""
    if row_types_ok(row) and row_forms_ok(row):
        return None
    if type(row) is not dict:
        return f"an event must be a JSON object, not {_json_type(row)}"
    if row.keys() != _ROW_KEYS:
        missing = sorted(_ROW_KEYS - row.keys())
        extra = sorted(map(str, row.keys() - _ROW_KEYS))
        return "; ".join(
            [f"field {', '.join(missing)} missing"] * bool(missing)
            + [f"unknown field {', '.join(extra)}"] * bool(extra)
        )
    for name, types in _ROW_TYPES.items():
        if type(row[name]) not in types:
            return f"{name} must be {_type_name(types)}, not {_json_type(row[name])}"
    for name, form, what in _ROW_FORMS:
        if not form.match(row[name]):
            return f"{name} must be {what}, not {row[name]!r:.80}"
    prev = row["prev_hash"]
    if prev is not None and not _HEX64.match(prev):
        return f"prev_hash must be 64 hex digits or null, not {prev!r:.80}"
    if not 0 < row["position"] < _INT64:
        return f"position must be a positive 64-bit integer, not {row['position']}"
    return f"version must be a positive integer, not {row['version']}"


_CHECKPOINT_FIELDS = {f.name for f in dataclasses.fields(Checkpoint)}
_CHECKPOINT_INTS = {
    "seq": (0, _UINT64),
    "after_position": (-_INT64, _INT64),
    "upto_position": (-_INT64, _INT64),
    "event_count": (0, _UINT64),
}


def checkpoint_from_line(doc: Any) -> Checkpoint:
    """The checkpoint a parsed line of ``checkpoints.jsonl`` holds; ``ValueError`` saying
    what is wrong with it."""
    if type(doc) is not dict:
        raise ValueError(f"a checkpoint must be a JSON object, not {_json_type(doc)}")
    if doc.keys() != _CHECKPOINT_FIELDS:
        missing = sorted(_CHECKPOINT_FIELDS - doc.keys())
        extra = sorted(map(str, doc.keys() - _CHECKPOINT_FIELDS))
        raise ValueError(
            "; ".join(
                [f"field {', '.join(missing)} missing"] * bool(missing)
                + [f"unknown field {', '.join(extra)}"] * bool(extra)
            )
        )
    for name, (lo, hi) in _CHECKPOINT_INTS.items():
        value = doc[name]
        if type(value) is not int:
            raise ValueError(f"{name} must be an integer, not {_json_type(value)}")
        if not lo <= value < hi:
            raise ValueError(f"{name} {value} is out of range")
    for name in ("leaves", "digest", "key_id", "signature", "created_at"):
        if type(doc[name]) is not str:
            raise ValueError(f"{name} must be a string, not {_json_type(doc[name])}")
    if not _HEX64.match(doc["digest"]):
        raise ValueError("digest must be 64 hex digits")
    prev = doc["prev_digest"]
    if prev is not None and (type(prev) is not str or not _HEX64.match(prev)):
        raise ValueError("prev_digest must be 64 hex digits or null")
    try:
        leaves = base64.b64decode(doc["leaves"], validate=True)
    except binascii.Error as err:
        raise ValueError(f"leaves is not base64: {err}") from None
    return Checkpoint(**{**doc, "leaves": leaves})
