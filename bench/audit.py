"""Audit benchmark on a PostgreSQL log of a million events.

    python -m bench.audit                      # 1,000,000 events, embedded PostgreSQL
    python -m bench.audit --events 200000      # a smaller log
    python -m bench.audit --database-url URL   # an empty database of your own (migrated here)
    python -m bench.audit --json               # the figures as one JSON object on the last line

The log is a month of a real station's life (``caseflow demo`` through the running
services), its cases copied until the log holds ``--events`` events (``bench.audit_data``);
its longest case is grown to 50 events. Then, timed:

- *checkpoint*: signing checkpoints over the whole log (Ed25519, leaf lists stored);
- *rebuild*: ``caseflow projections rebuild`` of every read model (case lists and worklists,
  statistics, delegation usage) from an empty start: events/s (target ≥ 200,000);
- *verify*: ``caseflow audit verify`` of every hash, link and checkpoint: events/s (target
  ≥ 100,000);
- *timeline*: the 50-event case's timeline by its number (``read_timeline``, what
  ``caseflow audit case`` and the API call: resolve the number, read the case and the
  delegation register, judge every event), one at a time on one connection: p50/p99
  latency (target p99 ≤ 5 ms).

CPU seconds of this process and of PostgreSQL's processes are measured for each phase, to
say where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil

from bench import audit_data
from bench._common import latency_summary, postmaster_pid, print_json_last, rate, temporary_postgres
from shared.adapters.db import create_engine, migrate
from shared.application.audit.database import verify_database
from shared.application.audit.keys import ensure_audit_key, read_public_keys
from shared.application.audit.reading import read_timeline
from shared.application.audit.writer import write_all
from shared.domain.workflow.reference import load_reference

T = TypeVar("T")
TARGETS = {"rebuild_events_per_s": 200_000, "verify_events_per_s": 100_000, "timeline_p99_ms": 5.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: embedded)")
    parser.add_argument("--template-days", type=int, default=30, help="days of demo life copied")
    parser.add_argument("--timelines", type=int, default=1000, help="timeline reads timed")
    parser.add_argument("--json", action="store_true", help="figures as JSON on the last line")
    return parser.parse_args(argv)


class CpuMeter:
    """CPU seconds of this process and of a PostgreSQL server's processes."""

    def __init__(self, postmaster: int | None) -> None:
        self.me = psutil.Process(os.getpid())
        self.postmaster = psutil.Process(postmaster) if postmaster else None

    def _postgres(self) -> float:
        """Live server processes, plus the backends that have exited (reaped by the
        postmaster: its children's times)."""
        if self.postmaster is None:
            return 0.0
        total = 0.0
        with contextlib.suppress(psutil.Error):
            times = self.postmaster.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        for proc in self.postmaster.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def sample(self) -> tuple[float, float]:
        """Including child processes that have exited (verify's second process)."""
        times = self.me.cpu_times()
        mine = times.user + times.system + times.children_user + times.children_system
        return mine, self._postgres()

    @contextlib.contextmanager
    def phase(self, into: dict[str, Any]) -> Iterator[None]:
        me0, pg0 = self.sample()
        started = time.perf_counter()
        yield
        wall = time.perf_counter() - started
        me1, pg1 = self.sample()
        into["wall_s"] = round(wall, 3)
        into["cpu_s"] = {"caseflow": round(me1 - me0, 2), "postgresql": round(pg1 - pg0, 2)}


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def _timelines(url: str, number: str, runs: int) -> list[float]:
    reference = load_reference()
    engine = create_engine(url)
    try:
        seconds: list[float] = []
        async with engine.connect() as conn:
            for i in range(runs + 20):
                started = time.perf_counter()
                timeline = await read_timeline(conn, number, reference)
                elapsed = time.perf_counter() - started
                if i >= 20:  # warm-up: prepared statements, caches
                    seconds.append(elapsed)
            assert len(timeline.as_json()["events"]) == 50, "the timeline case must have 50 events"
        return seconds
    finally:
        await engine.dispose()


