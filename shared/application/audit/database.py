"""Verifying a live database: its rows and checkpoints through the pure verifier.

A large PostgreSQL log is verified in two processes, one per core: this one reads and checks
the positions up to a checkpoint boundary near the middle, a second Python process (this
module run with ``-m``) the rest, both in the same snapshot (exported by this process's
transaction, imported by the other's); the second's segment comes back pickled through its
stdout, and the two segments are joined into the report one pass would give (see
"Segments" in ``shared.application.audit.verify``). When the join can't decide (tampering
that crosses the split), this process reads the second half itself, still in its snapshot.
SQLite, and logs too small to repay starting a process, are read in one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.application.audit.checkpoint import Checkpoint
from shared.application.audit.source import MAX_POSITION, pg_cursor_pages, stream_rows
from shared.application.audit.verify import END, Report, Segment, Verifier
from shared.application.audit.writer import load_checkpoints

assert END == MAX_POSITION
log = structlog.get_logger("caseflow.audit")

SPLIT_FROM = 200_000
"""The last position from which a PostgreSQL log is verified in two processes."""
_FIRST_SHARE = 0.56
"""This process's share of the positions: the other starts later (a new interpreter, the
checkpoints checked again) and sends its segment back."""
_ROOT = str(Path(__file__).resolve().parents[3])
"""The folder holding the ``shared`` package (the second process imports it from there)."""
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")

Progress = Callable[[int], None]


async def verify_database(
    engine: AsyncEngine,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    progress: Progress | None = None,
    split_at: int | None = None,
) -> Report:
    """Verify every event and checkpoint of the log behind ``engine``.

    ``split_at``: on PostgreSQL, the position after which a second process verifies the
    rest (default: near the middle, at a checkpoint boundary, for a log of at least
    :data:`SPLIT_FROM` positions on a machine with more than one core; 0: one process).
    """
    if engine.dialect.name == "postgresql" and split_at != 0:
        return await _verify_postgres(engine, keys, progress, split_at)
    async with engine.connect() as conn:
        checkpoints = await load_checkpoints(conn)
        await conn.rollback()
    verifier = Verifier(checkpoints, keys)
    with collector_paused():
        async for rows in stream_rows(engine):
            verifier.feed(rows)
            if progress is not None:
                progress(len(rows))
    return verifier.finish()


async def _verify_postgres(
    engine: AsyncEngine,
    keys: Mapping[str, Ed25519PublicKey],
    progress: Progress | None,
    split_at: int | None,
) -> Report:
    async with engine.connect() as conn:
        conn = await conn.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        snapshot = (await conn.exec_driver_sql("SELECT pg_export_snapshot()")).scalar_one()
        checkpoints = await load_checkpoints(conn)
        last = (
            await conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM events")
        ).scalar_one()
        split = _split_point(checkpoints, int(last)) if split_at is None else split_at
        apg = await _driver(conn)
        verifier = Verifier(checkpoints, keys)
        with collector_paused():
            if not 0 < split < last:
                await _feed(verifier, apg, 0, END, progress)
                report = verifier.finish()
            else:
                report = await _verify_in_two(
                    engine, snapshot, checkpoints, keys, verifier, apg, split, progress
                )
        await conn.rollback()
    return report


async def _verify_in_two(
    engine: AsyncEngine,
    snapshot: str,
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    verifier: Verifier,
    apg: Any,
    split: int,
    progress: Progress | None,
) -> Report:
    """Positions up to ``split`` here, the rest in a second process, joined."""
    request = {
        "url": engine.url.render_as_string(hide_password=False),
        "snapshot": snapshot,
        "after": split,
        "keys": {kid: key.public_bytes_raw() for kid, key in keys.items()},
    }
    # A fresh interpreter running this module (not multiprocessing's spawn, which would
    # re-import the caller's main module), finding this package where this one did.
    path = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        answer = asyncio.create_task(child.communicate(pickle.dumps(request)))
        await _feed(verifier, apg, 0, split, progress)
        first = verifier.segment(split)
        out, err = await answer
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        raise
    # Pickle is safe here: the bytes come from our own child process through its pipe.
    second: Segment | None = (
        pickle.loads(out) if child.returncode == 0 and out else None  # noqa: S301
    )
    if second is not None:
        if progress is not None:
            progress(second.events)
        joined = verifier.restarted().join([first, second])
        if joined is not None:
            log.info("audit_verify_joined", split=split)
            return joined
        log.info("audit_verify_rereading_second_half", split=split)
    else:
        lines = err.decode(errors="replace").strip().splitlines()
        log.warning(
            "audit_verify_second_process_failed",
            returncode=child.returncode,
            error=lines[-1] if lines else None,
        )
    # The second half's first rows depend on the history before it in a way only one pass
    # can judge (or its process failed): read it here (the verifier's state is one pass's
    # at ``split``), in the same snapshot.
    await _feed(verifier, apg, split, END, progress if second is None else None)
    return verifier.finish()


async def _feed(
    verifier: Verifier, apg: Any, after: int, upto: int, progress: Progress | None
) -> None:
    async for rows in pg_cursor_pages(apg, after, upto):
        verifier.feed(rows)
        if progress is not None:
            progress(len(rows))


def _split_point(checkpoints: Sequence[Checkpoint], last: int) -> int:
    """Where the second process starts: 0 (none) for a small log or a single core, else the
    checkpoint boundary nearest this process's share, or that share if none is near."""
    if last < SPLIT_FROM or (os.cpu_count() or 1) < 2:
        return 0
    target = round(last * _FIRST_SHARE)
    bounds = [cp.upto_position for cp in checkpoints if 0 < cp.upto_position < last]
    near = min(bounds, key=lambda b: abs(b - target), default=target)
    return near if abs(near - target) <= last // 50 else target


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, in ``conn``'s transaction."""
    raw = await conn.get_raw_connection()
    apg = raw.driver_connection
    assert apg is not None
    return apg


def _verify_segment(url: str, snapshot: str, after: int, raw_keys: dict[str, bytes]) -> Segment:
    """In the second process: verify the positions after ``after`` in the exported snapshot."""
    from shared.adapters.db import create_engine

    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    keys = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in raw_keys.items()}

    async def run() -> Segment:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                await conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                verifier = Verifier(await load_checkpoints(conn), keys, after=after)
                with collector_paused():
                    await _feed(verifier, await _driver(conn), after, END, None)
                await conn.rollback()
                return verifier.segment(END)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _serve() -> None:
    """The second process: a pickled request on stdin, the pickled segment on stdout."""
    request = pickle.load(sys.stdin.buffer)  # noqa: S301 (from the parent process)
    segment = _verify_segment(
        request["url"], request["snapshot"], request["after"], request["keys"]
    )
    sys.stdout.buffer.write(pickle.dumps(segment, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: a verification allocates millions of short
    lived rows without cycles, and each collection would walk every live one (it halves
    the throughput). Reference counting still frees them at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


if __name__ == "__main__":
    _serve()
