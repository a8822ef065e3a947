"""Fault benchmark: applications at a steady rate while each part of the stack fails.

    python -m bench.faults                                   # 300 cases at 10/s, 30 s outage
    python -m bench.faults --cases 30 --rate 5 --pg-down-seconds 5
    python -m bench.faults --json                            # figures as JSON on the last line

Starts an embedded PostgreSQL, nats-server, the notification sandbox's receivers (in a
thread of this process, so that their counts can be read) and intake, processing and notify
as processes, as ``bench.e2e`` does. A webhook subscription for Xuefeng station sends every
event to the sandbox's receiver; a department system (hc_forestry's credential, as
``caseflow nats credentials`` issues it) answers forwarded cases over the bus.

Load: ``--cases`` applications at ``--rate`` per second through intake's HTTP API, each
driven to ``closed`` over processing's: a station-completed item (review, the head's
approval, delivery, closing) or, one in ``--forwarded-every``, an item forwarded to the
forestry bureau (review, forward, the bureau's answer on the bus, delivery, closing).
Every request carries its Idempotency-Key and is retried with it on 503 and on connection
errors, as a client would; a 201 from intake counts as acknowledged.

Faults, one after the other while the load runs (each after the stack settled from the one
before): SIGKILL intake, processing, notify (each started again at once, as a supervisor
would); SIGKILL nats-server and start it again; restart PostgreSQL; stop PostgreSQL for
``--pg-down-seconds`` and start it again. *Settled* after a fault: every case started
before the part came back has finished, and every notice its events call for (the notify
rules, and the webhook subscription) was sent.

Measured after the load, once settled: cases acknowledged against cases in the log,
duplicate cases, cases in their expected state, notices expected/planned/sent (lost ones),
duplicate notices planned (outbox rows per event, recipient and channel), arrivals and
duplicate arrivals at the receivers (by Message-ID, SessionContext, webhook-id), events
the relay has not published, dead letters per consumer (CASEFLOW_DLQ), the time each fault
took to settle, and ``caseflow audit verify``. Exit status 1 if any invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import sqlalchemy as sa
import stamina
from rich.console import Console
from rich.table import Table

from bench._common import EmbeddedPostgres, print_json_last, temporary_postgres_server
from bench._stack import ServiceProcess, nats_credentials, publish_delegations, running_services
from bench.e2e import STATION, staff_headers
from bench.notify import quiet_receivers
from services.notify.model import Recipient
from services.notify.planning import NOT_NOTIFIED
from services.notify.rules import Planner
from services.notify.sandbox import Sandbox
from services.notify.schema import deliveries
from shared.adapters.auth import Role, ensure_key_pair
from shared.adapters.bus.access import OPERATOR
from shared.adapters.bus.client import connect
from shared.adapters.bus.credentials import CredentialStore, authorities
from shared.adapters.bus.streams import DEPT_STREAM, DLQ_STREAM
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import EventLog, LogCursor
from shared.adapters.tables.eventlog import events as events_table
from shared.adapters.tables.eventlog import relay_checkpoints
from shared.application.audit.keys import ensure_audit_key
from shared.devtools import servers as devservers
from shared.domain.catalogue import load_catalogue
from shared.domain.events import StoredEvent
from shared.domain.workflow.reference import load_reference
from shared.domain.workflow.state import fold

STATION_ITEM = "pension_enrolment"
FORWARDED_ITEM = "logging_permit"
DEPARTMENT = "hc_forestry"
OFFICER = "liu.forestry"
EXPECTED_STATUS = "closed"
RETRIED_STATUSES = frozenset({502, 503, 504})
"""Answers a client waits out (503: a dependency is down, nothing was saved)."""
APPLICANT = {
    "name": "王秀英",
    "phone": "13812345678",
    "id_number": "11010519491231002X",
    "email": "wang.xiuying@example.cn",
}
SERVICE_FAULTS = ("intake", "processing", "notify")
FAULTS = (
    *(f"kill {name}" for name in SERVICE_FAULTS),
    "kill nats-server",
    "restart postgresql",
    "postgresql down",
)


class Unavailable(Exception):
    """The service answered 503 (or 502/504): try again later with the same key."""


# --------------------------------------------------------------------------- the parts


class NatsServer:
    """nats-server on a fixed port and store folder, so that it can be killed and started
    again where the services reconnect."""

    def __init__(self, folder: Path, credentials: CredentialStore) -> None:
        self.port = devservers.free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.folder = folder
        self.config = credentials.config_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (JetStream on, its store kept across restarts)."""
        self.proc = devservers.start_nats(
            self.port, self.folder / "jetstream", config=self.config, log_file=self.folder / "log"
        )

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers)."""
        if self.proc is not None:
            devservers.stop_process(self.proc)


class NatsClusterServer:
    """A 3-node JetStream cluster in the place of one nats-server: "kill nats-server"
    SIGKILLs one node (the first) and starts it again; clients hold every node's URL."""

    def __init__(self, folder: Path, credentials: CredentialStore) -> None:
        self.cluster = devservers.NatsCluster(folder, config=credentials.config_path)
        self.url = self.cluster.url

    def start(self) -> None:
        """Start every node that is not running, and wait until each is healthy."""
        self.cluster.start_all()

    def kill(self) -> None:
        """SIGKILL one node; the others keep the streams (three copies)."""
        self.cluster.kill(self.cluster.nodes[0])

    def stop(self) -> None:
        self.cluster.stop()


