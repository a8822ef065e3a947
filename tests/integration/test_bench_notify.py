"""The notify delivery benchmark, small, as its user runs it (``python -m bench.notify …
--json``) on SQLite and on an embedded PostgreSQL: the figures sane (the benchmark itself
checks mailbox, receiver and log, and fails if not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.bench_support import latencies, positive, run_bench


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_bench_notify_smoke(database: str, tmp_path: Path) -> None:
    where = ["--postgres"] if database == "postgresql" else []
    run = run_bench(
        "notify",
        *where,
        *("--deliveries", "40", "--fail-rate", "0.5", "--timeout", "30"),
        folder=tmp_path,
        timeout=75,
    )
    result = run.figures
    assert result["benchmark"] == "notify"
    assert result["config"]["database"] == database
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
    positive(result, "deliveries_per_s", "seconds")
    latencies(result["since_start_to_sent"], 40)
    assert result["cpu_seconds"]["bench"] > 0
    assert result["database_ops"]["commits"] >= 40  # at least each delivery's mark_sent
