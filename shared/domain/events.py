"""The event envelope: what every change to a case carries, new and as stored.

Stored events are plain frozen dataclasses rather than pydantic models: the log reads
hundreds of thousands of them per second and validation already happened on the way in.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Actor(BaseModel):
    """Who did it: the user, the role they acted in and their station (or authority)."""

    model_config = ConfigDict(frozen=True)

    user: str = Field(min_length=1, max_length=100)
    role: str = Field(min_length=1, max_length=50)
    station: str | None = Field(default=None, max_length=50)


SYSTEM_ACTOR = Actor(user="system", role="system")


class NewEvent(BaseModel):
    """An event about to be appended. The log adds case, version, position, times and hashes."""

    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]{1,63}$")
    schema_version: int = Field(default=1, ge=1)
    occurred_at: datetime | None = None
    """When it happened; stored in UTC (a time without a zone is taken as UTC)."""
    actor: Actor = SYSTEM_ACTOR
    authority: str | None = None
    delegation_id: str | None = None
    delegation_version: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # SQLite keeps the wall-clock time and drops the offset: store every moment in UTC
        # so what is read back (and hashed again by an auditor) is the same moment.
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it."""

    position: int
    event_id: uuid.UUID
    case_id: uuid.UUID
    case_kind: str
    version: int
    event_type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor_user: str
    actor_role: str
    actor_station: str | None
    authority: str | None
    delegation_id: str | None
    delegation_version: int | None
    correlation_id: str | None
    causation_id: str | None
    payload: dict[str, Any]
    prev_hash: str | None
    hash: str
    tx_id: int = 0

    def envelope(self) -> dict[str, Any]:
        """The JSON-ready form, as stored (the bus and the API show it masked:
        ``shared.domain.privacy.masked_envelope``)."""
        return {
            "position": self.position,
            "event_id": str(self.event_id),
            "case_id": str(self.case_id),
            "case_kind": self.case_kind,
            "version": self.version,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "actor": {
                "user": self.actor_user,
                "role": self.actor_role,
                "station": self.actor_station,
            },
            "authority": self.authority,
            "delegation_id": self.delegation_id,
            "delegation_version": self.delegation_version,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_envelope(cls, data: dict[str, Any]) -> StoredEvent:
        """Inverse of :meth:`envelope`. A bus message or webhook body gives a masked view
        (``personal_data: masked``): its payload is not the stored one."""
        actor = data["actor"]
        return cls(
            position=int(data["position"]),
            event_id=uuid.UUID(data["event_id"]),
            case_id=uuid.UUID(data["case_id"]),
            case_kind=data["case_kind"],
            version=int(data["version"]),
            event_type=data["event_type"],
            schema_version=int(data["schema_version"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
            recorded_at=datetime.fromisoformat(data["recorded_at"]),
            actor_user=actor["user"],
            actor_role=actor["role"],
            actor_station=actor.get("station"),
            authority=data.get("authority"),
            delegation_id=data.get("delegation_id"),
            delegation_version=data.get("delegation_version"),
            correlation_id=data.get("correlation_id"),
            causation_id=data.get("causation_id"),
            payload=data["payload"],
            prev_hash=data.get("prev_hash"),
            hash=data["hash"],
        )


def utcnow() -> datetime:
    """Server time, always timezone-aware UTC."""
    return datetime.now(UTC)
