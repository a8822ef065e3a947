"""Delegations in the event log: commands that append to an instrument's stream and keep
the delegation index in the same transaction, a registry that reads them back, and the
seed instruments packaged in ``shared/data/delegations.yaml``.

Every command takes either the :class:`EventLog` (its own write transaction; a race with
another writer ends in :class:`ConcurrencyError`, and the relay is woken after commit) or
an open :class:`AsyncConnection` in a transaction (a unit of work: the caller commits).
"""

from __future__ import annotations

import dataclasses
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.eventlog import (
    ConcurrencyError,
    EventLog,
    Transaction,
    append_in,
    read_case_in,
    read_cases_in,
)
from shared.adapters.tables.delegations import delegation_index
from shared.adapters.tables.eventlog import events as events_table
from shared.domain.catalogue import Catalogue
from shared.domain.delegation import (
    CASE_KIND,
    DELEGATION_NAMESPACE,
    DelegationState,
    Instrument,
    decide_amend,
    decide_publish,
    decide_resume,
    decide_revoke,
    decide_suspend,
    delegation_case_id,
    fold_delegation,
)
from shared.domain.events import Actor, NewEvent, StoredEvent, utcnow
from shared.domain.orgs import Organisations
from shared.domain.yamltext import YAMLError, parse_yaml

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SEED_FILE = "delegations.yaml"

Source = EventLog | AsyncConnection
"""Where to read or write: the log (own transaction) or a connection in a transaction."""


@dataclasses.dataclass(frozen=True, slots=True)
class DelegationOutcome:
    """What a command left: the instrument's state and the events it stored."""

    state: DelegationState
    events: tuple[StoredEvent, ...]
    replayed: bool = False
    """True when the command's event id was stored already: a retry; nothing was added."""


Decide = Callable[[DelegationState | None, datetime], list[NewEvent]]


async def _execute_in(
    target: AsyncConnection | Transaction,
    code: str,
    decide: Decide,
    *,
    at: datetime,
    event_id: uuid.UUID | None,
    expected_version: int | None,
    index: Instrument | None,
    decided: list[NewEvent],
) -> DelegationOutcome:
    """Run ``decide`` on the instrument's state and append what it decided: through
    ``target``'s :meth:`Transaction.append` (announced when it commits), or on a bare
    connection inside the caller's own transaction (the caller announces it)."""
    conn = target.conn if isinstance(target, Transaction) else target
    case_id = delegation_case_id(code)
    history = await read_case_in(conn, case_id)
    state = fold_delegation(history)
    if event_id is not None:
        for stored in history:
            if stored.event_id == event_id:
                assert state is not None
                return DelegationOutcome(state, (stored,), replayed=True)
    version = state.version if state else 0
    if expected_version is not None and expected_version != version:
        raise ConcurrencyError(case_id, expected_version, version)
    new = decide(state, at)
    decided.extend(new)
    if index is not None:
        # Before the append: if the append fails, the transaction takes the row with it.
        await conn.execute(
            sa.insert(delegation_index).values(
                code=index.code,
                case_id=case_id,
                delegator=index.delegator,
                delegate=index.delegate,
            )
        )
    if isinstance(target, Transaction):
        result = await target.append(case_id, version, new, case_kind=CASE_KIND)
    else:
        result = await append_in(conn, case_id, version, new, case_kind=CASE_KIND)
    after = fold_delegation([*history, *result.events])
    assert after is not None
    return DelegationOutcome(after, result.events, replayed=result.replayed)


async def _execute(
    target: Source,
    code: str,
    decide: Decide,
    *,
    at: datetime | None,
    event_id: uuid.UUID | None,
    expected_version: int | None = None,
    index: Instrument | None = None,
) -> DelegationOutcome:
    moment = at or utcnow()
    decided: list[NewEvent] = []
    kwargs: dict[str, Any] = {
        "at": moment,
        "event_id": event_id,
        "expected_version": expected_version,
        "index": index,
        "decided": decided,
    }
    if isinstance(target, AsyncConnection):
        return await _execute_in(target, code, decide, **kwargs)
    try:
        async with target.transaction() as tx:
            outcome = await _execute_in(tx, code, decide, **kwargs)
    except IntegrityError:
        # Another writer published the same code, or appended to the stream, between our
        # read and our insert (or an event id is taken by another case).
        case_id = delegation_case_id(code)
        expected = expected_version if expected_version is not None else 0
        original = await target.resolve_conflict(case_id, expected, decided)
        state = fold_delegation(await target.read_case(case_id))
        assert state is not None
        return DelegationOutcome(state, original.events, replayed=True)
    return outcome


