"""Tamper evidence on both backends: each kind of tampering done in the database as a
superuser would, found and located by the verifier (also when the attacker recomputed the
hashes, when only the signed checkpoints can tell)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.adapters.eventlog import EventLog
from shared.adapters.eventlog.hashing import event_hash
from shared.adapters.tables.audit import audit_checkpoints
from shared.adapters.tables.eventlog import events
from shared.application.audit.database import verify_database
from shared.application.audit.verify import Report
from shared.application.audit.writer import CheckpointBusy, write_all, write_checkpoint
from shared.devtools.waiting import eventually
from shared.domain.events import NewEvent
from tests.integration.audit_support import (
    CLERK,
    Superuser,
    audit_key,
    fill,
    overwrite,
    public,
    rehashed,
)


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return audit_key(tmp_path)


async def checkpointed(log: EventLog, key: Ed25519PrivateKey) -> list[uuid.UUID]:
    cases = await fill(log)
    # Small checkpoints, so that tampering is located across several of them.
    written = await write_all(log.engine, key, max_events=7)
    assert [c.seq for c in written] == [1, 2, 3, 4]
    return cases


async def verify(log: EventLog, key: Ed25519PrivateKey) -> Report:
    return await verify_database(log.engine, public(key))


def kinds(report: Report) -> list[tuple[str, int | None]]:
    return [(f.kind, f.position) for f in report.findings]


async def test_untouched_log_verifies_clean(log: EventLog, key: Ed25519PrivateKey) -> None:
    await checkpointed(log, key)
    await fill(log, cases=2)  # after the last checkpoint: hashes and links only
    report = await verify(log, key)
    assert report.ok, report.findings
    assert (report.events, report.cases, report.checkpoints) == (32, 8, 4)
    assert (report.covered_events, report.uncovered_events, report.covered_upto) == (24, 8, 24)


async def test_modified_content_is_located(log: EventLog, key: Ed25519PrivateKey) -> None:
    cases = await checkpointed(log, key)
    target = (await log.read_case(cases[2]))[1]
    await Superuser(log.engine).run(
        sa.update(events)
        .where(events.c.position == target.position)
        .values(payload={**target.payload, "step": 99})
    )
    report = await verify(log, key)
    assert kinds(report) == [("modified", target.position)]
    (finding,) = report.findings
    assert finding.event_id == str(target.event_id) and finding.version == 2
    assert finding.case_id == str(cases[2]) and finding.case_number == "XF-2026-000002"


async def test_modified_and_rehashed_with_every_later_link_is_located_by_the_checkpoint(
    log: EventLog, key: Ed25519PrivateKey
) -> None:
    cases = await checkpointed(log, key)
    history = await log.read_case(cases[1])
    forged = dataclasses.replace(history[1], actor_user="someone-else")
    chain = rehashed([*history[:1], forged, *history[2:]], start=1)
    await Superuser(log.engine).run(*(overwrite(e) for e in chain[1:]))

    report = await verify(log, key)
    # Hashes and links are consistent again: only the signed leaves tell, and they name
    # the altered event; the later ones are only re-linked.
    assert kinds(report) == [
        ("modified", history[1].position),
        ("relinked", history[2].position),
        ("relinked", history[3].position),
    ]
    assert report.findings[0].event_id == str(history[1].event_id)
    assert report.findings[0].checkpoint is not None


async def test_modified_and_rehashed_alone_is_named_by_its_successor_link(
    log: EventLog, key: Ed25519PrivateKey
) -> None:
    cases = await fill(log)  # no checkpoint at all: the chain alone must tell
    history = await log.read_case(cases[0])
    forged = dataclasses.replace(history[1], payload={"step": 1, "case": 0, "x": 1})
    (forged,) = rehashed([history[0], forged], start=1)[1:]
    await Superuser(log.engine).run(overwrite(forged))
    report = await verify_database(log.engine, {})
    assert kinds(report) == [("modified", history[1].position)]
    assert report.findings[0].version == 2


async def test_deleted_event_is_located(log: EventLog, key: Ed25519PrivateKey) -> None:
    cases = await checkpointed(log, key)
    target = (await log.read_case(cases[4]))[2]
    await Superuser(log.engine).run(sa.delete(events).where(events.c.position == target.position))
    report = await verify(log, key)
    assert kinds(report) == [("deleted", target.position)]
    (finding,) = report.findings
    assert finding.event_id == str(target.event_id) and finding.version == 3
    assert finding.case_number == "XF-2026-000004"


async def test_deleted_with_the_rest_renumbered_and_rehashed_is_located(
    log: EventLog, key: Ed25519PrivateKey
) -> None:
    cases = await checkpointed(log, key)
    history = await log.read_case(cases[3])
    victim = history[1]
    shifted = [dataclasses.replace(e, version=e.version - 1) for e in history[2:]]
    chain = rehashed([history[0], *shifted], start=1)
    await Superuser(log.engine).run(
        sa.delete(events).where(events.c.position == victim.position),
        *(overwrite(e) for e in chain[1:]),
    )
    report = await verify(log, key)
    assert report.findings[0].kind == "deleted"
    assert report.findings[0].position == victim.position
    assert report.findings[0].event_id == str(victim.event_id)
    # The renumbered successors differ from what was signed, too.
    assert {f.position for f in report.findings[1:]} == {e.position for e in history[2:]}


async def test_inserted_event_is_located(log: EventLog, key: Ed25519PrivateKey) -> None:
    await checkpointed(log, key)
    # Make room at position 10 (everything from 10 on moves up by one), then put a forged
    # case there whose hash is right: only the checkpoints know position 10 held another.
    last = 24
    await Superuser(log.engine).move([(p, p + 1) for p in range(last, 9, -1)])
    forged = {
        "position": 10,
        "event_id": uuid.uuid4(),
        "case_id": uuid.uuid4(),
        "case_kind": "application",
        "version": 1,
        "event_type": "CaseReceived",
        "schema_version": 1,
        "occurred_at": (await log.read_all())[0].occurred_at,
        "recorded_at": (await log.read_all())[0].recorded_at,
        "actor_user": CLERK.user,
        "actor_role": CLERK.role,
        "actor_station": CLERK.station,
        "authority": None,
        "delegation_id": None,
        "delegation_version": None,
        "correlation_id": None,
        "causation_id": None,
        "payload": {"forged": True},
        "prev_hash": None,
        "tx_id": 0,
    }
    forged["hash"] = event_hash(forged)
    await Superuser(log.engine).run(sa.insert(events).values(**forged))

    report = await verify(log, key)
    inserted = [f for f in report.findings if f.kind == "inserted"]
    assert [(f.position, f.event_id) for f in inserted] == [(10, str(forged["event_id"]))]
    assert {f.kind for f in report.findings} == {"inserted", "reordered"}


async def test_reordered_events_are_located(log: EventLog, key: Ed25519PrivateKey) -> None:
    cases = await checkpointed(log, key)
    a = (await log.read_case(cases[0]))[1]
    b = (await log.read_case(cases[5]))[2]
    await Superuser(log.engine).move([(a.position, b.position), (b.position, a.position)])
    report = await verify(log, key)
    assert kinds(report) == [("reordered", a.position), ("reordered", b.position)]
    moved = {f.event_id: f.position for f in report.findings}
    assert moved == {str(b.event_id): a.position, str(a.event_id): b.position}


async def test_reordered_within_a_case_without_checkpoints(log: EventLog) -> None:
    cases = await fill(log)
    history = await log.read_case(cases[2])
    first, second = history[1], history[2]
    await Superuser(log.engine).move(
        [(first.position, second.position), (second.position, first.position)]
    )
    report = await verify_database(log.engine, {})
    assert [(f.kind, f.event_id) for f in report.findings] == [("reordered", str(first.event_id))]


async def test_altered_or_removed_checkpoints_are_reported(
    log: EventLog, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    await checkpointed(log, key)
    su = Superuser(log.engine)
    await su.run(sa.delete(audit_checkpoints).where(audit_checkpoints.c.seq == 2))
    await su.run(
        sa.update(audit_checkpoints)
        .where(audit_checkpoints.c.seq == 4)
        .values(event_count=audit_checkpoints.c.event_count - 1)
    )
    report = await verify(log, key)
    messages = [f.detail for f in report.findings]
    assert [f.checkpoint for f in report.findings] == [3, 4], messages
    assert "checkpoint 2 before it was deleted" in messages[0]
    assert "altered" in messages[1]
    assert report.covered_upto == 7

    other = audit_key(tmp_path / "other")
    foreign = await verify_database(log.engine, public(other))
    unsigned = [f.checkpoint for f in foreign.findings if "signature is not valid" in f.detail]
    assert unsigned == [1, 3]
    assert foreign.covered_events == 0


async def test_two_writers_never_fork_the_chain(log: EventLog, key: Ed25519PrivateKey) -> None:
    await fill(log)
    results = await asyncio.gather(
        *(write_checkpoint(log.engine, key) for _ in range(4)), return_exceptions=True
    )
    written = [r for r in results if r is not None and not isinstance(r, BaseException)]
    assert len(written) >= 1
    assert all(isinstance(r, CheckpointBusy) or r is None or r in written for r in results), results
    report = await verify(log, key)
    assert report.ok and report.covered_events == 24, report.findings


async def test_a_checkpoint_never_signs_a_range_a_late_commit_could_still_enter(
    postgres_url: str, key: Ed25519PrivateKey
) -> None:
    from shared.adapters.db import create_engine
    from shared.adapters.eventlog import append_in

    engine = create_engine(postgres_url)
    log = EventLog(engine)
    try:
        await fill(log, cases=2)
        slow = uuid.uuid4()
        async with engine.begin() as conn:
            # Draws a lower position, commits after a later append.
            await append_in(
                conn, slow, 0, [NewEvent(event_type="Slow", actor=CLERK)], case_kind="application"
            )
            await log.append(
                uuid.uuid4(), 0, [NewEvent(event_type="Fast", actor=CLERK)], case_kind="application"
            )
            with pytest.raises(CheckpointBusy, match="stayed open"):
                await write_checkpoint(engine, key, wait=0.3)
        written = await write_checkpoint(engine, key)
        assert written is not None and written.event_count == 10
        report = await verify_database(engine, public(key))
        assert report.ok and report.covered_events == 10, report.findings
    finally:
        await engine.dispose()


async def test_the_service_loop_signs_new_events_periodically(
    log: EventLog, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from shared.application.audit.writer import Checkpointer

    key_file = tmp_path / "keys" / "audit-ed25519.pem"
    stop = asyncio.Event()
    loop = asyncio.create_task(Checkpointer(log.engine, key_file, 0.05).run(stop))
    try:
        await fill(log, cases=2)

        async def covering(count: int) -> Report | None:
            report = await verify(log, key)
            return report if report.covered_events == count else None

        await eventually(lambda: covering(8), what="a checkpoint over 8 events")
        await fill(log, cases=1)
        report = await eventually(lambda: covering(12), what="a checkpoint over 12 events")
    finally:
        stop.set()
        await loop
    assert report.ok and report.covered_events == 12 and report.checkpoints >= 2
