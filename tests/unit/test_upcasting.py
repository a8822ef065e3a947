"""Versioned payloads: the upcasters' registry, CaseReceived v1 → v2, and intake's v2."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake.domain import Application
from shared.adapters.eventlog.hashing import HASHED_FIELDS, event_hash
from shared.domain.events import StoredEvent
from shared.domain.messages import CaseReceived, CaseReceivedV1
from shared.domain.upcasting import (
    CURRENT_VERSIONS,
    REGISTRY,
    SchemaTooNew,
    UpcasterRegistry,
    UpcastError,
    current_version,
    upcast,
    upcast_payload,
)

V1_PAYLOAD: dict[str, Any] = {
    "item_code": "pension_enrolment",
    "item_version": 1,
    "applicant": {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"},
    "materials": ["application_form", "household_register", "id_card"],
    "case_number": "XF-2025-000007",
    "station": "xuefeng_station",
    "workflow": {"name": "station_item", "version": 1},
}
"""A CaseReceived as intake wrote it before applicants chose a language (nor channels)."""


def stored(event_type: str, schema_version: int, payload: dict[str, Any]) -> StoredEvent:
    """A stored event whose hash is right for what it holds."""
    at = datetime(2025, 11, 3, 1, 2, 3, 456789, tzinfo=UTC)
    fields: dict[str, Any] = {
        "event_id": uuid.UUID(int=7),
        "case_id": uuid.UUID(int=8),
        "case_kind": "application",
        "version": 1,
        "event_type": event_type,
        "schema_version": schema_version,
        "occurred_at": at,
        "recorded_at": at,
        "actor_user": "li.clerk",
        "actor_role": "window_clerk",
        "actor_station": "xuefeng_station",
        "authority": "banqiao_town",
        "delegation_id": None,
        "delegation_version": None,
        "correlation_id": None,
        "causation_id": None,
        "payload": payload,
        "prev_hash": None,
    }
    return StoredEvent(position=1, hash=event_hash(fields), **fields)


def hash_of(event: StoredEvent) -> str:
    return event_hash({name: getattr(event, name) for name in HASHED_FIELDS})


def test_case_received_is_at_version_2() -> None:
    assert CURRENT_VERSIONS["CaseReceived"] == 2 == current_version("CaseReceived")
    assert current_version("CaseAccepted") == 1  # a type never changed is at version 1
    REGISTRY.check()


def test_a_v1_case_received_reads_as_v2_with_chinese_notices_by_sms() -> None:
    old = stored("CaseReceived", 1, copy.deepcopy(V1_PAYLOAD))
    new = upcast(old)
    assert new.schema_version == 2
    assert new.payload == {**V1_PAYLOAD, "language": "zh-CN", "channels": ["sms"]}
    model = CaseReceived.model_validate(new.payload)
    assert model.language == "zh-CN" and model.channels == ["sms"]
    # Everything else is the stored event's, hash and chain link included.
    assert dataclasses.replace(new, schema_version=1, payload=old.payload) == old
    assert new.hash == old.hash and new.prev_hash == old.prev_hash


def test_the_stored_event_is_untouched_and_still_verifies() -> None:
    payload = copy.deepcopy(V1_PAYLOAD)
    old = stored("CaseReceived", 1, payload)
    new = upcast(old)
    new.payload["applicant"]["name"] = "changed by a handler"
    new.payload["materials"].append("x")
    assert old.payload == V1_PAYLOAD and old.schema_version == 1
    assert hash_of(old) == old.hash
    # The upcast copy is a view: its stored hash does not describe it.
    assert hash_of(new) != new.hash


def test_channels_chosen_before_v2_are_kept() -> None:
    version, payload = upcast_payload("CaseReceived", 1, {**V1_PAYLOAD, "channels": ["email"]})
    assert version == 2
    assert payload["channels"] == ["email"] and payload["language"] == "zh-CN"
    CaseReceivedV1.model_validate({**V1_PAYLOAD, "channels": ["email"]})


def test_current_events_are_returned_as_they_are() -> None:
    current = stored("CaseReceived", 2, {**V1_PAYLOAD, "language": "en", "channels": ["sms"]})
    assert upcast(current) is current
    accepted = stored("CaseAccepted", 1, {"item_code": "pension_enrolment"})
    assert upcast(accepted) is accepted


def test_a_newer_version_than_the_code_knows_is_refused_not_guessed() -> None:
    with pytest.raises(SchemaTooNew) as raised:
        upcast(stored("CaseReceived", 3, dict(V1_PAYLOAD)))
    message = str(raised.value)
    assert "CaseReceived schema version 3" in message and "(version 2)" in message
    with pytest.raises(SchemaTooNew, match="CaseAccepted schema version 2"):
        upcast(stored("CaseAccepted", 2, {}))
    with pytest.raises(UpcastError, match="versions start at 1"):
        upcast_payload("CaseReceived", 0, {})


def test_upcasters_chain_to_the_current_version() -> None:
    registry = UpcasterRegistry()
    calls: list[str] = []

    @registry.register("Thing", 2)
    def two_to_three(payload: Mapping[str, Any]) -> dict[str, Any]:
        calls.append("2→3")
        return {**payload, "colour": payload.get("colour", "red"), "v3": True}

    @registry.register("Thing", 1)
    def one_to_two(payload: Mapping[str, Any]) -> dict[str, Any]:
        calls.append("1→2")
        return {**{k: v for k, v in payload.items() if k != "color"}, "colour": payload["color"]}

    registry.check()
    assert registry.current_version("Thing") == 3
    assert registry.upcast_payload("Thing", 1, {"color": "blue"}) == (
        3,
        {"colour": "blue", "v3": True},
    )
    assert calls == ["1→2", "2→3"]
    assert registry.upcast_payload("Thing", 2, {}) == (3, {"colour": "red", "v3": True})


def test_a_missing_or_doubled_step_is_an_error() -> None:
    registry = UpcasterRegistry()
    registry.register("Thing", 2)(dict)
    with pytest.raises(UpcastError, match="no upcaster from v1"):
        registry.check()
    with pytest.raises(UpcastError, match="no upcaster from v1"):
        registry.upcast_payload("Thing", 1, {})
    with pytest.raises(ValueError, match="already has an upcaster from v2"):
        registry.register("Thing", 2)(dict)
    with pytest.raises(ValueError, match="start at 1"):
        registry.register("Thing", 0)


def test_a_failing_upcaster_names_the_event_and_version() -> None:
    registry = UpcasterRegistry()

    @registry.register("Thing", 1)
    def needs_color(payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"colour": payload["color"]}

    with pytest.raises(UpcastError, match=r"Thing v1 payload can't be upcast: KeyError"):
        registry.upcast_payload("Thing", 1, {})


def test_intake_records_the_notice_language() -> None:
    applicant = {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"}
    assert Application.model_validate({"item_code": "x", "applicant": applicant}).language == (
        "zh-CN"
    )
    chosen = Application.model_validate(
        {"item_code": "x", "applicant": applicant, "language": "en"}
    )
    assert chosen.language == "en"
    with pytest.raises(ValidationError, match="language"):
        Application.model_validate({"item_code": "x", "applicant": applicant, "language": "fr"})
    schema = Application.model_json_schema()
    assert "通知语言" in schema["properties"]["language"]["description"]
