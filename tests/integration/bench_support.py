"""Running a benchmark as its user does: ``python -m bench.<name> … --json`` in a process of
its own, from the repository, its figures read from the last line of its output (issue 13:
benchmarks can't rot)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shared.devtools import waiting

ROOT = Path(__file__).resolve().parents[2]
MARK = "CASEFLOW_TEST_BENCH_RUN"
"""An environment variable naming the run, which the processes the benchmark starts
inherit (some start sessions of their own): how the processes it left are found."""


@dataclass
class BenchRun:
    """One finished run: its figures, exit status, output and wall time."""

    figures: dict[str, Any]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def tail(self, chars: int = 4000) -> str:
        """The end of what it printed, for a failing assertion's message."""
        return f"stdout:\n{self.stdout[-chars:]}\nstderr:\n{self.stderr[-chars:]}"


def run_bench(
    name: str, *args: str, folder: Path, timeout: float, expect_status: int | None = 0
) -> BenchRun:
    """``python -m bench.<name> *args --json`` until it exits (its output kept in
    ``folder``); its figures are the JSON object on the last line of its standard output.

    It runs in a session of its own: if it outlives ``timeout`` (or the test is
    interrupted) it gets SIGINT, so that it stops what it started, and whatever it started
    that is left then is killed. A run that leaves a process behind fails, as does one that
    exits with another status than ``expect_status`` (None: any) or prints no figures.
    """
    argv = [sys.executable, "-m", f"bench.{name}", *args, "--json"]
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark}
    out_path, err_path = folder / f"bench-{name}.out", folder / f"bench-{name}.err"
    started = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            timed_out = proc.poll() is None
            if timed_out:
                _interrupt(proc)
            left = _left_behind(mark)
    seconds = time.monotonic() - started
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    run = BenchRun({}, proc.returncode, stdout, stderr, seconds)
    assert not timed_out, f"bench.{name} still ran after {timeout} s\n{run.tail()}"
    assert not left, f"bench.{name} left processes running: {left}\n{run.tail()}"
    if expect_status is not None:
        assert proc.returncode == expect_status, (
            f"bench.{name} exited {proc.returncode}, not {expect_status}\n{run.tail()}"
        )
    lines = stdout.strip().splitlines()
    assert lines, f"bench.{name} printed nothing\n{run.tail()}"
    try:
        figures = json.loads(lines[-1])
    except ValueError as err:
        raise AssertionError(f"bench.{name}'s last line is not JSON: {err}\n{run.tail()}") from None
    assert isinstance(figures, dict), lines[-1]
    run.figures = figures
    return run


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as its user would stop it (it then stops its servers), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _left_behind(mark: str, patience: float = 10.0) -> list[str]:
    """Processes the benchmark started (their environment holds ``mark``) still alive after
    it ended, given ``patience`` to go; they are killed, and named."""

    def marked() -> list[psutil.Process]:
        alive = []
        for proc in psutil.process_iter(["pid", "name", "status"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(MARK) == mark:
                    alive.append(proc)
        return alive

    with contextlib.suppress(waiting.WaitTimedOut):  # those still there are named below
        waiting.wait_until(
            lambda: not marked(), what="the benchmark's processes to end", timeout=patience
        )
    alive = marked()
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [f"{p.pid} {p.info['name']}" for p in alive]


def positive(figures: dict[str, Any], *keys: str) -> None:
    """Each of ``keys`` is a number above zero (a rate, a time, a count)."""
    for key in keys:
        value = figures[key]
        assert isinstance(value, int | float) and value > 0, (key, value, figures)


def latencies(summary: dict[str, Any], count: int | None = None) -> None:
    """A latency summary of ``count`` samples (any, if None), its percentiles in order."""
    if count is not None:
        assert summary["count"] == count, summary
    assert summary["count"] > 0, summary
    assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"], summary
