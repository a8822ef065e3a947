"""Every benchmark, tiny, as its user runs it: ``python -m bench.<name> … --json``, its
figures read from the last line and checked for sense: every count what was asked for,
nothing lost, every rate and time above zero (issue 13: benchmarks can't rot).
``bench.notify`` and ``bench.faults`` have files of their own."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bench import log as bench_log
from tests.integration.bench_support import ROOT, latencies, positive, run_bench


def test_every_benchmark_runs_in_the_suite() -> None:
    """Each ``bench/<name>.py`` that runs as a program is run by a test through
    ``run_bench("<name>", …)``: a new benchmark comes with its tiny run."""
    programs = {
        path.stem
        for path in (ROOT / "bench").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
    }
    assert {"log", "e2e", "notify", "projections", "audit", "faults", "stacks"} <= programs
    run = re.compile(r"run_bench\(\s*\"(\w+)\"")
    tested = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in run.findall(path.read_text(encoding="utf-8"))
    }
    assert programs <= tested, f"benchmarks no test runs: {sorted(programs - tested)}"


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_bench_log_appends_reads_and_loads_on_both_databases(tmp_path: Path) -> None:
    run = run_bench(
        "log",
        *("--appends", "100", "--writers", "1,4", "--case-reads", "50", "--page-size", "200"),
        folder=tmp_path,
        timeout=90,
    )
    figures = run.figures
    assert figures["benchmark"] == "log"
    assert figures["config"]["appends"] == 100 and figures["config"]["writers"] == [1, 4]
    per_append = figures["config"]["events_per_append"]
    for database in ("postgresql", "sqlite"):
        result = figures[database]
        assert result["durability"]["durable"] is True, result["durability"]
        written = 0
        for writers in ("1", "4"):
            phase = result["append"][writers]
            assert phase["writers"] == int(writers)
            assert phase["appends"] == 100 and phase["events"] == 100 * per_append, phase
            positive(phase, "seconds", "appends_per_s", "events_per_s")
            latencies(phase["append_latency"], 100)
            written += phase["events"]
        # Read-all pages through everything: the warm-up's appends and the phases'.
        read_all = result["read_all"]
        assert read_all["events"] == written + bench_log.WARMUP_APPENDS * per_append, read_all
        assert read_all["pages"] == math.ceil(read_all["events"] / 200), read_all
        positive(read_all, "events_per_s")
        assert result["read_case"]["events_per_case"] == per_append
        latencies(result["read_case"], 50)


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_bench_projections_rebuilds_a_tiny_log(tmp_path: Path) -> None:
    run = run_bench(
        "projections",
        *("--events", "3000", "--template-cases", "20", "--batch-size", "500"),
        folder=tmp_path,
        timeout=90,
    )
    figures = run.figures
    assert figures["benchmark"] == "projections"
    assert figures["backend"] == "postgresql"
    assert figures["template_cases"] > 0
    assert figures["events"] >= 3000, figures
    # The rebuild reads every event loaded, and the delegation instruments published first.
    assert figures["rebuild_events"] >= figures["events"], figures
    positive(figures, "read_events_per_s", "fold_events_per_s", "rebuild_events_per_s")
    positive(figures, "rebuild_seconds")


@pytest.mark.postgres
@pytest.mark.nats
@pytest.mark.timeout(180)
def test_bench_audit_checkpoints_rebuilds_verifies_and_reads_timelines(tmp_path: Path) -> None:
    run = run_bench(
        "audit",
        *("--events", "5000", "--template-days", "1", "--timelines", "20"),
        folder=tmp_path,
        timeout=150,
    )
    figures = run.figures
    assert figures["benchmark"] == "audit"
    assert figures["template"]["cases"] > 0 and figures["template"]["events"] > 0
    written = figures["fill"]["events"]
    assert written >= 5000, figures["fill"]
    assert figures["checkpoint"]["checkpoints"] >= 1
    # Every phase went over the whole log, and verify found it sound (or the run exits 1).
    assert figures["rebuild"]["events"] == written, figures["rebuild"]
    assert figures["verify"]["events"] == written, figures["verify"]
    assert figures["rebuild"]["projections"], figures["rebuild"]
    for phase in ("checkpoint", "rebuild", "verify", "timeline"):
        positive(figures[phase], "wall_s")
        assert figures[phase]["cpu_s"]["caseflow"] > 0, figures[phase]
    for phase in ("checkpoint", "rebuild", "verify"):
        positive(figures[phase], "events_per_s")
    latencies(figures["timeline"], 20)
    assert set(figures["met"]) == {"rebuild", "verify", "timeline"}
    assert all(isinstance(met, bool) for met in figures["met"].values()), figures["met"]


@pytest.mark.postgres
@pytest.mark.nats
@pytest.mark.timeout(240)
def test_bench_e2e_takes_every_case_through_and_sees_its_notice(tmp_path: Path) -> None:
    run = run_bench(
        "e2e",
        *("--warm-up", "5", "--cases", "5", "--concurrency", "2"),
        *("--rate", "1", "--intake-rate", "2", "--rate-seconds", "2", "--timeout", "60"),
        *("--log-level", "warning"),
        folder=tmp_path,
        timeout=200,
    )
    figures = run.figures
    assert figures["benchmark"] == "e2e"
    # The warm-up's flows were checked (the bench stops otherwise): events in order, the
    # acceptance notice once, every notice after its event and recorded once.
    assert figures["flows_checked"] == 5
    offered = {"intake": 4, "workflow": 2}  # --intake-rate and --rate for --rate-seconds
    for scenario, workflow in (("intake", False), ("workflow", True)):
        result = figures[scenario]
        throughput, fixed = result["throughput"], result["fixed_rate"]
        for phase, cases in ((throughput, 5), (fixed, offered[scenario])):
            assert phase["cases"] == cases, (scenario, phase)
            assert phase["notified"] == cases and phase["missing_notices"] == 0, (scenario, phase)
            assert phase["failed"] == 0, (scenario, phase)
            latencies(phase["notice_latency"], cases)
            latencies(phase["notice_latency_to_recorded"], cases)
            for action, summary in phase["http_latency"].items():
                latencies(summary, cases)
                assert workflow or action == "submit", (scenario, action)
            if workflow:
                assert phase["delivered"] == cases, phase
                latencies(phase["lifecycle_latency"], cases)
                assert set(phase["http_latency"]) == set(figures["config"]["steps"])
        positive(throughput, "seconds", "cases_per_s", "requests_per_s")
        # every service went to the database for these cases, intake for each one
        statements = throughput["statements_per_case"]
        assert set(statements["by_service"]) == {"intake", "processing", "notify"}, statements
        assert all(n > 0 for n in statements["by_service"].values()), statements
        assert statements["by_service"]["intake"] >= 2, statements  # a transaction at least
        assert statements["by_kind"]["insert"] > 0 and statements["by_kind"]["commit"] > 0
        for stage in fixed["stages"].values():
            latencies(stage, offered[scenario])
    # Every case was told more than its acceptance (the receipt at least), and no
    # acceptance notice came twice or for a case the bench did not submit.
    cases = 5 + sum(5 + n for n in offered.values())  # the warm-up, then each scenario's
    assert figures["other_notifications"] >= cases, figures["other_notifications"]
    assert figures["unexpected_notifications"] == 0


def test_bench_stacks_summarises_raw_py_spy_stacks(tmp_path: Path) -> None:
    """``bench.stacks`` on a folder as ``bench.e2e --profile`` leaves it: shares by the
    package running and by caseflow's functions on the stack, counted as py-spy wrote."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    serve = "serve (shared/cli/main.py:66)"
    act = "CaseService.act (shared/application/workflow/service.py:120)"
    (profiles / "processing.txt").write_text(
        f"{serve};{act};Connection.execute (sqlalchemy/engine/base.py:1494) 6\n"
        f"{serve};{act};_SelectorSocketTransport.write (asyncio/selector_events.py:1057) 2\n"
        f"{serve};BaseEventLoop._run_once (asyncio/base_events.py:1922) 1\n"
        " 1\n",  # py-spy caught it outside Python code
        encoding="utf-8",
    )
    run = run_bench("stacks", str(profiles), "--top", "5", folder=tmp_path, timeout=60)
    figures = run.figures["profiles"]["processing"]
    assert figures["samples"] == 10
    assert figures["by_package_percent"] == {
        "sqlalchemy": 60.0,
        "kernel: socket writes": 20.0,
        "asyncio": 10.0,
        "(no Python frame)": 10.0,
    }
    assert figures["caseflow_inclusive_percent"] == {
        "serve (shared/cli/main.py)": 90.0,
        "CaseService.act (shared/application/workflow/service.py)": 80.0,
    }
    assert "60.0%  sqlalchemy" in run.stdout
