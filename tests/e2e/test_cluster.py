"""caseflow scaled out, and parts of it killed under load: a three-node NATS JetStream
cluster (every stream in three copies), two replicas of intake, processing and notify as
processes on one PostgreSQL, the sandbox's mailbox, SMS gateway and webhook receiver.

Applications come in through both intake replicas (a load balancer's view: a replica
that does not answer is skipped and the request sent to the other with the same
Idempotency-Key); some are taken through their station's workflow to delivery, some are
forwarded to a department, some stay accepted, some are sent back for correction. Under
that load the NATS node leading the event stream is SIGKILLed, then one replica of each
service. Afterwards every case acknowledged over HTTP is in the log in its expected
state, case numbers run without a gap, each event is on the stream once, each
consumer handled each event once, every notice was planned once, sent, recorded once and
reached its receiver once, and ``caseflow audit verify`` finds the log intact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.notify.planning import NOT_NOTIFIED
from services.notify.sandbox import Sandbox
from services.notify.schema import deliveries
from shared.adapters.bus.access import OPERATOR
from shared.adapters.bus.streams import DEPT_STREAM, DLQ_STREAM, EVENTS_STREAM
from shared.adapters.db import create_engine
from shared.adapters.tables.eventlog import events as events_table
from shared.adapters.tables.eventlog import inbox, relay_checkpoints
from shared.application.audit.keys import ensure_audit_key
from shared.application.projections.cases import CASE_KINDS
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from shared.domain.catalogue import load_catalogue
from shared.domain.workflow.reference import load_reference
from shared.domain.workflow.state import NOT_WORK, fold
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    VALID_APPLICANT,
    ServiceProcess,
    ThreadedSandbox,
    connect_as,
    seed_delegations,
    service_env,
    session_bus,
    start_process,
    wait_ready,
)

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.timeout(480)]

SERVICES = ("intake", "processing", "notify")
CASES = 60
"""Every plan twelve times, the last 25 cases after the replicas are killed
(``bench.faults --cluster`` offers hundreds)."""
CONCURRENCY = 6
KILL_NATS_AFTER = 20
"""Cases acknowledged before the NATS node leading the event stream is killed…"""
KILL_REPLICAS_AFTER = 35
"""…and before one replica of each service is."""
SETTLE_SECONDS = 150.0
PROJECTED_KINDS = frozenset((*CASE_KINDS, "reception"))
"""What processing's consumer hears of (its subjects): not the delegation instruments."""
CASEFLOW = Path(sys.executable).parent / "caseflow"
EMAIL = "wang.xiuying@example.cn"