class Receivers:
    """The sandbox's mailbox, SMS gateway and webhook receiver, in an event loop of their own
    in a thread: the bench's loop and its blocking fault steps never hold them up (a late
    answer would make notify send again), and their counts can be read here."""

    def __init__(self) -> None:
        self.sandbox = Sandbox()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receivers", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            async with self.sandbox:
                self._ready.set()
                await self._stop.wait()

        self._loop.run_until_complete(serve())

    def start(self) -> dict[str, str]:
        """Start them (quiet: a log line per message would drown the report); the
        environment that points notify at them."""
        quiet_receivers()
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the sandbox's receivers did not start")
        return self.sandbox.environment()

    def stop(self) -> None:
        """Stop them."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def report(self) -> dict[str, dict[str, int]]:
        """Distinct messages and repeats of one, per channel."""
        box, sms, hooks = self.sandbox.mailbox, self.sandbox.sms, self.sandbox.webhooks
        return {
            "email": {"arrived": len(box.messages), "duplicates": box.duplicates},
            "sms": {"arrived": len(sms.received), "duplicates": sms.duplicates},
            "webhook": {
                "arrived": len(hooks.received),
                "duplicates": hooks.duplicates,
                "rejected": hooks.rejected,
            },
        }

    def repeated(self) -> list[str]:
        """The delivery id of every repeat at a receiver (the channels' idempotency keys
        are the delivery id: ``<id@caseflow>``, the SessionContext, the webhook-id)."""
        box, sms, hooks = self.sandbox.mailbox, self.sandbox.sms, self.sandbox.webhooks
        keys = [*box.repeated, *sms.repeated, *hooks.repeated]
        return [key.strip("<>").removesuffix("@caseflow") for key in keys]


@dataclass
class Stack:
    """Everything the faults act on."""

    postgres: EmbeddedPostgres
    nats: NatsServer | NatsClusterServer
    services: dict[str, ServiceProcess]
    receivers: Receivers
    credentials: CredentialStore
    department: dict[str, Any]
    headers: dict[Role, dict[str, str]]
    audit_key: Path


# --------------------------------------------------------------------------- the load


@dataclass
class CaseRun:
    """One application as its client saw it."""

    n: int
    forwarded: bool
    started: float
    case_id: str | None = None
    acknowledged: bool = False
    finished: float | None = None
    failure: str | None = None


@dataclass
class Load:
    """The clients: every case's run and how often a request was tried again."""

    run_id: str
    intake: httpx.AsyncClient
    processing: httpx.AsyncClient
    headers: dict[Role, dict[str, str]]
    patience: float
    runs: list[CaseRun] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    requests: dict[int, float] = field(default_factory=dict)
    """When each request still unanswered (or being retried) was first sent."""
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def waiting_since_before(self, moment: float) -> int:
        """Requests first sent before ``moment`` and still not answered."""
        return sum(sent < moment for sent in self.requests.values())

    def correlation(self, n: int) -> str:
        """The X-Correlation-ID of every request for case ``n``: its events carry it."""
        return f"{self.run_id}-{n}"

    async def post(
        self, client: httpx.AsyncClient, path: str, body: Any, role: Role, key: str, n: int
    ) -> httpx.Response:
        """POST with an Idempotency-Key, retried with the same key while the service is
        unreachable or answers 503 (for up to ``patience`` seconds)."""
        headers = {
            **self.headers[role],
            "Idempotency-Key": key,
            "X-Correlation-ID": self.correlation(n),
        }
        content = orjson.dumps(body)
        request = next(self._ids)
        self.requests[request] = time.monotonic()
        try:
            return await self._post(client, path, content, headers)
        finally:
            del self.requests[request]

    async def _post(
        self, client: httpx.AsyncClient, path: str, content: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        async for attempt in stamina.retry_context(
            on=(httpx.TransportError, Unavailable),
            attempts=None,
            timeout=self.patience,
            wait_initial=0.2,
            wait_max=2.0,
            wait_jitter=0.5,
        ):
            with attempt:
                if attempt.num > 1:
                    self.retries[path.rsplit("/", 1)[-1]] += 1
                answer = await client.post(path, content=content, headers=headers, timeout=30)
                if answer.status_code in RETRIED_STATUSES:
                    raise Unavailable(answer.status_code)
        return answer

    async def status(self, case_id: str) -> str | None:
        """The case's status as processing shows it (None while it can't be read)."""
        with contextlib.suppress(httpx.TransportError):
            answer = await self.processing.get(
                f"/cases/{case_id}", headers=self.headers[Role.reviewer], timeout=10
            )
            if answer.status_code == 200:
                return str(answer.json()["status"])
        return None

    async def run_case(self, run: CaseRun) -> None:
        """Apply, then take the case through its steps to closed."""
        try:
            await self._run_case(run)
        except Exception as err:  # a request that was never answered in time
            run.failure = f"{type(err).__name__}: {str(err)[:200]}"
        run.finished = time.monotonic()

    async def _run_case(self, run: CaseRun) -> None:
        key = f"{self.run_id}-{run.n}"
        item = CATALOGUE.get(FORWARDED_ITEM if run.forwarded else STATION_ITEM)
        application = {
            "item_code": item.code,
            "applicant": APPLICANT,
            "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
            "notify_by": ["sms", "email"],
        }
        answer = await self.post(self.intake, "/cases", application, Role.window_clerk, key, run.n)
        if answer.status_code != 201:
            run.failure = f"submit: HTTP {answer.status_code} {answer.text[:200]}"
            return
        run.acknowledged = True
        run.case_id = case_id = str(answer.json()["case_id"])
        review: list[tuple[str, Role, dict[str, Any]]] = [
            ("start_review", Role.reviewer, {}),
            ("complete_review", Role.reviewer, {"recommendation": "approve", "opinion": "齐全"}),
        ]
        if run.forwarded:
            steps = [*review, ("forward", Role.reviewer, {})]
        else:
            steps = [*review, ("approve", Role.station_head, {})]
        ending = [
            ("deliver", Role.window_clerk, {"method": "in_person"}),
            ("close", Role.window_clerk, {}),
        ]
        for action, role, body in steps:
            if not await self._act(run, case_id, action, role, body, key):
                return
        if run.forwarded and not await self._wait_for_answer(run, case_id):
            return
        for action, role, body in ending:
            if not await self._act(run, case_id, action, role, body, key):
                return

    async def _act(
        self, run: CaseRun, case_id: str, action: str, role: Role, body: Any, key: str
    ) -> bool:
        path = f"/cases/{case_id}/actions/{action}"
        answer = await self.post(self.processing, path, body, role, f"{key}-{action}", run.n)
        if answer.status_code != 200:
            run.failure = f"{action}: HTTP {answer.status_code} {answer.text[:200]}"
            return False
        return True

    async def _wait_for_answer(self, run: CaseRun, case_id: str) -> bool:
        """Until the department's approval is on the case (it comes over the bus)."""
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            if await self.status(case_id) == "approved":
                return True
            await asyncio.sleep(0.5)
        run.failure = f"the department's answer did not arrive within {self.patience:g} s"
        return False


CATALOGUE = load_catalogue()


async def offer(load: Load, cases: int, rate: float, forwarded_every: int) -> None:
    """``cases`` applications at ``rate`` per second (open loop), each run to its end."""
    tasks = []
    start = time.monotonic()
    for n in range(cases):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        forwarded = forwarded_every > 0 and n % forwarded_every == forwarded_every - 1
        run = CaseRun(n, forwarded, time.monotonic())
        load.runs.append(run)
        tasks.append(asyncio.create_task(load.run_case(run)))
    await asyncio.gather(*tasks)


async def _ignore(err: Exception) -> None:
    """nats-py's error callback: the bench restarts NATS on purpose."""


async def department(file: Mapping[str, Any], stop: asyncio.Event) -> None:
    """The forestry bureau's system: takes each forwarded case from its durable on the
    department stream and approves it on its answer subject (Nats-Msg-Id per case: a
    repeat is dropped by JetStream), acknowledging the request only after the answer was."""
    nc = await nats.connect(
        list(file["servers"]),
        nkeys_seed_str=file["seed"],
        inbox_prefix=file["inbox_prefix"],
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_ignore,  # NATS restarts on purpose here: no traceback for each retry
    )
    js = nc.jetstream()
    sub = None
    try:
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await js.pull_subscribe_bind(file["durable"], stream=DEPT_STREAM)
                msgs = await sub.fetch(10, timeout=1)
            except TimeoutError:
                continue
            except Exception:  # NATS restarting, the durable not made yet: again shortly
                sub = None
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                case_id = json.loads(msg.data)["case_id"]
                answer = {
                    "case_id": case_id,
                    "outcome": "approve",
                    "officer": OFFICER,
                    "decision_number": "韩林采字〔2026〕88号",
                }
                with contextlib.suppress(Exception):  # unacknowledged: it comes again
                    await js.publish(
                        file["answer_subject"],
                        orjson.dumps(answer),
                        headers={"Nats-Msg-Id": f"answer-{case_id}"},
                        timeout=5,
                    )
                    await msg.ack()
    finally:
        await nc.close()


# --------------------------------------------------------------------------- the log


class Watch:
    """Follows the log as an auditor would: the bench's cases (by the correlation id of
    their CaseReceived), each event's expected deliveries (notify's rules, and one webhook
    per event for the subscription), and the outbox."""

    def __init__(self, database_url: str, run_id: str, subscription_id: uuid.UUID) -> None:
        self.engine = create_engine(database_url)
        self.log = EventLog(self.engine)
        self.prefix = f"{run_id}-"
        self.webhook = Recipient(audience=f"webhook:{subscription_id}", address="", masked="")
        self.planner = Planner.load()
        self.workflows = load_reference().workflows
        self.cursor = LogCursor(0, 0)
        self.histories: dict[uuid.UUID, list[StoredEvent]] = {}
        self.cases_of: dict[str, set[uuid.UUID]] = {}
        """Case ids by correlation id (more than one: a duplicate case)."""
        self.expected: dict[uuid.UUID, set[tuple[uuid.UUID, str, str]]] = {}
        """Expected deliveries by case: (event id, channel, audience), as the outbox keys
        them (one row per event, recipient and channel)."""
        self.events_seen = 0
        self.placed: list[tuple[float, tuple[int, int]]] = []
        """Every event's recorded_at (epoch seconds) and place in the log, in log order."""
        self.expected_at: list[tuple[float, tuple[uuid.UUID, str, str]]] = []
        """Every expected delivery with its event's recorded_at."""

    async def catch_up(self) -> None:
        """Read what the log gained since the last call."""
        while events := await self.log.read_all(self.cursor, limit=1000):
            for event in events:
                self._take(event)
            self.cursor = LogCursor.after(events[-1])
            self.events_seen += len(events)

    def _take(self, event: StoredEvent) -> None:
        recorded = event.recorded_at.timestamp()
        self.placed.append((recorded, (event.tx_id, event.position)))
        correlation = event.correlation_id or ""
        if event.event_type == "CaseReceived" and correlation.startswith(self.prefix):
            self.cases_of.setdefault(correlation, set()).add(event.case_id)
            self.histories[event.case_id] = []
            self.expected[event.case_id] = set()
        history = self.histories.get(event.case_id)
        if history is None:
            return
        history.append(event)
        if event.event_type in NOT_NOTIFIED:
            return
        notices = [(n.channel, n.recipient) for n in self.planner.plan(event, history)]
        for channel, recipient in [*notices, ("webhook", self.webhook)]:
            key = (event.event_id, channel, recipient.audience)
            self.expected[event.case_id].add(key)
            self.expected_at.append((recorded, key))

    def status(self, case_id: uuid.UUID) -> str:
        """The case's status after every event read so far."""
        return fold(self.histories[case_id], self.workflows).status

    async def outbox(self) -> list[sa.Row[Any]]:
        """Every delivery planned: id, event, channel, audience, status."""
        d = deliveries.c
        query = sa.select(d.delivery_id, d.event_id, d.case_id, d.channel, d.audience, d.status)
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))

    async def in_hand(self) -> set[str]:
        """Deliveries claimed and not finished: right after notify was killed, those the
        dead process had in hand (being sent, or sent and being recorded)."""
        d = deliveries.c
        query = sa.select(d.delivery_id).where(d.status == "pending", d.lease_owner.is_not(None))
        async with self.engine.connect() as conn:
            return {str(i) for i in (await conn.execute(query)).scalars()}

    async def checkpoint(self) -> tuple[int, int]:
        """The relay's checkpoint: it published every event up to there."""
        cp = relay_checkpoints.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(cp.tx_id, cp.position))).first()
        return (0, 0) if row is None else (int(row.tx_id), int(row.position))

    async def unpublished(self) -> int:
        """Events after the relay's checkpoint."""
        after = await self.checkpoint()
        e = events_table.c
        async with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                sa.tuple_(e.tx_id, e.position) > sa.tuple_(*map(sa.literal, after))
            )
            return int((await conn.execute(query)).scalar_one())


