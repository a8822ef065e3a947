"""Notify's delivery benchmark: deliveries/s through the real email (SMTP) and webhook
channels to local receivers, a share of the deliveries failing once.

    python -m bench.notify                        # 2000 deliveries, a SQLite file
    python -m bench.notify --postgres             # an embedded PostgreSQL instead
    python -m bench.notify --database-url URL     # that database (migrated first)
    python -m bench.notify --fail-rate 0.2 --email-concurrency 8 --webhook-concurrency 32
    python -m bench.notify --json                 # figures as one JSON object on the last line

Setup, not timed: migrate; append ``--deliveries``/2 cases, each with a ``CaseReceived``
event; add a webhook subscription for the station; plan one email (a Chinese acceptance
notice, ~300 bytes) and one webhook delivery (the event's masked JSON envelope, ~1 KB)
per case with ``outbox.plan``, directly in the database: no NATS, no planning consumer.
This measures *delivery*, not planning.

The receivers (the sandbox's ``Mailbox``, plain SMTP, and ``WebhookReceiver``, checking
every Standard Webhooks signature) run in a child process, as a real SMTP server and
integrator would be elsewhere; they refuse the first attempt of ``--fail-rate`` of the
deliveries (``fail_first_attempt_of``: 451 after DATA, HTTP 500), picked by a hash of
the delivery id, so the number of attempts to expect is known in advance.

Timed: a :class:`Dispatcher` with the real ``EmailChannel`` and ``WebhookChannel``,
``drain()`` until every delivery is sent (bounded by ``--timeout``; called again if it
returns early, which is counted). Reported: deliveries/s overall and per channel,
attempts, time from the start to each delivery's ``sent_at``, each delivery's time from
its first attempt to ``sent_at``, each channel call's time, database transactions,
statements and new connections per delivery, CPU seconds of this process (its event loop
apart from its other threads), of the receivers, of PostgreSQL and of the rest of the
machine. Checked afterwards (the benchmark fails otherwise): every delivery ``sent``; the mailbox
holds exactly the email deliveries' ``Message-ID``s, the receiver exactly the webhook
deliveries' ids, neither saw a repeat; the log holds one ``NotificationSent`` per
delivery and no other.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
import structlog
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench._common import (
    describe_durability,
    durability,
    latency_summary,
    postmaster_pid,
    print_json_last,
    rate,
    temporary_postgres,
)
from services.notify import outbox, subscriptions
from services.notify.channels import Channel
from services.notify.channels.email import EmailChannel, EmailSettings
from services.notify.channels.webhook import WebhookChannel, generate_secret
from services.notify.dispatcher import ChannelLimits, Dispatcher, DispatchSettings
from services.notify.egress import AllowedNetwork, EgressPolicy
from services.notify.model import ChannelName, Outgoing, Recipient, delivery_id
from services.notify.planning import webhook_body
from services.notify.sandbox import Mailbox, WebhookReceiver, picked_for_failure
from services.notify.schema import deliveries as d
from shared.adapters.db import create_engine, is_sqlite, migrate
from shared.adapters.eventlog import EventLog
from shared.adapters.tables.eventlog import events as ev
from shared.domain.events import Actor, NewEvent, StoredEvent, utcnow

ROOT = Path(__file__).resolve().parents[1]
STATION = "xuefeng_station"
CLERK = Actor(user="li.clerk", role="window_clerk", station=STATION)
SECRET_ENV = "CASEFLOW_BENCH_WEBHOOK_SECRET"
REPORT_PREFIX = "RECEIVERS "
"""What the receivers' process puts before each line meant for the benchmark."""
MATERIALS = [
    "id_card",
    "household_register",
    "application_form",
    "bank_card_copy",
    "photo_2inch",
]
SUBJECT = "受理通知：您的城乡居民养老保险参保登记申请已受理（{number}）"
BODY = (
    "{name}女士：\n"
    "您于2026年3月2日在薛峰中心村政务服务站提交的《城乡居民基本养老保险参保登记》"
    "申请已受理，受理编号 {number}。\n"
    "我们将在5个工作日内办结，办理进度可在服务站窗口查询。\n"
    "薛峰中心村政务服务站"
)
DEFAULT_LIMITS = DispatchSettings()


# --------------------------------------------------------------------------- receivers


