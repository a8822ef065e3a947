"""The senders' Idempotency-Keys in the database, on both backends: scoped to the sender,
settled by the primary key when two requests race, and the migration that adds them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from alembic import command

from shared.adapters import idempotency
from shared.adapters.db import alembic_config
from shared.adapters.eventlog import EventLog
from shared.adapters.idempotency import AlreadyAnswered, KeyedRequest, KeyReused


def request(
    org: str = "xuefeng_station",
    user: str = "li.clerk",
    key: str = "window-0001",
    body: dict[str, object] | None = None,
    operation: str = "POST /cases",
) -> KeyedRequest:
    return KeyedRequest.of(
        organisation=org,
        user=user,
        key=key,
        operation=operation,
        body=body if body is not None else {"item_code": "pension_enrolment"},
    )


async def remembered(log: EventLog, sent: KeyedRequest) -> uuid.UUID:
    made = idempotency.new_id()
    async with log.writer.begin() as conn:
        await idempotency.remember(conn, sent, made)
    return made


async def test_a_key_is_found_only_with_its_sender(log: EventLog) -> None:
    made = await remembered(log, request())
    assert await idempotency.answered(log.engine, request()) == made
    for stranger in (
        request(user="chen.clerk"),
        request(org="longmen_station"),
        request(key="window-0002"),
    ):
        assert await idempotency.answered(log.engine, stranger) is None
    # The same user name at another station has a key space of its own.
    theirs = await remembered(log, request(org="longmen_station"))
    assert theirs != made
    assert await idempotency.answered(log.engine, request()) == made
    with pytest.raises(KeyReused, match="Idempotency-Key"):
        await idempotency.answered(log.engine, request(body={"item_code": "funeral_subsidy"}))
    with pytest.raises(KeyReused):
        await idempotency.answered(log.engine, request(operation="POST /reception"))


async def test_the_first_of_two_racing_twins_wins_and_the_other_answers_with_it(
    log: EventLog,
) -> None:
    winner, loser = idempotency.new_id(), idempotency.new_id()
    async with log.writer.begin() as first:
        await idempotency.remember(first, request(), winner)

        async def second() -> None:
            async with log.writer.begin() as conn:
                await idempotency.remember(conn, request(), loser)

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        # It waits for the first transaction (PostgreSQL on the key's row, SQLite on
        # the write lock) rather than going ahead.
        assert not racing.done()
    with pytest.raises(AlreadyAnswered) as answered:
        await racing
    assert answered.value.resource_id == winner
    assert await idempotency.answered(log.engine, request()) == winner


async def test_a_twin_that_rolled_back_leaves_the_key_free(log: EventLog) -> None:
    gone = idempotency.new_id()
    with pytest.raises(RuntimeError):
        async with log.writer.begin() as conn:
            await idempotency.remember(conn, request(), gone)
            raise RuntimeError("refused after all")
    assert await idempotency.answered(log.engine, request()) is None
    kept = await remembered(log, request())
    assert await idempotency.answered(log.engine, request()) == kept


async def test_a_racing_twin_with_another_body_is_a_reuse(log: EventLog) -> None:
    await remembered(log, request())
    with pytest.raises(KeyReused):
        async with log.writer.begin() as conn:
            await idempotency.remember(conn, request(body={"other": 1}), idempotency.new_id())


def test_the_fingerprint_is_of_the_request_not_its_spelling() -> None:
    assert idempotency.fingerprint({"a": 1, "b": [1, 2]}, {}) == idempotency.fingerprint(
        {"b": [1, 2], "a": 1}, {}
    )
    case = uuid.uuid4()
    by_uuid = idempotency.fingerprint({}, {"case_id": case, "action": "claim"})
    assert by_uuid == idempotency.fingerprint({}, {"action": "claim", "case_id": str(case)})
    assert by_uuid != idempotency.fingerprint({}, {"case_id": uuid.uuid4(), "action": "claim"})
    assert by_uuid != idempotency.fingerprint({"note": None}, {"case_id": case, "action": "claim"})


def test_new_ids_are_random_uuid7() -> None:
    ids = [idempotency.new_id() for _ in range(1000)]
    assert {i.version for i in ids} == {7} and len(set(ids)) == 1000
    assert all(type(i) is uuid.UUID for i in ids)


async def test_the_migration_goes_down_and_up_again(db_url: str, log: EventLog) -> None:
    async def tables() -> set[str]:
        async with log.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))

    assert "idempotency_keys" in await tables()
    await log.engine.dispose()  # SQLite: let alembic have the file
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0009")
    assert "idempotency_keys" not in await tables()
    await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
    assert "idempotency_keys" in await tables()
    made = await remembered(log, request())
    assert await idempotency.answered(log.engine, request()) == made