# --------------------------------------------------------------------------- settling


class Monitor:
    """Reads the log, the outbox and the relay's checkpoint every half second (one reader
    for every wait on the stack to settle)."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.send_record_window: set[str] = set()
        """Deliveries a killed notify had in hand (see ``Watch.in_hand``)."""
        self.sent: set[tuple[uuid.UUID, str, str]] = set()
        self.checkpoint = (0, 0)
        self.problem: str | None = "not read yet"
        """Why the last round could not read the database, if it could not."""
        self.rounds = 0
        self._round = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.watch.catch_up()
                rows = await self.watch.outbox()
                self.sent = {
                    (r.event_id, r.channel, r.audience) for r in rows if r.status == "sent"
                }
                self.checkpoint = await self.watch.checkpoint()
                self.problem = None
            except Exception as err:  # the database is away: the next round tries again
                self.problem = f"the log can't be read ({type(err).__name__})"
            async with self._round:
                self.rounds += 1
                self._round.notify_all()
            await asyncio.sleep(0.5)

    async def next_round(self) -> None:
        """Until the next round is done."""
        async with self._round:
            seen = self.rounds
            await self._round.wait_for(lambda: self.rounds > seen)

    def backlog(self, before: float) -> tuple[int, int]:
        """Events recorded before ``before`` (epoch seconds) that the relay has not
        published, and notices they call for that were not sent."""
        unpublished = sum(
            at <= before and place > self.checkpoint for at, place in self.watch.placed
        )
        unsent = sum(at <= before and key not in self.sent for at, key in self.watch.expected_at)
        return unpublished, unsent


async def settle(
    monitor: Monitor,
    load: Load,
    *,
    limit: float,
    stall: float,
    everything: bool = False,
) -> tuple[float | None, str]:
    """Wait until the backlog of now is worked off: every request sent by now answered,
    every event recorded by now published and the notices it calls for sent
    (``everything``: every case finished too). Seconds it took, or None and why not
    (``limit`` passed, or nothing moved for ``stall`` seconds)."""
    began, now_wall = time.monotonic(), time.time()
    seen: tuple[int, ...] = ()
    moved = began
    while True:
        await monitor.next_round()
        waiting = load.waiting_since_before(began)
        if everything:
            waiting += sum(r.finished is None for r in load.runs)
            now_wall = time.time()
        unpublished, unsent = monitor.backlog(now_wall)
        why = monitor.problem or (
            f"{waiting} requests unanswered, {unpublished} events unpublished,"
            f" {unsent} notices unsent"
        )
        if monitor.problem is None and waiting == unpublished == unsent == 0:
            return round(time.monotonic() - began, 1), "settled"
        now = time.monotonic()
        state = (waiting, unpublished, unsent, len(monitor.sent), monitor.watch.events_seen)
        if state != seen:
            seen, moved = state, now
        if now - began > limit:
            return None, f"not settled after {limit:g} s: {why}"
        if now - moved > stall:
            return None, f"nothing moved for {stall:g} s: {why}"


@dataclass
class FaultResult:
    """One fault: how long the part was away, and how long the stack took to settle."""

    fault: str
    at_s: float
    """Since the load began."""
    seconds: float
    """From the fault until the part was back (answering, accepting connections)."""
    cases_in_flight: int
    settled_after_s: float | None
    """From the part's return until the backlog of that moment was worked off: requests
    answered, events published, their notices sent (a later fault may fall in it)."""
    state: str


async def inject(
    stack: Stack,
    monitor: Monitor,
    load: Load,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> list[FaultResult]:
    """Each fault in turn, spread over the load's planned length (each once the one
    before is over, not once the stack settled: settling is measured meanwhile)."""

    def kill_service(name: str) -> Callable[[], None]:
        def act() -> None:
            service = stack.services[name]
            service.kill()
            if name == "notify":
                # What the dead process had in hand: a repeat of one of those is the
                # send/record window (sent, not yet recorded, when it died).
                window = asyncio.run_coroutine_threadsafe(monitor.watch.in_hand(), loop)
                monitor.send_record_window |= window.result(60)
            service.start_again()

        return act

    loop = asyncio.get_running_loop()

    def kill_nats() -> None:
        stack.nats.kill()
        stack.nats.start()

    def restart_postgres() -> None:
        stack.postgres.stop()
        stack.postgres.start()

    def postgres_down() -> None:
        stack.postgres.stop()
        time.sleep(args.pg_down_seconds)
        stack.postgres.start()

    actions: dict[str, Callable[[], None]] = {
        **{f"kill {name}": kill_service(name) for name in SERVICE_FAULTS},
        "kill nats-server": kill_nats,
        "restart postgresql": restart_postgres,
        "postgresql down": postgres_down,
    }
    start = time.monotonic()
    window = args.cases / args.rate - args.warm_up - args.pg_down_seconds
    spacing = max(0.0, window) / len(FAULTS)
    settling: list[asyncio.Task[tuple[float | None, str]]] = []
    timings: list[tuple[str, float, float, int]] = []
    for i, fault in enumerate(FAULTS):
        delay = start + args.warm_up + i * spacing - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.monotonic()
        in_flight = sum(r.finished is None for r in load.runs)
        say(f"fault: {fault} ({in_flight} cases in flight)")
        await asyncio.to_thread(actions[fault])
        back = time.monotonic()
        say(f"  back after {back - began:.1f} s")
        timings.append((fault, began - start, back - began, in_flight))
        settling.append(
            asyncio.create_task(
                settle(monitor, load, limit=args.settle_timeout, stall=args.stall_seconds)
            )
        )
    results = []
    for (fault, at, seconds, in_flight), task in zip(timings, settling, strict=True):
        settled, state = await task
        say(f"{fault}: {state}" + ("" if settled is None else f" {settled} s after"))
        results.append(
            FaultResult(fault, round(at, 1), round(seconds, 1), in_flight, settled, state)
        )
    return results


# --------------------------------------------------------------------------- measuring


async def dead_letters(stack: Stack) -> dict[str, int]:
    """Messages in CASEFLOW_DLQ, per subject (``caseflow.dlq.<consumer>``)."""
    nc = await connect(
        stack.nats.url, user=OPERATOR, seed_file=stack.credentials.seed_path(OPERATOR)
    )
    try:
        info = await nc.jetstream().stream_info(DLQ_STREAM, subjects_filter=">")
        return {str(k): int(v) for k, v in (info.state.subjects or {}).items()}
    finally:
        await nc.close()


def audit_verify(database_url: str, audit_key: Path) -> dict[str, Any]:
    """``caseflow audit verify`` on the log: its exit status and findings."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.cli.main",
            "audit",
            "verify",
            "--database-url",
            database_url,
            "--key-file",
            str(audit_key),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    findings: int | None = None
    with contextlib.suppress(ValueError, IndexError, KeyError):
        findings = len(json.loads(done.stdout.strip().splitlines()[-1])["findings"])
    return {
        "ok": done.returncode == 0,
        "exit_status": done.returncode,
        "findings": findings,
        "error": None if done.returncode == 0 else (done.stderr or done.stdout)[-500:],
    }