async def _with_engine(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    engine = create_engine(url)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    from shared.application.projections.rebuild import rebuild

    args = parse_args(argv)
    figures: dict[str, Any] = {
        "benchmark": "audit",
        "config": {
            "events": args.events,
            "template_days": args.template_days,
            "timelines": args.timelines,
        },
    }
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caseflow-ba-")))
        url = args.database_url
        pid = None
        if not url:
            print("starting an embedded PostgreSQL in a temporary folder…", flush=True)
            url, pgdata = stack.enter_context(temporary_postgres())
            pid = postmaster_pid(pgdata)
        migrate(url)
        meter = CpuMeter(pid)

        print(
            f"a month of station life through the services ({args.template_days} days)…", flush=True
        )
        started = time.perf_counter()
        template, long_case = audit_data.lengthened(
            audit_data.Template.of(audit_data.demo_template(days=args.template_days))
        )
        figures["template"] = {
            "events": template.events_per_copy + len(template.once),
            "cases": len(template.cases),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"writing {args.events:,} events…", flush=True)
        started = time.perf_counter()
        written = run(audit_data.fill(url, template, args.events))
        figures["fill"] = {"events": written, "seconds": round(time.perf_counter() - started, 1)}
        number = audit_data.case_number_of(template.cases[long_case])

        key_pair, _ = ensure_audit_key(tmp / "keys" / "audit-ed25519.pem")
        from shared.application.audit.keys import load_signing_key

        signing = load_signing_key(key_pair.private_path)
        print("signing checkpoints…", flush=True)
        checkpoint: dict[str, Any] = {}
        with meter.phase(checkpoint):
            written_cps = run(_with_engine(url, lambda e: write_all(e, signing)))
        checkpoint["checkpoints"] = len(written_cps)
        checkpoint["events_per_s"] = rate(written, checkpoint["wall_s"])
        figures["checkpoint"] = checkpoint

        print("rebuilding every projection…", flush=True)
        rebuilt: dict[str, Any] = {}
        with meter.phase(rebuilt):
            result = run(_with_engine(url, lambda e: rebuild(e, restart=True)))
        rebuilt["projections"] = list(result.names)
        rebuilt["events"] = result.events
        rebuilt["events_per_s"] = rate(result.events, rebuilt["wall_s"])
        figures["rebuild"] = rebuilt

        print("verifying the log…", flush=True)
        keys = read_public_keys(key_pair.public_path)
        verified: dict[str, Any] = {}
        with meter.phase(verified):
            report = run(_with_engine(url, lambda e: verify_database(e, keys)))
        if not report.ok:
            raise SystemExit(f"the generated log does not verify: {report.as_dict()}")
        verified["events"] = written
        verified["events_per_s"] = rate(written, verified["wall_s"])
        figures["verify"] = verified

        print(f"timeline of {number} (50 events), {args.timelines} times…", flush=True)
        timeline: dict[str, Any] = {}
        with meter.phase(timeline):
            seconds = run(_timelines(url, number, args.timelines))
        timeline.update(latency_summary(seconds))
        timeline["case"] = number
        figures["timeline"] = timeline

    figures["targets"] = TARGETS
    figures["met"] = {
        "rebuild": figures["rebuild"]["events_per_s"] >= TARGETS["rebuild_events_per_s"],
        "verify": figures["verify"]["events_per_s"] >= TARGETS["verify_events_per_s"],
        "timeline": figures["timeline"]["p99_ms"] <= TARGETS["timeline_p99_ms"],
    }
    print_report(figures)
    if args.json:
        print_json_last(figures)


def print_report(figures: dict[str, Any]) -> None:
    fill, template = figures["fill"], figures["template"]
    print(f"log: {fill['events']:,} events ({template['cases']} template cases copied)")
    for phase in ("checkpoint", "rebuild", "verify"):
        f = figures[phase]
        print(
            f"{phase:<10} {f['events_per_s']:>10,.0f} events/s  wall {f['wall_s']:.1f} s  "
            f"CPU caseflow {f['cpu_s']['caseflow']:.1f} s, "
            f"PostgreSQL {f['cpu_s']['postgresql']:.1f} s"
        )
    t = figures["timeline"]
    print(
        f"timeline   p50 {t['p50_ms']:.2f} ms  p99 {t['p99_ms']:.2f} ms  "
        f"({t['count']} reads of {t['case']})"
    )
    print(
        "targets met: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in figures["met"].items())
    )


if __name__ == "__main__":
    main()
