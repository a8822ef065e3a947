"""Verifying in segments, as two processes do on a large PostgreSQL log, gives exactly the
report of one pass — clean or tampered, wherever the log is split, also inside cases'
histories (the log's cases interleave, so every split falls inside several)."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from structlog.testing import capture_logs

from shared.adapters.eventlog import EventLog
from shared.adapters.tables.audit import audit_checkpoints
from shared.adapters.tables.eventlog import events
from shared.application.audit.checkpoint import Checkpoint
from shared.application.audit.database import verify_database
from shared.application.audit.rows import EventRow
from shared.application.audit.source import stream_rows
from shared.application.audit.verify import END, Report, Verifier, verify
from shared.application.audit.writer import load_checkpoints, write_all
from tests.integration.audit_support import Superuser, audit_key, fill, overwrite, public, rehashed

Tamper = Callable[[EventLog, list[uuid.UUID]], Awaitable[None]]


async def _modified(log: EventLog, cases: list[uuid.UUID]) -> None:
    # Version 3: its case's number is recorded by version 2 (split between them, the number
    # is known to the first segment only).
    target = (await log.read_case(cases[2]))[2]
    await Superuser(log.engine).run(
        sa.update(events)
        .where(events.c.position == target.position)
        .values(payload={**target.payload, "step": 99})
    )


async def _rehashed(log: EventLog, cases: list[uuid.UUID]) -> None:
    history = await log.read_case(cases[1])
    forged = dataclasses.replace(history[1], actor_user="someone-else")
    chain = rehashed([*history[:1], forged, *history[2:]], start=1)
    await Superuser(log.engine).run(*(overwrite(e) for e in chain[1:]))


async def _rehashed_in_the_tail(log: EventLog, cases: list[uuid.UUID]) -> None:
    history = await log.read_case(cases[-1])  # after the last checkpoint: links only
    forged = dataclasses.replace(history[1], payload={"x": 1})
    (forged,) = rehashed([history[0], forged], start=1)[1:]
    await Superuser(log.engine).run(overwrite(forged))


async def _deleted(log: EventLog, cases: list[uuid.UUID]) -> None:
    target = (await log.read_case(cases[4]))[2]
    await Superuser(log.engine).run(sa.delete(events).where(events.c.position == target.position))


async def _deleted_and_renumbered(log: EventLog, cases: list[uuid.UUID]) -> None:
    history = await log.read_case(cases[3])
    shifted = [dataclasses.replace(e, version=e.version - 1) for e in history[2:]]
    chain = rehashed([history[0], *shifted], start=1)
    await Superuser(log.engine).run(
        sa.delete(events).where(events.c.position == history[1].position),
        *(overwrite(e) for e in chain[1:]),
    )


async def _reordered(log: EventLog, cases: list[uuid.UUID]) -> None:
    a = (await log.read_case(cases[0]))[1]
    b = (await log.read_case(cases[5]))[2]
    await Superuser(log.engine).move([(a.position, b.position), (b.position, a.position)])


async def _reordered_within_a_case(log: EventLog, cases: list[uuid.UUID]) -> None:
    history = await log.read_case(cases[2])
    first, second = history[0], history[3]
    await Superuser(log.engine).move(
        [(first.position, second.position), (second.position, first.position)]
    )


async def _moved_to_the_end(log: EventLog, cases: list[uuid.UUID]) -> None:
    victim = (await log.read_case(cases[1]))[1]
    await Superuser(log.engine).move([(victim.position, 1000)])


async def _checkpoint_removed(log: EventLog, cases: list[uuid.UUID]) -> None:
    await Superuser(log.engine).run(
        sa.delete(audit_checkpoints).where(audit_checkpoints.c.seq == 2)
    )


async def _untouched(log: EventLog, cases: list[uuid.UUID]) -> None:
    return None


TAMPERING: dict[str, Tamper] = {
    "untouched": _untouched,
    "modified": _modified,
    "modified and rehashed": _rehashed,
    "rehashed after the checkpoints": _rehashed_in_the_tail,
    "deleted": _deleted,
    "deleted and renumbered": _deleted_and_renumbered,
    "reordered": _reordered,
    "reordered within a case": _reordered_within_a_case,
    "moved to the end": _moved_to_the_end,
    "checkpoint removed": _checkpoint_removed,
}


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return audit_key(tmp_path)


async def tampered_log(log: EventLog, key: Ed25519PrivateKey, tamper: Tamper) -> int:
    """6 interleaved cases signed by checkpoints of 7 events, 2 more after them, tampered:
    the last position."""
    cases = await fill(log)
    await write_all(log.engine, key, max_events=7)
    cases += await fill(log, cases=2)
    await tamper(log, cases)
    async with log.engine.connect() as conn:
        last = (await conn.execute(sa.select(sa.func.max(events.c.position)))).scalar_one()
    return int(last)


def in_segments(
    rows: Sequence[EventRow],
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    splits: Sequence[int],
) -> Report | None:
    bounds = [0, *splits, END]
    segments = []
    for after, upto in itertools.pairwise(bounds):
        verifier = Verifier(checkpoints, keys, after=after)
        verifier.feed([r for r in rows if after < r["position"] <= upto])
        segments.append(verifier.segment(upto))
    return Verifier(checkpoints, keys).join(segments)


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_segments_join_into_the_one_pass_report(
    log: EventLog, key: Ed25519PrivateKey, tampering: str
) -> None:
    await tampered_log(log, key, TAMPERING[tampering])
    rows = [row async for rows in stream_rows(log.engine) for row in rows]
    async with log.engine.connect() as conn:
        checkpoints = await load_checkpoints(conn)
    keys = public(key)
    one_pass = verify(rows, checkpoints, keys)
    assert one_pass.ok == (tampering == "untouched"), one_pass.findings

    joined = 0
    # Each row's position and the one before it (a gap after an event moved away, too).
    points = sorted({p for r in rows for p in (r["position"] - 1, r["position"])} - {0})
    splits = [[s] for s in points]
    splits += [[a, b] for a, b in itertools.combinations(points[::3], 2)]
    for split in splits:
        report = in_segments(rows, checkpoints, keys, split)
        if report is not None:
            assert report == one_pass, split
            joined += 1
        # When a segment can't be joined, the first verifier goes on in one pass.
        verifier = Verifier(checkpoints, keys)
        verifier.feed([r for r in rows if r["position"] <= split[0]])
        verifier.segment(split[0])
        verifier.feed([r for r in rows if r["position"] > split[0]])
        assert verifier.finish() == one_pass, split
    if tampering == "untouched":
        assert joined == len(splits)
    else:
        assert joined > 0  # tampering within a segment needs no second pass


@pytest.mark.parametrize("tampering", ["untouched", "modified", "modified and rehashed"])
async def test_the_database_is_verified_in_two_processes_as_in_one(
    log: EventLog, key: Ed25519PrivateKey, tampering: str
) -> None:
    last = await tampered_log(log, key, TAMPERING[tampering])
    keys = public(key)
    one_process = await verify_database(log.engine, keys, split_at=0)
    assert one_process.events == 32
    postgres = log.engine.dialect.name == "postgresql"
    # 14: inside checkpoint 2 and inside every case's history; 21: a checkpoint boundary.
    for split in (14, 21, last - 1):
        with capture_logs() as logs:
            report = await verify_database(log.engine, keys, split_at=split)
        assert report == one_process
        paths = {e["event"] for e in logs}
        if not postgres:
            assert paths == set()  # SQLite: one pass
        elif tampering == "modified and rehashed" and split == 14:
            # Case 1's version 3 (position 14) is re-linked to the forged version 2:
            # only a pass over both halves can say so.
            assert paths == {"audit_verify_rereading_second_half"}
        else:
            assert paths == {"audit_verify_joined"}