async def serve_receivers(fail_rate: float, seed: int) -> None:
    """The receivers' process: a mailbox and a webhook receiver until stdin closes;
    ``report`` on stdin prints what they got (one JSON line, prefixed)."""
    secret = os.environ[SECRET_ENV]
    async with Mailbox() as box, WebhookReceiver(secret) as hooks:
        box.fail_first_attempt_of(fail_rate, seed)
        hooks.fail_first_attempt_of(fail_rate, seed)
        ready = {"smtp_port": box.port, "webhook_url": hooks.endpoint("/caseflow")}
        print(REPORT_PREFIX + json.dumps(ready), flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            if line.strip() == "report":
                report = {
                    "email": {
                        "message_ids": [str(m["Message-ID"]).strip() for m in box.messages],
                        "attempts": box.attempts,
                        "duplicates": box.duplicates,
                        "first_attempt_failures": box.first_attempt_failures,
                    },
                    "webhook": {
                        "ids": [c.webhook_id for c in hooks.received],
                        "calls": len(hooks.calls),
                        "duplicates": hooks.duplicates,
                        "rejected": hooks.rejected,
                        "unverified": sum(not c.verified for c in hooks.received),
                        "first_attempt_failures": hooks.first_attempt_failures,
                    },
                }
                print(REPORT_PREFIX + json.dumps(report), flush=True)


@dataclasses.dataclass
class Receivers:
    """The receivers' child process and where it listens."""

    proc: asyncio.subprocess.Process
    smtp_port: int
    webhook_url: str

    async def _line(self, within: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return await _read_report(self.proc.stdout, within)

    async def report(self) -> dict[str, Any]:
        """What the mailbox and the webhook receiver got."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"report\n")
        await self.proc.stdin.drain()
        return await self._line(30.0)


async def _read_report(stream: asyncio.StreamReader, within: float) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while line := await stream.readline():
            text = line.decode(errors="replace")
            if text.startswith(REPORT_PREFIX):
                found: dict[str, Any] = json.loads(text.removeprefix(REPORT_PREFIX))
                return found
    raise RuntimeError("the receivers' process ended without answering")


@contextlib.asynccontextmanager
async def receivers(secret: str, fail_rate: float, seed: int) -> AsyncIterator[Receivers]:
    """The receivers in a child process (their CPU apart from the dispatcher's)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.notify",
        "--serve-receivers",
        f"--fail-rate={fail_rate}",
        f"--seed={seed}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, SECRET_ENV: secret},
        limit=2**24,  # the report is one long line
    )
    try:
        assert proc.stdout is not None
        ready = await _read_report(proc.stdout, 60.0)
        yield Receivers(proc, int(ready["smtp_port"]), str(ready["webhook_url"]))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- setup


@dataclasses.dataclass
class Planned:
    """What the setup planned."""

    email: list[uuid.UUID]
    webhook: list[uuid.UUID]
    cases: int
    email_body_bytes: float
    webhook_body_bytes: float
    seconds: float

    @property
    def total(self) -> int:
        """Deliveries planned."""
        return len(self.email) + len(self.webhook)


def case_payload(i: int, run: str) -> dict[str, Any]:
    """A pension enrolment as intake records it (personal data included)."""
    return {
        "item_code": "pension_enrolment",
        "applicant": {
            "name": "王秀英",
            "phone": f"138{i % 10**8:08d}",
            "id_number": "11010519491231002X",
            "email": f"wang.xiuying.{run}.{i}@example.cn",
            "village": "薛峰村三组",
        },
        "materials": MATERIALS,
        "language": "zh-CN",
        "channels": ["email"],
        "station": STATION,
        "case_number": f"XF-2026-{i + 1:06d}",
    }


async def plan_deliveries(
    log: EventLog, n: int, webhook_url: str, secret: str, run: str
) -> Planned:
    """Cases in the log and their deliveries in the outbox (see the module docstring)."""
    started = time.perf_counter()
    subscription, _ = await subscriptions.create(
        log,
        station=STATION,
        event_types=["*"],
        url=webhook_url,
        secret=secret,
        created_by="bench",
        description="bench.notify",
    )
    assert subscription is not None
    emails, hooks = (n + 1) // 2, n // 2
    received: list[StoredEvent] = []
    chunk = 250
    for first in range(0, emails, chunk):
        results = await asyncio.gather(
            *(
                log.append(
                    uuid.uuid4(),
                    0,
                    [
                        NewEvent(
                            event_type="CaseReceived",
                            schema_version=2,
                            actor=CLERK,
                            correlation_id=f"bench-{run}",
                            payload=case_payload(i, run),
                        )
                    ],
                    case_kind="application",
                )
                for i in range(first, min(first + chunk, emails))
            )
        )
        received.extend(r.events[0] for r in results)
    hook_recipient = Recipient(
        audience=f"webhook:{subscription.subscription_id}",
        address=subscription.url,
        masked=webhook_url.split("/caseflow")[0],
    )
    email_ids: list[uuid.UUID] = []
    hook_ids: list[uuid.UUID] = []
    email_bytes = hook_bytes = 0
    for first in range(0, len(received), chunk):
        async with log.writer.begin() as conn:
            for i, stored in enumerate(received[first : first + chunk], start=first):
                common: dict[str, Any] = {
                    "event_id": stored.event_id,
                    "event_type": stored.event_type,
                    "case_id": stored.case_id,
                    "case_kind": stored.case_kind,
                    "station": STATION,
                    "correlation_id": stored.correlation_id,
                }
                applicant = stored.payload["applicant"]
                person = Recipient("applicant", applicant["email"], "w***@example.cn", "zh-CN")
                number = stored.payload["case_number"]
                body = BODY.format(name=applicant["name"][:1], number=number)
                email_id = delivery_id(stored.event_id, "email", person)
                await outbox.plan(
                    conn,
                    delivery_id=email_id,
                    channel="email",
                    recipient=person,
                    subject=SUBJECT.format(number=number),
                    body=body,
                    template="case_accepted",
                    **common,
                )
                email_ids.append(email_id)
                email_bytes += len(body.encode())
                if i < hooks:
                    envelope = webhook_body(stored).decode()
                    hook_id = delivery_id(stored.event_id, "webhook", hook_recipient)
                    await outbox.plan(
                        conn,
                        delivery_id=hook_id,
                        channel="webhook",
                        recipient=hook_recipient,
                        subject=stored.event_type,
                        body=envelope,
                        subscription_id=subscription.subscription_id,
                        **common,
                    )
                    hook_ids.append(hook_id)
                    hook_bytes += len(envelope.encode())
    return Planned(
        email=email_ids,
        webhook=hook_ids,
        cases=len(received),
        email_body_bytes=round(email_bytes / max(1, len(email_ids)), 1),
        webhook_body_bytes=round(hook_bytes / max(1, len(hook_ids)), 1),
        seconds=round(time.perf_counter() - started, 2),
    )


# --------------------------------------------------------------------------- measuring


class TimedChannel:
    """A channel that notes when each delivery's first attempt began and how long each
    call took."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.name: ChannelName = inner.name
        self.first_attempt: dict[uuid.UUID, float] = {}
        """Wall-clock time (``time.time()``) of each delivery's first call."""
        self.calls: list[float] = []
        self.failed_calls = 0

    async def send(self, message: Outgoing) -> str | None:
        """Send through the real channel, timed."""
        self.first_attempt.setdefault(message.delivery_id, time.time())
        started = time.perf_counter()
        try:
            return await self.inner.send(message)
        except Exception:
            self.failed_calls += 1
            raise
        finally:
            self.calls.append(time.perf_counter() - started)

    async def aclose(self) -> None:
        """Close the real channel."""
        await self.inner.aclose()


class DatabaseCounter:
    """Transactions, statements, checkouts and errors on an engine while counting."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.counting = False
        target = engine.sync_engine

        def note(name: str) -> Any:
            def listener(*_args: Any, **_kwargs: Any) -> None:
                if self.counting:
                    self.counts[name] += 1

            return listener

        sa_event.listen(target, "begin", note("transactions"))
        sa_event.listen(target, "commit", note("commits"))
        sa_event.listen(target, "rollback", note("rollbacks"))
        sa_event.listen(target, "before_cursor_execute", note("statements"))
        sa_event.listen(target, "handle_error", note("errors"))
        sa_event.listen(target, "checkout", note("checkouts"))
        sa_event.listen(target, "connect", note("connections_opened"))


class CpuClock:
    """CPU seconds (user + system) of this process, the receivers and PostgreSQL."""

    def __init__(self, receivers_pid: int, postgres_pid: int | None) -> None:
        self.parts: dict[str, tuple[int, bool]] = {
            "bench": (os.getpid(), False),
            "receivers": (receivers_pid, False),
        }
        if postgres_pid is not None:
            self.parts["postgresql"] = (postgres_pid, True)

    @staticmethod
    def _seconds(pid: int, with_children: bool) -> float:
        total = 0.0
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            cpu = proc.cpu_times()
            total = cpu.user + cpu.system
            if with_children:  # PostgreSQL's backends, those that exited included
                total += cpu.children_user + cpu.children_system
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        times = child.cpu_times()
                        total += times.user + times.system
        return total

    def read(self) -> dict[str, float]:
        """Current CPU seconds per part; call it from the event loop's thread: its own
        share of this process is told apart (``bench_event_loop``), the rest are the
        other threads (aiosqlite's, one per SQLite connection, and the executor's)."""
        seconds = {name: self._seconds(pid, kids) for name, (pid, kids) in self.parts.items()}
        seconds["bench_event_loop"] = time.thread_time()
        machine = psutil.cpu_times()
        seconds["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return seconds


@contextlib.contextmanager
def profiling(path: Path | None) -> Iterator[None]:
    """py-spy on this process while the block runs: raw stacks of the samples that hold
    the GIL (where the CPU goes) into ``path``."""
    if path is None:
        yield
        return
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            *(str(py_spy), "record", "--pid", str(os.getpid()), "--rate", "100"),
            *("--format", "raw", "--gil", "--output", str(path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()


def dispatch_settings(args: argparse.Namespace) -> DispatchSettings:
    """Default limits and timeouts, short backoff (so a failed first attempt is retried
    within the run), the concurrency asked for."""
    return DispatchSettings(
        max_attempts=DEFAULT_LIMITS.max_attempts,
        wait_initial_seconds=0.05,
        wait_max_seconds=1.0,
        wait_jitter_seconds=0.05,
        email=ChannelLimits(
            concurrency=args.email_concurrency,
            timeout_seconds=DEFAULT_LIMITS.email.timeout_seconds,
        ),
        webhook=ChannelLimits(
            concurrency=args.webhook_concurrency,
            timeout_seconds=DEFAULT_LIMITS.webhook.timeout_seconds,
        ),
    )


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=utcnow().tzinfo)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """A delivery's row as the run left it."""

    delivery_id: uuid.UUID
    channel: str
    status: str
    attempts: int
    sent_at: datetime | None


async def outcome(log: EventLog, planned: Planned) -> dict[uuid.UUID, Outcome]:
    """The planned deliveries' rows."""
    ids = [*planned.email, *planned.webhook]
    rows: dict[uuid.UUID, Outcome] = {}
    columns = (d.c.delivery_id, d.c.channel, d.c.status, d.c.attempts, d.c.sent_at)
    async with log.engine.connect() as conn:
        for first in range(0, len(ids), 500):
            query = sa.select(*columns).where(d.c.delivery_id.in_(ids[first : first + 500]))
            for row in await conn.execute(query):
                sent_at = _aware(row.sent_at) if row.sent_at is not None else None
                rows[row.delivery_id] = Outcome(
                    row.delivery_id, row.channel, row.status, row.attempts, sent_at
                )
    return rows


async def notifications_sent(log: EventLog, correlation_id: str) -> collections.Counter[str]:
    """How many NotificationSent events the log holds for each delivery id of the run."""
    found: collections.Counter[str] = collections.Counter()
    query = sa.select(ev.c.payload).where(
        ev.c.event_type == "NotificationSent", ev.c.correlation_id == correlation_id
    )
    async with log.engine.connect() as conn:
        for (payload,) in await conn.execute(query):
            found[str(payload.get("delivery_id"))] += 1
    return found


def check(
    planned: Planned,
    rows: dict[uuid.UUID, Outcome],
    got: dict[str, Any],
    sent_events: collections.Counter[str],
    expected_refusals: int,
) -> list[str]:
    """Everything that is not as it must be (empty: all good)."""
    problems = []
    unsent = [str(k) for k, r in rows.items() if r.status != outbox.SENT]
    if len(rows) != planned.total or unsent:
        problems.append(
            f"{len(rows)} of {planned.total} deliveries found, {len(unsent)} not sent"
            f" (first: {unsent[:3]})"
        )
    mail = got["email"]
    want_mail = {f"<{i}@caseflow>" for i in planned.email}
    have_mail = collections.Counter(mail["message_ids"])
    if set(have_mail) != want_mail or max(have_mail.values(), default=1) != 1:
        problems.append(
            f"mailbox: {len(have_mail)} distinct messages for {len(want_mail)} email"
            f" deliveries ({len(want_mail - set(have_mail))} missing,"
            f" {len(set(have_mail) - want_mail)} unexpected)"
        )
    if mail["duplicates"]:
        problems.append(f"mailbox: {mail['duplicates']} messages came again after being taken")
    hooks = got["webhook"]
    want_hooks = {str(i) for i in planned.webhook}
    have_hooks = collections.Counter(hooks["ids"])
    if set(have_hooks) != want_hooks or max(have_hooks.values(), default=1) != 1:
        problems.append(
            f"webhook receiver: {len(have_hooks)} distinct calls for {len(want_hooks)} webhook"
            f" deliveries ({len(want_hooks - set(have_hooks))} missing,"
            f" {len(set(have_hooks) - want_hooks)} unexpected)"
        )
    if hooks["duplicates"] or hooks["rejected"] or hooks["unverified"]:
        problems.append(
            f"webhook receiver: {hooks['duplicates']} repeats, {hooks['rejected']} rejected,"
            f" {hooks['unverified']} unverified"
        )
    want_events = {str(i) for i in (*planned.email, *planned.webhook)}
    if set(sent_events) != want_events or max(sent_events.values(), default=1) != 1:
        problems.append(
            f"log: {sum(sent_events.values())} NotificationSent for {len(want_events)}"
            f" deliveries ({len(want_events - set(sent_events))} missing,"
            f" {sum(n - 1 for n in sent_events.values())} repeated,"
            f" {len(set(sent_events) - want_events)} unexpected)"
        )
    refused = mail["first_attempt_failures"] + hooks["first_attempt_failures"]
    if refused != expected_refusals:
        problems.append(
            f"receivers refused {refused} first attempts, {expected_refusals} were picked"
        )
    return problems


async def drain_until_sent(dispatcher: Dispatcher, log: EventLog, correlation_id: str) -> int:
    """``drain()`` until none of the run's deliveries is pending; how many times it
    returned with some still pending.

    ``drain()`` stops after a round that started nothing while nothing was in flight, but
    a channel that was full when the round came to it is skipped, and its deliveries may
    all finish while the round claims for the other channels: ``drain()`` then returns
    with that channel's deliveries still due (see bench/README.md)."""
    early = 0
    query = sa.select(sa.func.count()).where(
        d.c.status == outbox.PENDING, d.c.correlation_id == correlation_id
    )
    while True:
        await dispatcher.drain()
        async with log.engine.connect() as conn:
            if not (await conn.execute(query)).scalar_one():
                return early
        early += 1
        await asyncio.sleep(0.02)


def _since(start: float, stamps: Sequence[float]) -> list[float]:
    return [s - start for s in stamps]


async def bench(
    args: argparse.Namespace, database_url: str, postgres_pid: int | None = None
) -> dict[str, Any]:
    """Migrate, plan, deliver, check; the figures. The benchmark's main coroutine."""
    await asyncio.to_thread(migrate, database_url)
    engine = create_engine(database_url)
    log = EventLog(engine)
    run = uuid.uuid4().hex[:12]
    secret = generate_secret()
    settings = dispatch_settings(args)
    database = "sqlite" if is_sqlite(database_url) else "postgresql"
    try:
        durable = await durability(engine)
        say(f"[{database}] {describe_durability(durable)}")
        async with receivers(secret, args.fail_rate, args.seed) as recv:
            planned = await plan_deliveries(log, args.deliveries, recv.webhook_url, secret, run)
            expected_refusals = sum(
                picked_for_failure(f"<{i}@caseflow>", args.fail_rate, args.seed)
                for i in planned.email
            ) + sum(picked_for_failure(str(i), args.fail_rate, args.seed) for i in planned.webhook)
            say(
                f"setup (not timed, {planned.seconds} s): {planned.cases} cases with a"
                f" CaseReceived each; {planned.total} deliveries ({len(planned.email)} email of"
                f" ~{planned.email_body_bytes:.0f} bytes, {len(planned.webhook)} webhook of"
                f" ~{planned.webhook_body_bytes:.0f} bytes) planned with outbox.plan straight"
                " into the database, not through NATS: this measures delivery, not planning",
            )
            say(
                f"receivers (child process {recv.proc.pid}): sandbox mailbox"
                f" smtp://127.0.0.1:{recv.smtp_port} (plain SMTP), webhook receiver"
                f" {recv.webhook_url} (signatures checked); the first attempt of"
                f" {args.fail_rate:.0%} of the deliveries refused (451 after DATA / HTTP 500):"
                f" {expected_refusals} picked",
            )
            say(
                f"dispatch: max_attempts {settings.max_attempts}, wait_initial"
                f" {settings.wait_initial_seconds} s, wait_max {settings.wait_max_seconds} s,"
                f" wait_jitter {settings.wait_jitter_seconds} s; email concurrency"
                f" {settings.email.concurrency} (timeout {settings.email.timeout_seconds:g} s),"
                f" webhook concurrency {settings.webhook.concurrency} (timeout"
                f" {settings.webhook.timeout_seconds:g} s); Dispatcher.drain()",
            )
            email = TimedChannel(
                EmailChannel(
                    EmailSettings(host="127.0.0.1", port=recv.smtp_port, starttls=False),
                    pool_size=settings.email.concurrency,
                )
            )
            # The receiver listens on loopback: allowed as an operator would allow it.
            receiver = EgressPolicy((AllowedNetwork.endpoint(recv.webhook_url),))
            webhook = TimedChannel(
                WebhookChannel(timeout=settings.webhook.timeout_seconds, policy=receiver)
            )
            dispatcher = Dispatcher(log, {"email": email, "webhook": webhook}, settings)
            counter = DatabaseCounter(engine)
            cpu = CpuClock(recv.proc.pid, postgres_pid)
            try:
                with profiling(args.profile):
                    cpu_before = cpu.read()
                    counter.counting = True
                    wall_start = time.time()
                    started = time.perf_counter()
                    try:
                        async with asyncio.timeout(args.timeout):
                            early = await drain_until_sent(dispatcher, log, f"bench-{run}")
                    except TimeoutError:
                        rows = await outcome(log, planned)
                        left = sum(r.status != outbox.SENT for r in rows.values())
                        raise SystemExit(
                            f"FAILED: {left} of {planned.total} deliveries still not sent"
                            f" after {args.timeout:g} s"
                        ) from None
                    elapsed = time.perf_counter() - started
                    counter.counting = False
                    cpu_after = cpu.read()
            finally:
                await dispatcher.stop_sending()
                await email.aclose()
                await webhook.aclose()
            got = await recv.report()
        rows = await outcome(log, planned)
        sent_events = await notifications_sent(log, f"bench-{run}")
    finally:
        await engine.dispose()

    problems = check(planned, rows, got, sent_events, expected_refusals)
    figures = figures_of(
        args,
        database,
        durable,
        settings,
        planned,
        rows,
        (email, webhook),
        wall_start,
        elapsed,
        counter.counts,
        {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_before},
        got,
        expected_refusals,
        early,
    )
    describe(figures)
    if problems:
        raise SystemExit("FAILED:\n  " + "\n  ".join(problems))
    say(
        f"checked: every delivery sent; mailbox {len(planned.email)} messages, one per email"
        f" delivery; webhook receiver {len(planned.webhook)} calls taken, one per webhook"
        f" delivery, signatures verified; no repeats; the log holds {planned.total}"
        " NotificationSent, one per delivery",
    )
    return figures


def figures_of(
    args: argparse.Namespace,
    database: str,
    durable: dict[str, Any],
    settings: DispatchSettings,
    planned: Planned,
    rows: dict[uuid.UUID, Outcome],
    channels: tuple[TimedChannel, TimedChannel],
    wall_start: float,
    elapsed: float,
    counts: collections.Counter[str],
    cpu: dict[str, float],
    got: dict[str, Any],
    expected_refusals: int,
    drain_early_returns: int,
) -> dict[str, Any]:
    """Everything measured, as one JSON-ready dict."""
    n = planned.total
    attempts = sum(r.attempts for r in rows.values())
    per_channel: dict[str, Any] = {}
    all_done: list[float] = []
    for timed in channels:
        mine = {
            r.delivery_id: r.sent_at.timestamp()
            for r in rows.values()
            if r.channel == timed.name and r.sent_at is not None
        }
        done = list(mine.values())
        all_done.extend(done)
        last = max(done, default=wall_start) - wall_start
        per_delivery = [
            sent - timed.first_attempt[key]
            for key, sent in mine.items()
            if key in timed.first_attempt
        ]
        per_channel[timed.name] = {
            "deliveries": len(mine),
            "attempts": sum(rows[key].attempts for key in mine),
            "seconds_to_last": round(last, 3),
            "deliveries_per_s": rate(len(mine), last),
            "since_start_to_sent": latency_summary(_since(wall_start, done)),
            "first_attempt_to_sent": latency_summary(per_delivery),
            "channel_call": latency_summary(timed.calls),
            "calls": len(timed.calls),
            "failed_calls": timed.failed_calls,
        }
    cpu = dict(cpu)
    cpu["bench_other_threads"] = round(cpu["bench"] - cpu["bench_event_loop"], 2)
    machine = cpu.pop("machine")
    total_cpu = sum(v for k, v in cpu.items() if not k.startswith("bench_"))
    # The rest of the machine meanwhile: a busy neighbour shows up here.
    cpu["other"] = round(max(0.0, machine - total_cpu), 2)
    return {
        "benchmark": "notify",
        "config": {
            "deliveries": n,
            "email": len(planned.email),
            "webhook": len(planned.webhook),
            "cases": planned.cases,
            "fail_rate": args.fail_rate,
            "seed": args.seed,
            "database": database,
            "planning": "outbox.plan straight into the database (no NATS): delivery only",
            "receivers": "sandbox Mailbox (plain SMTP) + WebhookReceiver, a child process",
            "email_body_bytes": planned.email_body_bytes,
            "webhook_body_bytes": planned.webhook_body_bytes,
            "dispatch": settings.model_dump(mode="json"),
        },
        "durability": durable,
        "deliveries": sum(r.status == outbox.SENT for r in rows.values()),
        "seconds": round(elapsed, 3),
        "deliveries_per_s": rate(n, elapsed),
        "attempts": attempts,
        "attempts_expected": n + expected_refusals,
        "attempts_per_delivery": round(attempts / n, 3) if n else 0.0,
        "first_attempts_refused": expected_refusals,
        "drain_early_returns": drain_early_returns,
        "since_start_to_sent": latency_summary(_since(wall_start, all_done)),
        "channels": per_channel,
        "database_ops": {
            **dict(counts),
            "per_delivery": {k: round(v / n, 2) for k, v in counts.items()} if n else {},
        },
        "cpu_seconds": cpu,
        "cpu_ms_per_delivery": (
            {k: round(v / n * 1000, 3) for k, v in cpu.items() if k != "other"} if n else {}
        ),
        "cpu_share_of_machine": round(total_cpu / (elapsed * (psutil.cpu_count() or 1)), 3),
        "receivers": {
            "email": {k: v for k, v in got["email"].items() if k != "message_ids"},
            "webhook": {k: v for k, v in got["webhook"].items() if k != "ids"},
        },
    }


def say(line: str) -> None:
    """One line of the readable summary."""
    print(line, flush=True)


def _ms(summary: dict[str, Any]) -> str:
    return f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms"


def describe(f: dict[str, Any]) -> None:
    """The figures, readable."""
    db = f["config"]["database"]
    parts = "; ".join(
        f"{name} {c['deliveries']} in {c['seconds_to_last']} s = {c['deliveries_per_s']:,.1f}/s"
        for name, c in f["channels"].items()
    )
    say(
        f"[{db}] sent {f['deliveries']}/{f['config']['deliveries']} in {f['seconds']} s:"
        f" {f['deliveries_per_s']:,.1f} deliveries/s ({parts})",
    )
    say(
        f"[{db}] attempts {f['attempts']} (expected {f['attempts_expected']}:"
        f" {f['config']['deliveries']} + {f['first_attempts_refused']} refused first"
        f" attempts; {f['attempts_per_delivery']} per delivery)",
    )
    say(f"[{db}] start → sent: {_ms(f['since_start_to_sent'])}")
    if f["drain_early_returns"]:
        say(
            f"[{db}] NOTE: Dispatcher.drain() returned {f['drain_early_returns']} time(s) with"
            " deliveries still pending (a channel full when the round looked at it emptied"
            " meanwhile); called again"
        )
    for name, c in f["channels"].items():
        say(
            f"[{db}] {name}: first attempt → sent {_ms(c['first_attempt_to_sent'])};"
            f" channel call {_ms(c['channel_call'])} ({c['calls']} calls,"
            f" {c['failed_calls']} failed)",
        )
    ops = f["database_ops"]["per_delivery"]
    say(
        f"[{db}] database per delivery: {ops.get('transactions', 0)} transactions,"
        f" {ops.get('statements', 0)} statements, {ops.get('checkouts', 0)} connection"
        f" checkouts, {ops.get('connections_opened', 0)} new connections;"
        f" {f['database_ops'].get('errors', 0)} errors (conflicting appends retried)",
    )
    cpu = f["cpu_seconds"]
    per = f["cpu_ms_per_delivery"]
    cpu_parts = [
        f"bench {cpu['bench']:.2f} s = {per['bench']:.2f} ms/delivery (event loop"
        f" {cpu['bench_event_loop']:.2f} s, other threads {cpu['bench_other_threads']:.2f} s)",
        *(
            f"{k} {cpu[k]:.2f} s = {per[k]:.2f} ms/delivery"
            for k in ("receivers", "postgresql")
            if k in cpu
        ),
        f"the rest of the machine (not this benchmark) {cpu['other']:.2f} s",
    ]
    say(
        f"[{db}] CPU: {'; '.join(cpu_parts)}; {f['cpu_share_of_machine']:.0%} of the machine's"
        f" {psutil.cpu_count()} cores"
    )


# --------------------------------------------------------------------------- entry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.notify", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--deliveries",
        type=int,
        default=2000,
        help="deliveries, half email, half webhook (default 2000)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--database-url",
        help="this database (sqlite+aiosqlite://… or postgresql+asyncpg://…), migrated first;"
        " default: a SQLite file in a temporary folder",
    )
    where.add_argument(
        "--postgres", action="store_true", help="an embedded PostgreSQL in a temporary folder"
    )
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.1,
        help="share of deliveries whose first attempt the receiver refuses (default 0.1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="which deliveries fail once")
    parser.add_argument(
        "--email-concurrency",
        type=int,
        default=DEFAULT_LIMITS.email.concurrency,
        help=f"emails in flight (default {DEFAULT_LIMITS.email.concurrency}, notify's default)",
    )
    parser.add_argument(
        "--webhook-concurrency",
        type=int,
        default=DEFAULT_LIMITS.webhook.concurrency,
        help=f"webhooks in flight (default {DEFAULT_LIMITS.webhook.concurrency})",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up if not all sent by then (s)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        help="the dispatcher's log level (default info, as deployed; the log goes to a file)",
    )
    parser.add_argument(
        "--log-file", type=Path, help="the dispatcher's JSON log (default: a temporary file)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy this process while it delivers: raw stacks of the samples holding the GIL",
    )
    parser.add_argument("--json", action="store_true", help="JSON object on the last line")
    parser.add_argument("--serve-receivers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deliveries < 1:
        parser.error("--deliveries must be at least 1")
    if not 0 <= args.fail_rate <= 1:
        parser.error("--fail-rate is a share, from 0 to 1")
    return args


def quiet_receivers() -> None:
    """The receivers log nothing below warning (each message would be a line)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger().setLevel(logging.WARNING)


def log_to(path: Path, level: str) -> None:
    """The services' JSON logging, into ``path`` rather than stderr."""
    from shared.logging import configure_logging

    configure_logging("notify-bench", level)
    stream = path.open("a", encoding="utf-8")  # for the process's life
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(stream))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    if args.serve_receivers:
        quiet_receivers()
        asyncio.run(serve_receivers(args.fail_rate, args.seed))
        return
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caseflow-bn-")))
        log_to(args.log_file or tmp / "notify.log", args.log_level)
        postgres_pid = None
        url = args.database_url
        if args.postgres:
            print("starting an embedded PostgreSQL in a temporary folder…", flush=True)
            url, pgdata = stack.enter_context(temporary_postgres())
            postgres_pid = postmaster_pid(pgdata)
        elif not url:
            url = f"sqlite+aiosqlite:///{tmp / 'notify.db'}"
        figures = asyncio.run(bench(args, url, postgres_pid))
    if args.json:
        print_json_last(figures)


if __name__ == "__main__":
    main()