NOTIFY = {
    # Short retries and claims: a notice claimed by the notify replica that is killed is
    # sent by the other once the claim runs out (timeout + longest wait + jitter + 5 s).
    "DISPATCH__MAX_ATTEMPTS": "10",
    "DISPATCH__WAIT_INITIAL_SECONDS": "0.2",
    "DISPATCH__WAIT_MAX_SECONDS": "2",
    "DISPATCH__WAIT_JITTER_SECONDS": "0.2",
    "DISPATCH__POLL_SECONDS": "0.3",
    "DISPATCH__EMAIL__TIMEOUT_SECONDS": "5",
    "DISPATCH__SMS__TIMEOUT_SECONDS": "5",
    "DISPATCH__WEBHOOK__TIMEOUT_SECONDS": "5",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a case goes through and the status it must end in."""

    item: str
    steps: tuple[Step, ...]
    status: str
    complete: bool = True


Step = tuple[str, Mapping[str, str], Mapping[str, Any]]
REVIEWED: tuple[Step, ...] = (
    ("start_review", REVIEWER, {}),
    ("complete_review", REVIEWER, {"recommendation": "approve", "opinion": "材料齐全"}),
)
PLANS = (
    Plan(
        "pension_enrolment",
        (*REVIEWED, ("approve", HEAD, {}), ("deliver", CLERK, {"method": "in_person"})),
        "delivered",
    ),
    Plan("logging_permit", (*REVIEWED, ("forward", REVIEWER, {})), "forwarded"),
    Plan("social_security_card", (), "accepted"),
    Plan("elderly_allowance", (*REVIEWED, ("forward", REVIEWER, {})), "forwarded"),
    Plan("medical_insurance_enrolment", (), "correction_requested", complete=False),
)


ITEMS = {item.code: item for item in load_catalogue().published()}


class Replicas:
    """A service's replicas as a load balancer sees them: requests go round the replicas;
    one that does not answer (killed, or not yet ready) is passed over and the request
    is sent to the next with the same Idempotency-Key, so a request that did commit on
    the dead replica is answered from the idempotency record, not done twice."""

    def __init__(self, processes: Sequence[ServiceProcess]) -> None:
        self.processes = list(processes)
        self._turn = itertools.count()
        self.failovers = 0
        self._lock = threading.Lock()

    def post(self, path: str, who: Mapping[str, str], body: Mapping[str, Any]) -> httpx.Response:
        key = uuid.uuid4().hex
        start = next(self._turn)
        deadline = time.monotonic() + 90
        for attempt in itertools.count():
            replica = self.processes[(start + attempt) % len(self.processes)]
            try:
                response = httpcalls.post(
                    f"{replica.base_url}{path}",
                    json=dict(body),
                    headers={**who, "Idempotency-Key": key},
                    timeout=20,
                )
                # 409: a notice landed on the case first and the service gave up its
                # retries; 503: the replica is not ready. Both are worth another try.
                if response.status_code not in (409, 502, 503, 504):
                    response.extensions["tries"] = attempt + 1
                    return response
                failure = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as err:
                failure = repr(err)
                with self._lock:
                    self.failovers += 1
            assert time.monotonic() < deadline, f"POST {path}: no replica answered: {failure}"
            time.sleep(min(0.1 * (attempt + 1), 1.0))
        raise AssertionError("unreachable")


@dataclasses.dataclass
class Case:
    """A case acknowledged over HTTP."""

    case_id: str
    case_number: str
    plan: Plan


def application(plan: Plan) -> dict[str, Any]:
    materials = ITEMS[plan.item].materials
    handed = materials if plan.complete else materials[:1]
    return {
        "item_code": plan.item,
        "applicant": {**VALID_APPLICANT, "email": EMAIL},
        "notify_by": ["sms", "email"],
        "materials": [{"code": m.code, "original_checked": True} for m in handed],
    }


def run_case(index: int, intake: Replicas, processing: Replicas) -> Case:
    plan = PLANS[index % len(PLANS)]
    answer = intake.post("/cases", CLERK, application(plan))
    # 200 is the answer to a retry whose first try committed on a replica that was killed
    # before it could answer: the case from the idempotency record, not a second case.
    expected = (201, 200) if answer.extensions["tries"] > 1 else (201,)
    assert answer.status_code in expected, (answer.extensions["tries"], answer.text)
    case_id = answer.json()["case_id"]
    for action, who, body in plan.steps:
        done = processing.post(f"/cases/{case_id}/actions/{action}", who, body)
        assert done.status_code == 200, (action, done.text)
    return Case(case_id, answer.json()["case_number"], plan)


@dataclasses.dataclass
class Cluster:
    """The running parts."""

    nats: devservers.NatsCluster
    services: dict[str, list[ServiceProcess]]
    sandbox: Sandbox
    database_url: str
    audit_key: Path


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    audit_key = ensure_audit_key(tmp_path / "keys" / "audit-ed25519.pem")[0].private_path
    seed_delegations(postgres_url)
    running: dict[str, list[ServiceProcess]] = {name: [] for name in SERVICES}
    with (
        devservers.NatsCluster(tmp_path / "nats", config=session_bus().config_path) as nats,
        ThreadedSandbox() as sandbox,
    ):
        notify = {
            **{k.removeprefix("CASEFLOW_NOTIFY_"): v for k, v in sandbox.environment().items()},
            **NOTIFY,
        }
        extra = {
            "processing": {
                "AUDIT_KEY_FILE": str(audit_key),
                "AUDIT_CHECKPOINT_INTERVAL_SECONDS": "5",
            },
            "notify": notify,
        }
        try:
            for replica, name in itertools.product((1, 2), SERVICES):
                port = devservers.free_port()
                env = service_env(
                    name,
                    postgres_url,
                    nats.url,
                    port,
                    NATS_REPLICAS="3",
                    **extra.get(name, {}),
                )
                running[name].append(
                    start_process(
                        f"{name}-{replica}",
                        [sys.executable, "-m", "shared.cli.main", "serve", name],
                        env,
                        port,
                        tmp_path,
                    )
                )
            for process in itertools.chain(*running.values()):
                wait_ready(process)
            yield Cluster(nats, running, sandbox, postgres_url, audit_key)
        finally:
            for process in itertools.chain(*running.values()):
                if process.proc.poll() is None:
                    process.proc.kill()
                    process.proc.wait()


def kill(process: ServiceProcess) -> None:
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait(10)


# --- What the bus and the database hold -----------------------------------------------------


async def stream_facts(url: str) -> dict[str, Any]:
    """As the operator: each stream's replicas and leader, and every Nats-Msg-Id on the
    event stream (read back by sequence)."""
    nc = await connect_as(url, OPERATOR)
    try:
        js = nc.jetstream()
        facts: dict[str, Any] = {}
        for name in (EVENTS_STREAM, DEPT_STREAM, DLQ_STREAM):
            info = await js.stream_info(name)
            facts[name] = {
                "replicas": info.config.num_replicas,
                "leader": info.cluster.leader if info.cluster else None,
                "messages": info.state.messages,
                "last_seq": info.state.last_seq,
            }
        ids = []
        for seq in range(1, facts[EVENTS_STREAM]["last_seq"] + 1):
            msg = await js.get_msg(EVENTS_STREAM, seq)
            ids.append((msg.headers or {}).get("Nats-Msg-Id"))
        facts["event_ids"] = ids
        return facts
    finally:
        await nc.close()


async def events_unacknowledged(url: str) -> dict[str, int]:
    """Each durable consumer of the events stream → messages not yet acknowledged (the
    types it ignores are acknowledged unread, so they count here, not in its inbox)."""
    nc = await connect_as(url, OPERATOR)
    try:
        js = nc.jetstream()
        found = {}
        for name in ("processing-projection", "notify"):
            info = await js.consumer_info(EVENTS_STREAM, name)
            found[name] = int(info.num_pending) + int(info.num_ack_pending)
        return found
    finally:
        await nc.close()


async def stream_leader(url: str) -> str:
    nc = await connect_as(url, OPERATOR)
    try:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        assert info.cluster is not None and info.cluster.leader, info
        assert info.config.num_replicas == 3, info.config
        return str(info.cluster.leader)
    finally:
        await nc.close()


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of the log, as far as these checks look."""

    event_id: uuid.UUID
    case_id: uuid.UUID
    event_type: str
    case_kind: str
    payload: dict[str, Any]


@dataclasses.dataclass
class Settled:
    """The database's view, read at one moment."""

    statuses: dict[str, str]
    """Application case id → the status its events fold to."""
    events: list[Event]
    handled: dict[str, set[uuid.UUID]]
    """Consumer → the events its inbox holds."""
    deliveries: list[dict[str, Any]]
    relay_holder: str | None

    def of_type(self, *types: str) -> list[Event]:
        return [e for e in self.events if e.event_type in types]

    def pending(self, cases: Sequence[Case]) -> list[str]:
        """What is not yet as it must end (empty once everything settled)."""
        waiting = [
            f"{c.case_number}: {self.statuses.get(c.case_id)} (want {c.plan.status})"
            for c in cases
            if self.statuses.get(c.case_id) != c.plan.status
        ]
        # what each consumer keeps in its inbox: not the types it acknowledges unread
        every = {e.event_id for e in self.events if e.event_type not in NOT_NOTIFIED}
        projected = {
            e.event_id
            for e in self.events
            if e.case_kind in PROJECTED_KINDS and e.event_type not in NOT_WORK
        }
        forwarded = {e.event_id for e in self.of_type("CaseForwarded")}
        for consumer, wanted in (
            ("processing-projection", projected),
            ("notify", every),
            ("processing-dept", forwarded),
        ):
            if missing := wanted - self.handled.get(consumer, set()):
                waiting.append(f"{consumer}: {len(missing)} events not handled yet")
        unsent = Counter(d["status"] for d in self.deliveries if d["status"] != "sent")
        if unsent:
            waiting.append(f"notices not sent: {dict(unsent)}")
        recorded = {e.payload["delivery_id"] for e in self.of_type("NotificationSent")}
        if unrecorded := {str(d["delivery_id"]) for d in self.deliveries} - recorded:
            waiting.append(f"{len(unrecorded)} notices sent but not recorded on their case")
        return waiting


async def read_settled(database_url: str) -> Settled:
    reference = load_reference()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        events_table.c.event_id,
                        events_table.c.case_id,
                        events_table.c.event_type,
                        events_table.c.case_kind,
                        events_table.c.payload,
                    ).order_by(events_table.c.position)
                )
            ).all()
            handled: dict[str, set[uuid.UUID]] = {}
            for consumer, event_id in (
                await conn.execute(sa.select(inbox.c.consumer, inbox.c.event_id))
            ).all():
                handled.setdefault(consumer, set()).add(event_id)
            planned = [dict(r._mapping) for r in (await conn.execute(sa.select(deliveries))).all()]
            holder = (
                await conn.execute(sa.select(relay_checkpoints.c.lease_holder))
            ).scalar_one_or_none()
        from shared.adapters.eventlog import EventLog

        log = EventLog(engine)
        statuses = {}
        for case_id in {r.case_id for r in rows if r.case_kind == "application"}:
            state = fold(await log.read_case(case_id), reference.workflows)
            statuses[str(case_id)] = str(state.status)
    finally:
        await engine.dispose()
    return Settled(
        statuses,
        [Event(r.event_id, r.case_id, r.event_type, r.case_kind, _load(r.payload)) for r in rows],
        handled,
        planned,
        holder,
    )


