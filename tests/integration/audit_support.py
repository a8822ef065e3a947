"""Helpers for the audit tests: a log with cases and checkpoints, and a superuser's edits
that bypass the append-only triggers."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.eventlog import EventLog
from shared.adapters.eventlog.hashing import event_hash
from shared.adapters.tables.eventlog import events
from shared.application.audit.keys import ensure_audit_key, keys_by_id, load_signing_key
from shared.domain.events import Actor, NewEvent, StoredEvent

CLERK = Actor(user="clerk-1", role="window_clerk", station="xuefeng_station")


def audit_key(folder: Path) -> Ed25519PrivateKey:
    path = folder / "keys" / "audit-ed25519.pem"
    ensure_audit_key(path)
    return load_signing_key(path)


def public(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return keys_by_id([key.public_key()])


async def fill(
    log: EventLog, cases: int = 6, per_case: int = 4, station: str = "xuefeng_station"
) -> list[uuid.UUID]:
    """Cases whose events interleave in the log (round-robin appends)."""
    ids = [uuid.uuid4() for _ in range(cases)]
    actor = Actor(user="clerk-1", role="window_clerk", station=station)
    for version in range(per_case):
        for n, case in enumerate(ids):
            payload: dict[str, Any] = {"step": version, "case": n, "名": "张三"}
            if version == 0:
                payload["station"] = station
            if version == 1:
                payload["case_number"] = f"XF-2026-{n:06d}"
            event = NewEvent(event_type=f"Step{version}", actor=actor, payload=payload)
            await log.append(case, version, [event], case_kind="application")
    return ids


class Superuser:
    """Edits the log as someone who can bypass the refusal triggers would."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _bypass(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        else:
            for trigger in (
                "events_no_update",
                "events_no_delete",
                "audit_checkpoints_no_update",
                "audit_checkpoints_no_delete",
            ):
                await conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {trigger}"))

    async def run(self, *statements: sa.Executable) -> None:
        async with self.engine.begin() as conn:
            await self._bypass(conn)
            for statement in statements:
                await conn.execute(statement)

    async def move(self, moves: Sequence[tuple[int, int]]) -> None:
        """Change events' positions (``(from, to)`` pairs) without clashing mid-way."""
        temp = [
            sa.update(events).where(events.c.position == src).values(position=-src)
            for src, _ in moves
        ]
        final = [
            sa.update(events).where(events.c.position == -src).values(position=dst)
            for src, dst in moves
        ]
        await self.run(*temp, *final)


def rehashed(history: Sequence[StoredEvent], start: int = 0) -> list[StoredEvent]:
    """The case's events from index ``start`` on, re-linked and re-hashed as a forger would."""
    out = list(history[:start])
    for event in history[start:]:
        prev = out[-1].hash if out else None
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        fields["prev_hash"] = prev
        fields["hash"] = event_hash(fields)
        out.append(StoredEvent(**fields))
    return out


def overwrite(event: StoredEvent) -> sa.Executable:
    """An UPDATE that stores ``event``'s columns at its position."""
    values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    values.pop("position")
    return sa.update(events).where(events.c.position == event.position).values(**values)