async def publish(
    target: Source,
    instrument: Instrument,
    *,
    actor: Actor,
    at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> DelegationOutcome:
    """Publish a new instrument: ``DelegationPublished`` and its index row, together."""

    def decide(state: DelegationState | None, moment: datetime) -> list[NewEvent]:
        return decide_publish(
            state,
            instrument,
            actor=actor,
            at=moment,
            event_id=event_id,
            correlation_id=correlation_id,
        )

    return await _execute(
        target, instrument.code, decide, at=at, event_id=event_id, index=instrument
    )


async def amend(
    target: Source,
    instrument: Instrument,
    *,
    reason: str,
    actor: Actor,
    at: datetime | None = None,
    expected_version: int | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> DelegationOutcome:
    """Replace an instrument's text (same code and bodies): ``DelegationAmended``."""

    def decide(state: DelegationState | None, moment: datetime) -> list[NewEvent]:
        return decide_amend(
            state,
            instrument,
            reason=reason,
            actor=actor,
            at=moment,
            event_id=event_id,
            correlation_id=correlation_id,
        )

    return await _execute(
        target,
        instrument.code,
        decide,
        at=at,
        event_id=event_id,
        expected_version=expected_version,
    )


_STATUS_COMMANDS = {
    "suspend": decide_suspend,
    "resume": decide_resume,
    "revoke": decide_revoke,
}


async def _status(
    kind: str,
    target: Source,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime | None,
    expected_version: int | None,
    event_id: uuid.UUID | None,
    correlation_id: str | None,
) -> DelegationOutcome:
    command = _STATUS_COMMANDS[kind]

    def decide(state: DelegationState | None, moment: datetime) -> list[NewEvent]:
        return command(
            state,
            code,
            reason=reason,
            actor=actor,
            at=moment,
            event_id=event_id,
            correlation_id=correlation_id,
        )

    return await _execute(
        target, code, decide, at=at, event_id=event_id, expected_version=expected_version
    )


async def suspend(
    target: Source,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime | None = None,
    expected_version: int | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> DelegationOutcome:
    """Suspend an active instrument: ``DelegationSuspended``."""
    return await _status(
        "suspend",
        target,
        code,
        reason=reason,
        actor=actor,
        at=at,
        expected_version=expected_version,
        event_id=event_id,
        correlation_id=correlation_id,
    )


async def resume(
    target: Source,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime | None = None,
    expected_version: int | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> DelegationOutcome:
    """Put a suspended instrument back in force: ``DelegationResumed``."""
    return await _status(
        "resume",
        target,
        code,
        reason=reason,
        actor=actor,
        at=at,
        expected_version=expected_version,
        event_id=event_id,
        correlation_id=correlation_id,
    )


async def revoke(
    target: Source,
    code: str,
    *,
    reason: str,
    actor: Actor,
    at: datetime | None = None,
    expected_version: int | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> DelegationOutcome:
    """Revoke an instrument for good: ``DelegationRevoked``."""
    return await _status(
        "revoke",
        target,
        code,
        reason=reason,
        actor=actor,
        at=at,
        expected_version=expected_version,
        event_id=event_id,
        correlation_id=correlation_id,
    )


# Reading ----------------------------------------------------------------------------

_HEAD_VERSION = (
    sa.select(sa.func.max(events_table.c.version))
    .where(events_table.c.case_id == delegation_index.c.case_id)
    .scalar_subquery()
)
_INDEX = sa.select(delegation_index.c.code, delegation_index.c.case_id, _HEAD_VERSION)


class DelegationRegistry:
    """Reads instruments through the delegation index.

    Folded states are cached in this process by stream: a state at version ``v`` never
    changes (the log is append-only), so each read asks the database only for the index
    rows and their streams' head versions (one query) and re-reads just the streams that
    moved on. States are cached only from this registry's own committed reads, never from
    a caller's transaction, which might still roll back.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._cache: dict[uuid.UUID, DelegationState] = {}

    async def _select(
        self, where: sa.ColumnElement[bool] | None, conn: AsyncConnection | None
    ) -> list[DelegationState]:
        query = _INDEX if where is None else _INDEX.where(where)
        if conn is not None:
            return await self._load(conn, query, fill=False)
        async with self.log.reader.connect() as own:
            return await self._load(own, query, fill=True)

    async def _load(
        self, conn: AsyncConnection, query: sa.Select[Any], *, fill: bool
    ) -> list[DelegationState]:
        rows = (await conn.execute(query)).all()
        fresh: dict[uuid.UUID, DelegationState] = {}
        stale: list[uuid.UUID] = []
        for _code, case_id, version in rows:
            cached = self._cache.get(case_id)
            if cached is not None and cached.version == version:
                fresh[case_id] = cached
            elif version is not None:
                stale.append(case_id)
        for case_id, history in (await read_cases_in(conn, stale)).items():
            state = fold_delegation(history)
            if state is None:
                continue
            fresh[case_id] = state
            if fill:
                self._cache[case_id] = state
        return sorted(fresh.values(), key=lambda s: s.code)

    async def for_delegate(
        self, org: str, *, conn: AsyncConnection | None = None
    ) -> list[DelegationState]:
        """Every instrument (any status) whose delegate is ``org``, by code."""
        return await self._select(delegation_index.c.delegate == org, conn)

    async def for_delegator(
        self, org: str, *, conn: AsyncConnection | None = None
    ) -> list[DelegationState]:
        """Every instrument (any status) that ``org`` issued, by code."""
        return await self._select(delegation_index.c.delegator == org, conn)

    async def get(
        self, code: str, *, conn: AsyncConnection | None = None
    ) -> DelegationState | None:
        """The instrument ``code``, or None if it was never published."""
        found = await self._select(delegation_index.c.code == code, conn)
        return found[0] if found else None

    async def all(self, *, conn: AsyncConnection | None = None) -> list[DelegationState]:
        """Every instrument, by code."""
        return await self._select(None, conn)


_REGISTRIES: weakref.WeakKeyDictionary[EventLog, DelegationRegistry] = weakref.WeakKeyDictionary()


def registry_for(log: EventLog) -> DelegationRegistry:
    """The registry of ``log`` (one per log, so that its cache is shared)."""
    registry = _REGISTRIES.get(log)
    if registry is None:
        registry = _REGISTRIES[log] = DelegationRegistry(log)
    return registry


async def for_delegate(source: Source, org: str) -> list[DelegationState]:
    """Every instrument whose delegate is ``org``, read through the log (cached) or
    through a connection (as its transaction sees them)."""
    if isinstance(source, EventLog):
        return await registry_for(source).for_delegate(org)
    return await _uncached_for_delegate(source, org)


async def _uncached_for_delegate(conn: AsyncConnection, org: str) -> list[DelegationState]:
    rows = (await conn.execute(_INDEX.where(delegation_index.c.delegate == org))).all()
    histories = await read_cases_in(conn, [case_id for _, case_id, _ in rows])
    states = [s for s in map(fold_delegation, histories.values()) if s is not None]
    return sorted(states, key=lambda s: s.code)


# Seed instruments -------------------------------------------------------------------


class SeedError(ValueError):
    """The packaged seed instruments are not valid."""


class _SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delegations: list[Instrument] = Field(min_length=1)


def load_seed_delegations(
    data_dir: Path | None = None,
    *,
    catalogue: Catalogue | None = None,
    organisations: Organisations | None = None,
) -> list[Instrument]:
    """The instruments in ``<data_dir>/delegations.yaml`` (default: the packaged data).

    Given the catalogue and the organisations, also checks them against those (see
    :func:`seed_problems`) and raises :class:`SeedError` listing every problem.
    """
    path = (data_dir or DEFAULT_DATA_DIR) / SEED_FILE
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
        seed = _SeedFile.model_validate(raw)
    except (OSError, YAMLError) as err:
        raise SeedError(f"can't read {path}: {err}") from err
    except ValidationError as err:
        raise SeedError(f"{path} is not valid: {err}") from err
    codes = [i.code for i in seed.delegations]
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise SeedError(f"{path}: codes used twice: {', '.join(duplicates)}")
    if catalogue is not None and organisations is not None:
        problems = seed_problems(seed.delegations, catalogue, organisations)
        if problems:
            raise SeedError(f"{path}:\n  " + "\n  ".join(problems))
    return seed.delegations


def seed_problems(
    instruments: Iterable[Instrument], catalogue: Catalogue, organisations: Organisations
) -> list[str]:
    """What makes instruments unfit for the catalogue: unknown bodies or items, and items
    whose competent authority is not the delegator (such an instrument grants nothing:
    no sub-delegation)."""
    problems = []
    for inst in instruments:
        for role in ("delegator", "delegate"):
            if getattr(inst, role) not in organisations:
                problems.append(f"{inst.code}: unknown {role} {getattr(inst, role)!r}")
        for code in inst.items:
            try:
                item = catalogue.get(code)
            except LookupError as err:
                problems.append(f"{inst.code}: {err}")
                continue
            if item.authority != inst.delegator:
                problems.append(
                    f"{inst.code}: {code}'s competent authority is {item.authority}, not "
                    f"{inst.delegator}; the delegation would grant nothing (no sub-delegation)"
                )
    return problems


def seed_event_id(code: str) -> uuid.UUID:
    """The id of a seed instrument's publication (so seeding twice adds nothing)."""
    return uuid.uuid5(DELEGATION_NAMESPACE, f"seed:{code}")


async def publish_seed(
    target: Source,
    instruments: Iterable[Instrument] | None = None,
    *,
    data_dir: Path | None = None,
    at: datetime | None = None,
) -> list[DelegationOutcome]:
    """Publish the seed instruments that are not published yet; idempotent.

    Each is published by a ``seed`` user acting as a department officer of its
    delegator, effective from the start of its publication day.
    """
    chosen: Sequence[Instrument] = (
        list(instruments) if instruments is not None else load_seed_delegations(data_dir)
    )
    outcomes = []
    for instrument in chosen:
        if isinstance(target, EventLog):
            existing = fold_delegation(await target.read_case(delegation_case_id(instrument.code)))
        else:
            existing = fold_delegation(
                await read_case_in(target, delegation_case_id(instrument.code))
            )
        if existing is not None:
            continue
        actor = Actor(user="seed", role="department_officer", station=instrument.delegator)
        outcomes.append(
            await publish(
                target, instrument, actor=actor, at=at, event_id=seed_event_id(instrument.code)
            )
        )
    return outcomes