async def measure(
    stack: Stack, watch: Watch, load: Load, database_url: str, window: set[str]
) -> dict[str, Any]:
    """Every figure of the report, and which invariants hold."""
    await watch.catch_up()
    acknowledged = {r.case_id for r in load.runs if r.acknowledged and r.case_id}
    in_log = {str(c) for ids in watch.cases_of.values() for c in ids}
    duplicate_cases = sum(len(ids) - 1 for ids in watch.cases_of.values())
    statuses = Counter(watch.status(c) for c in watch.histories)
    outbox = await watch.outbox()
    rows_by_key = Counter((r.event_id, r.channel, r.audience) for r in outbox)
    status_of = {(r.event_id, r.channel, r.audience): r.status for r in outbox}
    expected = set().union(*watch.expected.values())
    planned = expected & set(status_of)
    sent_by_channel = Counter(r.channel for r in outbox if r.status == "sent")
    receivers = stack.receivers.report()
    letters = await dead_letters(stack)
    verify = await asyncio.to_thread(audit_verify, database_url, stack.audit_key)
    failures = [f"case {r.n}: {r.failure}" for r in load.runs if r.failure]
    notices = {
        "expected": len(expected),
        "planned": len(planned),
        "sent": sum(status_of[k] == "sent" for k in planned),
        "failed": sum(status_of[k] == "failed" for k in planned),
        "pending": sum(status_of[k] == "pending" for k in planned),
        "never_planned": len(expected - planned),
        "planned_not_expected": len(set(status_of) - expected),
    }
    notices["lost"] = notices["expected"] - notices["sent"]
    figures: dict[str, Any] = {
        "cases": {
            "offered": len(load.runs),
            "acknowledged": len(acknowledged),
            "in_log": len(in_log),
            "lost": len(acknowledged - in_log),
            "in_log_not_acknowledged": len(in_log - acknowledged),
            "duplicates": duplicate_cases,
            "in_expected_state": statuses.get(EXPECTED_STATUS, 0),
            "statuses": dict(statuses),
            "client_failures": len(failures),
            "first_failures": failures[:5],
            "retried_requests": dict(load.retries),
        },
        "notices": notices,
        "duplicate_notices_planned": sum(n - 1 for n in rows_by_key.values() if n > 1),
        "receivers": {
            channel: {**counts, "sent": sent_by_channel.get(channel, 0)}
            for channel, counts in receivers.items()
        },
        "unpublished_events": await watch.unpublished(),
        "dead_letters": letters,
        "audit_verify": verify,
    }
    repeats = stack.receivers.repeated()
    explained = sum(key in window for key in repeats)
    figures["duplicate_arrivals"] = {
        "total": len(repeats),
        "in_the_send_record_window": explained,
        "unexplained": len(repeats) - explained,
        "window_deliveries": len(window),
    }
    figures["invariants"] = {
        "no case lost": figures["cases"]["lost"] == 0,
        "no duplicate case": duplicate_cases == 0,
        "every case in its expected state": (
            statuses.get(EXPECTED_STATUS, 0) == len(in_log) == len(load.runs) and not failures
        ),
        "no notice lost": notices["lost"] == 0,
        "no duplicate notice planned": figures["duplicate_notices_planned"] == 0,
        "no duplicate arrival beyond the send/record window": (
            figures["duplicate_arrivals"]["unexplained"] == 0
        ),
        "nothing unpublished": figures["unpublished_events"] == 0,
        "no dead letter": sum(letters.values()) == 0,
        "audit verify clean": verify["ok"],
    }
    return figures