def _load(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else dict(value)


def audit_verify(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CASEFLOW),
            "audit",
            "verify",
            "--database-url",
            cluster.database_url,
            "--key-file",
            str(cluster.audit_key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- The test -------------------------------------------------------------------------------


def test_cases_survive_a_nats_node_and_a_replica_of_each_service_killed_under_load(
    cluster: Cluster,
) -> None:
    nats = cluster.nats
    intake = Replicas(cluster.services["intake"])
    processing = Replicas(cluster.services["processing"])
    # The station head subscribes an integrator to some events: webhooks are a third
    # channel, signed, with an idempotency key of their own.
    hooked = processing_post_webhook(cluster)
    leader = asyncio.run(stream_leader(nats.url))
    started = time.monotonic()
    killed: dict[str, float] = {}
    cases: list[Case] = []

    def faults() -> None:
        """Kill under load, once enough cases are in."""
        while len(cases) < KILL_NATS_AFTER:
            time.sleep(0.05)
        node = next(n for n in nats.nodes if n.name == leader)
        nats.kill(node)
        killed[f"nats node {node.name} (leader of {EVENTS_STREAM})"] = time.monotonic()
        while len(cases) < KILL_REPLICAS_AFTER:
            time.sleep(0.05)
        for name in SERVICES:
            kill(cluster.services[name][0])
            killed[f"{name}-1"] = time.monotonic()

    killer = threading.Thread(target=faults, daemon=True)
    killer.start()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for case in pool.map(lambda i: run_case(i, intake, processing), range(CASES)):
            cases.append(case)
    killer.join(60)
    loaded = time.monotonic() - started
    assert len(killed) == 1 + len(SERVICES), f"the faults did not all happen: {killed}"
    last_kill = max(killed.values())

    # Everything reaches its expected state.
    settling = time.monotonic()
    pending: list[str] = []

    def all_settled() -> Settled | None:
        settled = asyncio.run(read_settled(cluster.database_url))
        pending[:] = settled.pending(cases)
        return None if pending else settled

    settled = wait_until(
        all_settled,
        what="every case in its expected state",
        timeout=SETTLE_SECONDS,
        interval=1.0,
        detail=lambda: f"still waiting: {pending[:8]}",
    )
    settle_seconds = time.monotonic() - last_kill
    print(
        f"cluster: {CASES} cases offered in {loaded:.1f}s, settled {settle_seconds:.1f}s after "
        f"the last kill ({time.monotonic() - settling:.1f}s after the load)",
        flush=True,
    )

    # Every case acknowledged over HTTP is in the log, once, in the state its plan ends in.
    acknowledged = {c.case_id for c in cases}
    assert len(acknowledged) == CASES
    received = settled.of_type("CaseReceived")
    assert Counter(str(e.case_id) for e in received) == Counter(acknowledged), "lost or doubled"
    # Case numbers per station and year: 1, 2, 3… with no gap (none drawn twice).
    by_prefix: dict[str, list[int]] = {}
    for event in received:
        prefix, _, serial = event.payload["case_number"].rpartition("-")
        by_prefix.setdefault(prefix, []).append(int(serial))
    for prefix, serials in by_prefix.items():
        assert sorted(serials) == list(range(1, len(serials) + 1)), prefix
    assert sorted(c.case_number for c in cases) == sorted(
        e.payload["case_number"] for e in received
    )

    # Every event acknowledged by every consumer, those it ignores too.
    unacknowledged: dict[str, int] = {}

    def all_acknowledged() -> bool:
        unacknowledged.update(asyncio.run(events_unacknowledged(nats.url)))
        return not any(unacknowledged.values())

    wait_until(
        all_acknowledged,
        what="every event acknowledged by each consumer",
        timeout=60,
        interval=1.0,
        detail=lambda: f"unacknowledged: {unacknowledged}",
    )

    # Each event on the stream once (Nats-Msg-Id = event id), and nothing else there.
    facts = asyncio.run(stream_facts(nats.url))
    stream_ids = Counter(facts["event_ids"])
    twice = [event_id for event_id, n in stream_ids.items() if n > 1]
    assert not twice, f"{len(twice)} events published twice"
    assert set(stream_ids) == {str(e.event_id) for e in settled.events}
    for name in (EVENTS_STREAM, DEPT_STREAM, DLQ_STREAM):
        assert facts[name]["replicas"] == 3, facts[name]
    assert facts[EVENTS_STREAM]["leader"] != leader, "the dead node still leads the stream"
    # One department request per forwarded case (the stream drops a repeat by its id).
    forwarded = settled.of_type("CaseForwarded")
    assert facts[DEPT_STREAM]["messages"] == len(forwarded) > 0
    assert facts[DLQ_STREAM]["messages"] == 0, "an event was dead-lettered"

    # Every notice planned once, sent, recorded on its case once, and received once.
    planned = Counter((d["event_id"], d["channel"], d["audience"]) for d in settled.deliveries)
    assert max(planned.values()) == 1, "a notice was planned twice"
    sent = [e.payload["delivery_id"] for e in settled.of_type("NotificationSent")]
    assert Counter(sent) == Counter(str(d["delivery_id"]) for d in settled.deliveries)
    by_channel = Counter(d["channel"] for d in settled.deliveries)
    sandbox = cluster.sandbox
    webhooks = [c for c in sandbox.webhooks.received if c.path == "/caseflow"]
    assert len(sandbox.mailbox.messages) == by_channel["email"] > 0
    assert len(sandbox.sms.received) == by_channel["sms"] > 0
    assert len(webhooks) == by_channel["webhook"] == len(settled.of_type(*hooked))
    # A receiver sees a key again only when its delivery was attempted again: a notice the
    # killed notify replica had handed to a receiver but not yet recorded as sent is sent
    # again once its claim runs out (the send/record window), and so is one whose attempt
    # timed out after the receiver took it (this test loads the machine). Each attempt is
    # counted in the delivery's row, across replicas (fenced by the lease's owner); a key
    # arriving more often than its delivery was attempted is a send outside any attempt: a
    # bug. The receiver keeps one (same Message-ID, SessionContext, webhook-id).
    attempts = {str(d["delivery_id"]): int(d["attempts"]) for d in settled.deliveries}
    repeated = Counter(
        key.strip("<>").removesuffix("@caseflow")
        for key in (*sandbox.mailbox.repeated, *sandbox.sms.repeated, *sandbox.webhooks.repeated)
    )
    beyond = {
        key: (1 + count, attempts.get(key, 0))
        for key, count in repeated.items()
        if 1 + count > attempts.get(key, 0)
    }
    assert not beyond, f"arrivals beyond attempts (arrivals, attempts): {beyond}"
    repeats = {
        "email": sandbox.mailbox.duplicates,
        "sms": sandbox.sms.duplicates,
        "webhook": sandbox.webhooks.duplicates,
    }
    assert sum(repeats.values()) == sum(repeated.values())

    verified = audit_verify(cluster)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    figures = {
        "cases": CASES,
        "events": len(settled.events),
        "notices": dict(by_channel),
        "load_seconds": round(loaded, 1),
        "settle_seconds_after_last_kill": round(settle_seconds, 1),
        "killed": sorted(killed),
        "http_failovers": intake.failovers + processing.failovers,
        "stream_leader": {"before": leader, "after": facts[EVENTS_STREAM]["leader"]},
        "repeats_at_receivers": repeats,
        "deliveries_attempted_again": sum(1 for n in attempts.values() if n > 1),
        "relay_lease_holder_now": settled.relay_holder,
    }
    print("cluster figures: " + json.dumps(figures), flush=True)


def processing_post_webhook(cluster: Cluster) -> set[str]:
    """Subscribe the sandbox's webhook receiver to a few event types (as the station head,
    through a notify replica); the types."""
    types = {"CaseReceived", "CaseForwarded", "CaseDelivered"}
    notify = cluster.services["notify"][1]
    response = httpcalls.post(
        f"{notify.base_url}/webhooks",
        json={"url": cluster.sandbox.webhooks.endpoint("/caseflow"), "event_types": sorted(types)},
        headers={**HEAD, "Idempotency-Key": uuid.uuid4().hex},
        timeout=20,
    )
    assert response.status_code == 201, response.text
    cluster.sandbox.webhooks.add_secret(response.json()["secret"])
    return types
