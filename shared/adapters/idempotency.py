"""Idempotency-Keys that belong to their sender, and the random ids of what requests make.

A key is scoped to the signed-in member of staff who sent it, as the IETF
Idempotency-Key draft scopes keys to the client: ``(organisation, user, key)`` is stored
with the operation it was sent with (method and route), a fingerprint of the request (a
SHA-256 over the canonical JSON of the validated body and path parameters) and the
resource it made, in the same transaction as what the request recorded.

- The same sender, key and request again: the resource it made, as it is now (after the
  usual visibility check) — a retry answers 200 and records nothing.
- The same sender and key with another body, path or operation: :class:`KeyReused` (409).
- Another sender's identical key is simply another row: a different request. Nothing is
  looked up by the key alone, so no answer can be replayed to anyone but its sender.

The ids of new cases, visits and subscriptions are random UUIDv7 (:func:`new_id`), never
derived from a key: a key someone guesses names nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
import uuid6
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.adapters.sql import insert_ignore
from shared.adapters.tables.idempotency import idempotency_keys as k
from shared.domain.events import utcnow

REUSED = (
    "this Idempotency-Key was already used for a different request; use a new key for a "
    "new request (该幂等键已用于另一请求，新请求请使用新键)"
)


class KeyReused(Exception):
    """The sender used this key before for a different request (HTTP 409)."""

    def __init__(self, message: str = REUSED) -> None:
        super().__init__(message)


class AlreadyAnswered(Exception):
    """The sender's identical request with this key was recorded first (a retry that
    raced the original, or a concurrent twin): answer with what it made. Raised inside
    the caller's transaction, which must roll back (it has written nothing yet)."""

    def __init__(self, resource_id: uuid.UUID) -> None:
        super().__init__(f"answered before: {resource_id}")
        self.resource_id = resource_id


def new_id() -> uuid.UUID:
    """A new resource's id: UUIDv7, its 74 random bits from ``secrets`` (unguessable), its
    leading time bits keeping new rows together in the indexes."""
    return uuid.UUID(int=uuid6.uuid7().int)


def fingerprint(body: BaseModel | Mapping[str, Any] | None, path: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON (sorted keys, no spaces) of the validated body
    and the path parameters (as text: ``case_id`` is the UUID in its one spelling)."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    document = {"body": body, "path": {name: str(value) for name, value in path.items()}}
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A request sent under an Idempotency-Key: whose key, and what was asked with it."""

    organisation: str
    user: str
    key: str
    operation: str
    """Method and route, e.g. ``POST /cases/{case_id}/actions/{action}``."""
    fingerprint: str

    @classmethod
    def of(
        cls,
        *,
        organisation: str,
        user: str,
        key: str,
        operation: str,
        body: BaseModel | Mapping[str, Any] | None,
        path: Mapping[str, Any] | None = None,
    ) -> KeyedRequest:
        """The keyed request with its fingerprint."""
        return cls(organisation, user, key, operation, fingerprint(body, path or {}))


@dataclasses.dataclass(frozen=True, slots=True)
class SenderKey:
    """A sender's Idempotency-Key and the operation it came with, before the body is
    validated (an action's body is read only once the case is known to be visible)."""

    organisation: str
    user: str
    key: str
    operation: str

    def keyed(
        self, body: BaseModel | Mapping[str, Any] | None, path: Mapping[str, Any] | None = None
    ) -> KeyedRequest:
        """The keyed request, once its body is validated."""
        return KeyedRequest.of(
            organisation=self.organisation,
            user=self.user,
            key=self.key,
            operation=self.operation,
            body=body,
            path=path,
        )


def _this(request: KeyedRequest) -> sa.ColumnElement[bool]:
    return sa.and_(
        k.c.organisation == request.organisation,
        k.c.actor_user == request.user,
        k.c.idempotency_key == request.key,
    )


async def recall(conn: AsyncConnection, request: KeyedRequest) -> uuid.UUID | None:
    """What the sender's earlier identical request made, or None if the key is new to them.

    Raises :class:`KeyReused` when they used the key for another operation or request."""
    query = sa.select(k.c.operation, k.c.fingerprint, k.c.resource_id).where(_this(request))
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    if (row.operation, row.fingerprint) != (request.operation, request.fingerprint):
        raise KeyReused()
    resource_id: uuid.UUID = row.resource_id
    return resource_id


async def answered(engine: AsyncEngine, request: KeyedRequest) -> uuid.UUID | None:
    """:func:`recall` on a connection of its own (before any transaction is opened; the
    event log's ``reader`` saves the transaction's round trips)."""
    async with engine.connect() as conn:
        return await recall(conn, request)


async def remember(conn: AsyncConnection, request: KeyedRequest, resource_id: uuid.UUID) -> None:
    """Record, in the transaction that writes what the request makes, that it made
    ``resource_id``. Call it before writing anything else in that transaction.

    If the sender's same key is recorded already — committed by a concurrent request while
    this one was on its way (PostgreSQL waits here for that transaction to end) — raises
    :class:`AlreadyAnswered` with what that one made, or :class:`KeyReused` if it was a
    different request; the caller rolls back and answers accordingly."""
    values = {
        "organisation": request.organisation,
        "actor_user": request.user,
        "idempotency_key": request.key,
        "operation": request.operation,
        "fingerprint": request.fingerprint,
        "resource_id": resource_id,
        "created_at": utcnow(),
    }
    if await insert_ignore(conn, k, values):
        return
    prior = await recall(conn, request)
    if prior is None:  # the row that kept ours out is committed: it can't be missing
        raise KeyReused("this Idempotency-Key is in use by a request still running")
    raise AlreadyAnswered(prior)
