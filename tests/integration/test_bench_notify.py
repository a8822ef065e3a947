"""The notify delivery benchmark, small: its main coroutine end to end on SQLite, the
figures sane (the benchmark itself checks mailbox, receiver and log, and fails if not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import notify


@pytest.mark.timeout(60)
async def test_bench_notify_smoke(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}"
    args = notify.parse_args(
        ["--deliveries", "40", "--fail-rate", "0.5", "--database-url", url, "--timeout", "30"]
    )
    result = await notify.bench(args, url)
    json.dumps(result)  # what --json prints
    assert result["benchmark"] == "notify"
    assert result["config"]["database"] == "sqlite"
    assert result["deliveries"] == result["config"]["deliveries"] == 40
    assert result["config"]["email"] == result["config"]["webhook"] == 20
    assert result["channels"]["email"]["deliveries"] == 20
    assert result["channels"]["webhook"]["deliveries"] == 20
    # Half the first attempts refused (0.5 ** 40 that none is): every refusal is one more
    # attempt, and nothing else failed.
    refusals = result["first_attempts_refused"]
    assert refusals > 0
    assert result["attempts"] == result["attempts_expected"] == 40 + refusals
    refused = sum(r["first_attempt_failures"] for r in result["receivers"].values())
    assert refused == refusals
    assert result["receivers"]["email"]["duplicates"] == 0
    assert result["receivers"]["webhook"]["duplicates"] == 0
    assert result["deliveries_per_s"] > 0 and result["seconds"] > 0
    assert 0 < result["since_start_to_sent"]["p50_ms"] <= result["since_start_to_sent"]["p99_ms"]
    assert result["cpu_seconds"]["bench"] > 0
    assert result["database_ops"]["commits"] >= 40  # at least each delivery's mark_sent
