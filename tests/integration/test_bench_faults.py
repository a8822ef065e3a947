"""The fault benchmark, small, as its user runs it (``python -m bench.faults … --json``): a
few cases while each part fails, PostgreSQL down for a few seconds and notify's lease
short; every invariant it reports must hold, and it exits 0 (issue 12: nothing lost when
parts fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults
from tests.integration.bench_support import run_bench


@pytest.mark.postgres
@pytest.mark.nats
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cluster", [False, True], ids=["nats-server", "nats-cluster"])
def test_bench_faults_small_run_keeps_every_invariant(cluster: bool, tmp_path: Path) -> None:
    cases = 12 if cluster else 20
    run = run_bench(
        "faults",
        *(["--cluster"] if cluster else []),
        *("--cases", str(cases), "--rate", "1.5", "--pg-down-seconds", "3", "--warm-up", "2"),
        *("--stall-seconds", "20", "--settle-timeout", "90", "--log-level", "warning"),
        # A killed notify's claims are sent again after 3 s, not its default 15 s.
        *("--notify-lease-seconds", "3"),
        folder=tmp_path,
        timeout=270,
        expect_status=None,  # 1 when an invariant is broken: the figures say which
    )
    figures = run.figures
    assert [f["fault"] for f in figures["faults"]] == list(faults.FAULTS)
    assert figures["cases"]["offered"] == cases
    assert figures["config"]["notify_lease_seconds"] == 3
    assert ("cluster" in figures["config"]["nats"]) is cluster
    broken = [name for name, holds in figures["invariants"].items() if not holds]
    assert not broken, (broken, {k: v for k, v in figures.items() if k != "config"})
    assert run.returncode == 0, run.tail()