# --------------------------------------------------------------------------- running


async def subscribe_webhooks(stack: Stack) -> uuid.UUID:
    """The station head subscribes the sandbox's webhook receiver to every event of the
    station; the receiver checks each signature with the secret answered."""
    async with httpx.AsyncClient(base_url=stack.services["notify"].base_url) as client:
        answer = await client.post(
            "/webhooks",
            content=orjson.dumps(
                {
                    "url": stack.receivers.sandbox.webhooks.endpoint(),
                    "event_types": ["*"],
                    "station": STATION,
                }
            ),
            headers={**stack.headers[Role.station_head], "Idempotency-Key": uuid.uuid4().hex},
            timeout=30,
        )
    if answer.status_code != 201:
        raise RuntimeError(f"webhook subscription refused: {answer.status_code} {answer.text}")
    body = answer.json()
    stack.receivers.sandbox.webhooks.add_secret(str(body["secret"]))
    return uuid.UUID(str(body["subscription_id"]))


async def bench(stack: Stack, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load, faults, settling, figures."""
    say = _say(args)
    # Clients retry a lot while parts are down: counted, not logged one line each.
    stamina.instrumentation.set_on_retry_hooks([])
    run_id = uuid.uuid4().hex[:10]
    subscription = await subscribe_webhooks(stack)
    watch = Watch(database_url, run_id, subscription)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    load = Load(
        run_id,
        httpx.AsyncClient(base_url=stack.services["intake"].base_url, limits=limits),
        httpx.AsyncClient(base_url=stack.services["processing"].base_url, limits=limits),
        stack.headers,
        patience=args.pg_down_seconds + args.patience,
    )
    monitor = Monitor(watch)
    stop = asyncio.Event()
    answering = asyncio.create_task(department(stack.department, stop))
    monitoring = asyncio.create_task(monitor.run(stop))
    began = time.monotonic()
    try:
        say(f"load: {args.cases} cases at {args.rate:g}/s")
        offering = asyncio.create_task(offer(load, args.cases, args.rate, args.forwarded_every))
        faults = await inject(stack, monitor, load, args, say)
        await offering
        load_seconds = time.monotonic() - began
        say("load done; waiting for the stack to settle")
        final, state = await settle(
            monitor,
            load,
            limit=args.settle_timeout,
            stall=args.stall_seconds,
            everything=True,
        )
        say(f"  {state}")
        figures = await measure(stack, watch, load, database_url, monitor.send_record_window)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(answering, monitoring), 10)
        await load.intake.aclose()
        await load.processing.aclose()
        await watch.engine.dispose()
    figures["faults"] = [f.__dict__ for f in faults]
    figures["settled"] = {"after_s": final, "state": state}
    figures["invariants"]["settled after the load"] = final is not None
    figures["seconds"] = round(load_seconds, 1)
    return figures


@contextlib.contextmanager
def started_stack(args: argparse.Namespace, tmp: Path) -> Iterator[Stack]:
    """PostgreSQL, nats-server with a department credential, receivers and services."""
    say = _say(args)
    with contextlib.ExitStack() as exits:
        say("starting an embedded PostgreSQL, nats-server, the receivers and the services…")
        postgres = exits.enter_context(temporary_postgres_server())
        credentials = nats_credentials(tmp / "nats-credentials")
        nats_server: NatsServer | NatsClusterServer = (
            NatsClusterServer(tmp / "nats", credentials)
            if args.cluster
            else NatsServer(tmp / "nats", credentials)
        )
        _, department_file = credentials.issue_department(
            DEPARTMENT, f"forestry-bench-{uuid.uuid4().hex[:6]}", nats_url=nats_server.url
        )
        credentials.write_config(authorities())
        nats_server.start()
        exits.callback(nats_server.stop)
        migrate(postgres.url)
        asyncio.run(publish_delegations(postgres.url))
        keys, _ = ensure_key_pair(tmp / "keys")
        audit_key, _ = ensure_audit_key(tmp / "keys" / "audit-ed25519.pem")
        receivers = Receivers()
        lease = f"{args.notify_lease_seconds:g}"
        sandbox_env = {
            **receivers.start(),
            # How soon a restarted notify sends what the killed one had claimed.
            "CASEFLOW_NOTIFY_DISPATCH__LEASE_SECONDS": lease,
            "CASEFLOW_NOTIFY_DISPATCH__TAKEOVER_GRACE_SECONDS": lease,
        }
        exits.callback(receivers.stop)
        log_dir = args.log_dir or tmp / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        services = exits.enter_context(
            running_services(
                postgres.url,
                nats_server.url,
                log_dir,
                public_key_file=keys.public_path,
                credentials=credentials,
                sandbox_env=sandbox_env,
                log_level=args.log_level,
                **({"nats_replicas": "3"} if args.cluster else {}),
            )
        )
        yield Stack(
            postgres,
            nats_server,
            services,
            receivers,
            credentials,
            department_file,
            staff_headers(keys.directory),
            audit_key.private_path,
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; its figures (``invariants`` says which hold)."""
    with contextlib.ExitStack() as exits:
        folder = exits.enter_context(tempfile.TemporaryDirectory(prefix="caseflow-bf-"))
        stack = exits.enter_context(started_stack(args, Path(folder)))
        figures = asyncio.run(bench(stack, stack.postgres.url, args))
    figures = {
        "benchmark": "faults",
        "config": {
            "cases": args.cases,
            "rate": args.rate,
            "pg_down_seconds": args.pg_down_seconds,
            "notify_lease_seconds": args.notify_lease_seconds,
            "forwarded_every": args.forwarded_every,
            "cluster": args.cluster,
            "database": "embedded postgresql",
            "nats": "3-node nats-server cluster, streams x3" if args.cluster else "nats-server",
        },
        **figures,
    }
    return figures


# --------------------------------------------------------------------------- output


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    return say


def report(figures: dict[str, Any], console: Console) -> None:
    """The figures as tables."""
    cases, notices = figures["cases"], figures["notices"]
    table = Table(title=f"bench.faults: {figures['config']}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("cases offered", cases["offered"]),
        ("cases acknowledged / in the log", f"{cases['acknowledged']} / {cases['in_log']}"),
        ("cases lost (acknowledged, not in the log)", cases["lost"]),
        ("duplicate cases", cases["duplicates"]),
        ("in the expected state (closed)", f"{cases['in_expected_state']} of {cases['in_log']}"),
        ("statuses", cases["statuses"]),
        ("client failures", cases["client_failures"]),
        ("requests retried (same key)", sum(cases["retried_requests"].values())),
        (
            "notices expected / planned / sent",
            f"{notices['expected']} / {notices['planned']} / {notices['sent']}",
        ),
        ("notices lost (failed, pending, never planned)", notices["lost"]),
        ("duplicate notices planned", figures["duplicate_notices_planned"]),
    ]
    for channel, r in figures["receivers"].items():
        rows.append(
            (
                f"{channel}: sent / arrived / duplicate arrivals",
                f"{r['sent']} / {r['arrived']} / {r['duplicates']}",
            )
        )
    arrivals = figures["duplicate_arrivals"]
    rows += [
        (
            "duplicate arrivals: in the send/record window of a killed notify / beyond it",
            f"{arrivals['in_the_send_record_window']} / {arrivals['unexplained']} "
            f"(it had {arrivals['window_deliveries']} deliveries in hand)",
        ),
        ("unpublished events", figures["unpublished_events"]),
        ("dead letters", figures["dead_letters"] or 0),
        ("audit verify", "clean" if figures["audit_verify"]["ok"] else figures["audit_verify"]),
        ("settled after the load", figures["settled"]["state"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    faults = Table(title="faults (times in seconds)")
    for column in ("fault", "at", "part away", "cases in flight", "settled after", "state"):
        faults.add_column(column)
    for f in figures["faults"]:
        faults.add_row(
            f["fault"],
            str(f["at_s"]),
            str(f["seconds"]),
            str(f["cases_in_flight"]),
            "—" if f["settled_after_s"] is None else str(f["settled_after_s"]),
            f["state"],
        )
    console.print(faults)
    checks = Table(title="invariants")
    checks.add_column("invariant")
    checks.add_column("holds")
    for name, holds in figures["invariants"].items():
        checks.add_row(name, "[green]yes[/]" if holds else "[red]NO[/]")
    console.print(checks)
    if cases["first_failures"]:
        console.print("first client failures:", *cases["first_failures"], sep="\n  ")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=300, help="applications offered")
    parser.add_argument("--rate", type=float, default=10.0, help="applications per second")
    parser.add_argument(
        "--pg-down-seconds", type=float, default=30.0, help="how long PostgreSQL stays down"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a 3-node NATS cluster (streams in 3 copies; one node killed)",
    )
    parser.add_argument(
        "--forwarded-every",
        type=int,
        default=3,
        help="one application in N is for an item forwarded to a department (0: none)",
    )
    parser.add_argument(
        "--warm-up", type=float, default=3.0, help="seconds of load before the first fault"
    )
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between two faults")
    parser.add_argument(
        "--patience",
        type=float,
        default=120.0,
        help="how long a client retries one request, on top of --pg-down-seconds",
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=300.0, help="longest wait for the stack to settle"
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=90.0,
        help="give up waiting to settle when nothing moved this long "
        "(longer than --notify-lease-seconds)",
    )
    parser.add_argument(
        "--notify-lease-seconds",
        type=float,
        default=15.0,
        help="notify's claim lease and takeover grace (its defaults: 15 s): how long the "
        "deliveries a killed notify had in hand wait before they are sent again",
    )
    parser.add_argument("--log-level", default="info", help="the services' log level")
    parser.add_argument("--log-dir", type=Path, help="keep the services' logs here")
    parser.add_argument("--json", action="store_true", help="JSON object on the last line")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.rate <= 0:
        parser.error("--cases must be at least 1 and --rate positive")
    if args.notify_lease_seconds < 1:
        parser.error("--notify-lease-seconds must be at least 1 (notify's own lower limit)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit status 1 if an invariant is broken."""
    args = parse_args(argv)
    figures = run(args)
    report(figures, Console(stderr=args.json))
    if args.json:
        print_json_last(figures)
    if not all(figures["invariants"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
