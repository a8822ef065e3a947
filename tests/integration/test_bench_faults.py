"""The fault benchmark, small: a few cases while each part fails, PostgreSQL down for a few
seconds; every invariant it reports must hold (issue 12: nothing lost when parts fail)."""

from __future__ import annotations

import json

import pytest

from bench import faults


@pytest.mark.postgres
@pytest.mark.nats
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cluster", [False, True], ids=["nats-server", "nats-cluster"])
def test_bench_faults_small_run_keeps_every_invariant(cluster: bool) -> None:
    args = faults.parse_args(
        [
            *(["--cluster"] if cluster else []),
            "--cases",
            "12" if cluster else "20",
            "--rate",
            "1.5",
            "--pg-down-seconds",
            "3",
            "--warm-up",
            "2",
            "--stall-seconds",
            "20",
            "--settle-timeout",
            "90",
            "--log-level",
            "warning",
        ]
    )
    figures = faults.run(args)
    json.dumps(figures)  # what --json prints
    assert [f["fault"] for f in figures["faults"]] == list(faults.FAULTS)
    assert figures["cases"]["offered"] == (12 if cluster else 20)
    assert ("cluster" in figures["config"]["nats"]) is cluster
    broken = [name for name, holds in figures["invariants"].items() if not holds]
    assert not broken, (broken, {k: v for k, v in figures.items() if k != "config"})
