"""Notices over real channels, end to end: a case walked through its lifecycle on the real
stack leaves exactly the expected emails in an SMTP server, requests at an SMS gateway and
signed webhook calls, each once — also with notify killed in the middle of a send and
started again — and the case's history lists every one. Failing channels end in
``NotificationFailed`` and a dead letter that the API and the CLI re-drive.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from services.notify.sandbox import Sandbox
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from tests.services import (
    CLERK,
    HEAD,
    REVIEWER,
    VALID_APPLICANT,
    VALID_APPLICATION,
    ServiceProcess,
    ThreadedSandbox,
    running_stack,
    service_env,
    start_process,
    wait_ready,
)

pytestmark = [pytest.mark.nats]

EMAIL = "wang.xiuying@example.cn"
APPLICANT_EVENTS = {"CaseReceived", "CaseAccepted", "CaseApproved", "CaseDelivered"}
"""What the applicant of a station-completed item hears about on the happy path (the
issue: on receipt, acceptance, decision and delivery)."""

FAST_RETRIES = {
    "DISPATCH__MAX_ATTEMPTS": "3",
    "DISPATCH__WAIT_INITIAL_SECONDS": "0.05",
    "DISPATCH__WAIT_MAX_SECONDS": "0.2",
    "DISPATCH__WAIT_JITTER_SECONDS": "0.05",
    "DISPATCH__POLL_SECONDS": "0.2",
    "DISPATCH__SMS__TIMEOUT_SECONDS": "1.5",
    "DISPATCH__EMAIL__TIMEOUT_SECONDS": "3",
    "DISPATCH__WEBHOOK__TIMEOUT_SECONDS": "3",
}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with ThreadedSandbox() as running:
        yield running


def notify_extra(sandbox: Sandbox) -> dict[str, str]:
    """Notify's settings pointing at the sandbox, without the ``CASEFLOW_NOTIFY_`` prefix
    (``running_stack`` adds each service's own)."""
    env = {k.removeprefix("CASEFLOW_NOTIFY_"): v for k, v in sandbox.environment().items()}
    return {**env, **FAST_RETRIES}


def post(url: str, who: Any, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpcalls.post(
        url, json=body or {}, headers={**who, "Idempotency-Key": uuid.uuid4().hex}, timeout=15
    )


def act(processing: str, case_id: str, action: str, who: Any, **body: Any) -> None:
    response = post(f"{processing}/cases/{case_id}/actions/{action}", who, body)
    assert response.status_code == 200, response.text


def events_of(intake: str, case_id: str) -> list[dict[str, Any]]:
    response = httpcalls.get(f"{intake}/cases/{case_id}/events", headers=CLERK, timeout=10)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def deliveries_of(notify: str, case_id: str) -> list[dict[str, Any]]:
    response = httpcalls.get(f"{notify}/cases/{case_id}/deliveries", headers=HEAD, timeout=10)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def settled(notify: str, case_id: str, case_events: int) -> list[dict[str, Any]] | None:
    """The case's deliveries once every event was planned (a webhook per event, the
    applicant's delivery notice) and none is pending."""
    found = deliveries_of(notify, case_id)
    webhooks = sum(d["channel"] == "webhook" for d in found)
    told_of_delivery = any(
        d["audience"] == "applicant" and d["event_type"] == "CaseDelivered" for d in found
    )
    if webhooks < case_events or not told_of_delivery:
        return None
    return None if any(d["status"] == "pending" for d in found) else found


def apply(intake: str, **extra: Any) -> str:
    body = {
        **VALID_APPLICATION,
        "applicant": {**VALID_APPLICANT, "email": EMAIL},
        "notify_by": ["sms", "email"],
        **extra,
    }
    response = post(f"{intake}/cases", CLERK, body)
    assert response.status_code == 201, response.text
    case_id: str = response.json()["case_id"]
    return case_id


def subscribe(notify: str, sandbox: Sandbox) -> str:
    response = post(
        f"{notify}/webhooks",
        HEAD,
        {"url": sandbox.webhooks.endpoint("/caseflow"), "event_types": ["*"]},
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    assert secret.startswith("whsec_")
    sandbox.webhooks.add_secret(secret)
    return secret


def restart(stack: dict[str, Any], database_url: str, nats_url: str, extra: dict[str, str]) -> None:
    """Start notify again on a new port (the old process is gone)."""
    old = stack["notify"]
    port = devservers.free_port()
    stack["notify"] = start_process(
        "notify",
        [sys.executable, "-m", "shared.cli.main", "serve", "notify"],
        service_env("notify", database_url, nats_url, port, **extra),
        port,
        Path(old.log_path).parent,
    )
    wait_ready(stack["notify"])


def test_lifecycle_tells_each_person_once_across_a_notify_crash(
    db_url: str, nats_url: str, tmp_path: Path, sandbox: Sandbox
) -> None:
    # More attempts than the failure tests: on a loaded machine a few sends in a row may
    # time out, and this test expects every notice sent in the end.
    extra = {**notify_extra(sandbox), "DISPATCH__MAX_ATTEMPTS": "6"}
    # The killed notify's claims are taken over after 5 s, not the default 15 s.
    extra |= {"DISPATCH__LEASE_SECONDS": "5", "DISPATCH__TAKEOVER_GRACE_SECONDS": "5"}
    with running_stack(db_url, nats_url, tmp_path, **extra) as stack:
        intake = stack["intake"].base_url
        processing = stack["processing"].base_url
        secret = subscribe(stack["notify"].base_url, sandbox)

        # The gateway holds the first SMS (the receipt or the acceptance) longer than
        # notify waits: notify is killed while that send is in flight.
        sandbox.sms.hang_next(1, seconds=2.5)
        case_id = apply(intake)
        wait_until(lambda: sandbox.sms.calls, what="the first SMS request", timeout=30)
        stack["notify"].proc.send_signal(signal.SIGKILL)
        stack["notify"].proc.wait(10)
        # Meanwhile the case moves on; notify is not there to hear it.
        act(processing, case_id, "start_review", REVIEWER)
        restart(stack, db_url, nats_url, extra)
        notify = stack["notify"].base_url
        act(
            processing,
            case_id,
            "complete_review",
            REVIEWER,
            recommendation="approve",
            opinion="材料齐全",
        )
        act(processing, case_id, "approve", HEAD)
        act(processing, case_id, "deliver", CLERK, method="in_person")

        def delivered() -> list[dict[str, Any]] | None:
            events = events_of(intake, case_id)
            return events if any(e["event_type"] == "CaseDelivered" for e in events) else None

        history = wait_until(delivered, what="delivery", timeout=30)
        case_events = [e for e in history if not e["event_type"].startswith("Notification")]
        deliveries = wait_until(
            lambda: settled(notify, case_id, len(case_events)),
            what="every notice sent",
            timeout=90,
        )
        assert {d["status"] for d in deliveries} == {"sent"}, deliveries

        def recorded() -> list[dict[str, Any]] | None:
            events = events_of(intake, case_id)
            sent = sum(e["event_type"] == "NotificationSent" for e in events)
            return events if sent >= len(deliveries) else None

        history = wait_until(recorded, what="the case to record every notice", timeout=30)

    by_channel: dict[str, list[dict[str, Any]]] = {"email": [], "sms": [], "webhook": []}
    for d in deliveries:
        by_channel[d["channel"]].append(d)

    # The applicant: SMS and email (both chosen) on receipt, acceptance, decision, delivery.
    applicant = [d for d in deliveries if d["audience"] == "applicant"]
    assert Counter((d["channel"], d["event_type"]) for d in applicant) == Counter(
        {(c, e): 1 for c in ("sms", "email") for e in APPLICANT_EVENTS}
    )
    # Staff hear of their new tasks by email: the reviewer of the accepted case, the head
    # of the reviewed one, the clerk of the approved one.
    staff = {(d["audience"], d["event_type"]) for d in deliveries if d["audience"] != "applicant"}
    assert ("staff:xuefeng_station:reviewer", "CaseAccepted") in staff, staff
    assert ("staff:xuefeng_station:window_clerk", "CaseApproved") in staff, staff

    # Email: exactly one message per email delivery, none other, Message-ID = delivery id.
    mail = sandbox.mailbox.messages
    assert sorted(m["Message-ID"] for m in mail) == sorted(
        f"<{d['delivery_id']}@caseflow>" for d in by_channel["email"]
    )
    for message in mail:
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        for secret_value in (VALID_APPLICANT["phone"], VALID_APPLICANT["id_number"]):
            assert secret_value not in str(message["Subject"]) and secret_value not in text

    # SMS: one per delivery, keyed by its id; the crash made notify send one twice, and
    # the gateway saw the same key both times.
    sms = sandbox.sms.received
    assert sorted(s.session_context for s in sms) == sorted(
        d["delivery_id"] for d in by_channel["sms"]
    )
    assert all(s.phone == "+86" + VALID_APPLICANT["phone"] for s in sms)
    repeated = [c for c in sandbox.sms.calls if c.duplicate]
    assert repeated, "the send cut off by the crash was not repeated after the restart"
    assert {c.session_context for c in repeated} <= {s.session_context for s in sms}

    # Webhooks: one signed call per event of the case (notify's own records excepted).
    calls = sandbox.webhooks.received
    assert sorted(c.webhook_id for c in calls) == sorted(
        d["delivery_id"] for d in by_channel["webhook"]
    )
    assert sorted(c.json()["type"] for c in calls) == sorted(e["event_type"] for e in case_events)
    verifier = Webhook(secret)
    for call in calls:
        verifier.verify(
            call.body,
            {
                "webhook-id": call.webhook_id,
                "webhook-timestamp": str(call.timestamp),
                "webhook-signature": call.signature,
            },
        )
        assert VALID_APPLICANT["id_number"] not in call.body.decode()

    # The case's history lists every notice once, masked.
    sent = [e for e in history if e["event_type"] == "NotificationSent"]
    assert sorted(e["payload"]["delivery_id"] for e in sent) == sorted(
        d["delivery_id"] for d in deliveries
    )
    for e in sent:
        assert VALID_APPLICANT["phone"] not in str(e["payload"])
        assert EMAIL not in str(e["payload"])


def test_failing_channel_ends_in_a_dead_letter_that_can_be_redriven(
    db_url: str, nats_url: str, tmp_path: Path, sandbox: Sandbox
) -> None:
    extra = notify_extra(sandbox)
    with running_stack(db_url, nats_url, tmp_path, **extra) as stack:
        intake = stack["intake"].base_url
        notify = stack["notify"].base_url
        sandbox.sms.fail_next(1000, status=503)  # the gateway is down
        case_id = apply(intake, notify_by=["sms"])

        def failed() -> list[dict[str, Any]]:
            return [d for d in deliveries_of(notify, case_id) if d["status"] == "failed"]

        def two_failed() -> list[dict[str, Any]] | None:
            found = failed()
            return found if len(found) == 2 else None

        dead = wait_until(two_failed, what="two dead letters", timeout=60, interval=0.2)
        assert {d["event_type"] for d in dead} == {"CaseReceived", "CaseAccepted"}
        assert all(d["attempts"] == 3 and "503" in (d["last_error"] or "") for d in dead)
        # Email was not held up by the failing gateway: the reviewer heard of the new task.
        mail = wait_until(lambda: sandbox.mailbox.messages, what="the reviewer's email", timeout=30)
        assert [str(m["To"]) for m in mail] == ["xf-review@xuefeng.banqiao.gov.example"]

        listed = httpcalls.get(f"{notify}/dead-letters", headers=HEAD, timeout=10).json()
        assert {d["delivery_id"] for d in listed["dead_letters"]} >= {
            d["delivery_id"] for d in dead
        }
        history = events_of(intake, case_id)
        failures = [e for e in history if e["event_type"] == "NotificationFailed"]
        assert sorted(e["payload"]["delivery_id"] for e in failures) == sorted(
            d["delivery_id"] for d in dead
        )
        assert all(e["payload"]["recipient"] == "138****5678" for e in failures)

        # The gateway is back: one dead letter over the API, the other from the CLI.
        sandbox.sms.clear_faults()
        first, second = dead
        answer = post(
            f"{notify}/dead-letters/redrive", HEAD, {"delivery_ids": [first["delivery_id"]]}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["redriven"] == [first["delivery_id"]]
        cli = subprocess.run(
            [sys.executable, "-m", "shared.cli.main", "notify", "redrive", second["delivery_id"]],
            env={"CASEFLOW_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr + cli.stdout
        wait_until(
            lambda: all(d["status"] == "sent" for d in deliveries_of(notify, case_id)),
            what="the re-driven notices",
            timeout=60,
        )
        assert sorted(s.session_context for s in sandbox.sms.received) == sorted(
            d["delivery_id"] for d in dead
        )
        history = events_of(intake, case_id)
        sms = [
            e["event_type"]
            for e in history
            if e["event_type"].startswith("Notification") and e["payload"]["channel"] == "sms"
        ]
        # each SMS given up on, then sent when re-driven: both facts stay in the record
        assert sms == ["NotificationFailed"] * 2 + ["NotificationSent"] * 2


def test_webhooks_on_the_embedded_default(
    sqlite_url: str, nats_url: str, tmp_path: Path, sandbox: Sandbox
) -> None:
    """Webhook subscriptions through the real stack on SQLite, as ``caseflow up`` runs it
    (one stack for both parts)."""
    with running_stack(sqlite_url, nats_url, tmp_path, **notify_extra(sandbox)) as stack:
        managed_by_the_station_head(stack, sandbox)
        reaching_no_further_than_the_sandbox_receiver(stack, sandbox, nats_url)


def managed_by_the_station_head(stack: dict[str, ServiceProcess], sandbox: Sandbox) -> None:
    """Only a station head subscribes, with event types that exist; paused, nothing is
    planned for it; active, each call comes once, signed; deleted, it is gone."""
    intake = stack["intake"].base_url
    notify = stack["notify"].base_url
    hooks = f"{notify}/webhooks"
    url = sandbox.webhooks.endpoint("/managed")
    # Only a station head (or an operator) subscribes; types are checked.
    denied = post(hooks, CLERK, {"url": url, "event_types": ["CaseAccepted"]})
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("application/problem+json")
    typo = post(hooks, HEAD, {"url": url, "event_types": ["CaseAcepted"]})
    assert typo.status_code == 422 and "CaseAcepted" in typo.json()["detail"]
    created = post(hooks, HEAD, {"url": url, "event_types": ["CaseAccepted"]})
    assert created.status_code == 201, created.text
    sub = created.json()
    sandbox.webhooks.add_secret(sub["secret"])
    listed = httpcalls.get(hooks, headers=HEAD, timeout=10).json()["subscriptions"]
    assert [s["subscription_id"] for s in listed] == [sub["subscription_id"]]
    assert "secret" not in listed[0]

    def calls() -> list[str]:
        return [c.json()["data"]["case_id"] for c in sandbox.webhooks.received]

    # Paused: nothing is planned for it.
    paused = httpcalls.patch(
        f"{hooks}/{sub['subscription_id']}", json={"status": "paused"}, headers=HEAD
    )
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    quiet = apply(intake)
    wait_until(
        lambda: any(d["event_type"] == "CaseAccepted" for d in deliveries_of(notify, quiet)),
        what="the acceptance's other notices",
        timeout=30,
    )
    # Active again: the next acceptance is posted, once, signed.
    httpcalls.patch(f"{hooks}/{sub['subscription_id']}", json={"status": "active"}, headers=HEAD)
    heard = apply(intake)
    wait_until(lambda: heard in calls(), what="the webhook call", timeout=30)
    assert quiet not in calls() and calls().count(heard) == 1

    deleted = httpcalls.delete(f"{hooks}/{sub['subscription_id']}", headers=HEAD, timeout=10)
    assert deleted.status_code == 200
    assert httpcalls.get(hooks, headers=HEAD, timeout=10).json()["subscriptions"] == []
    gone = httpcalls.get(f"{hooks}/{sub['subscription_id']}", headers=HEAD, timeout=10)
    assert gone.status_code == 404


def reaching_no_further_than_the_sandbox_receiver(
    stack: dict[str, ServiceProcess], sandbox: Sandbox, nats_url: str
) -> None:
    """On the real stack (``caseflow serve`` with the sandbox's environment, as ``caseflow
    up`` runs it): the services, NATS and every spelling of loopback are refused at
    registration; the sandbox's receiver alone is allowed (127.1 is 127.0.0.1);
    its 410 pauses the subscription, and resuming sends what was held, signed."""
    intake = stack["intake"].base_url
    notify = stack["notify"].base_url
    hooks = f"{notify}/webhooks"
    earlier = len(sandbox.webhooks.received)  # the calls of the part before
    receiver = httpx.URL(sandbox.webhooks.endpoint())
    nats = httpx.URL(nats_url.replace("nats://", "http://"))
    inside = [
        f"{notify}/webhooks",
        f"{intake}/cases",
        f"http://127.0.0.1:{nats.port}/",
        f"http://localhost:{httpx.URL(intake).port}/cases",
        f"http://2130706433:{httpx.URL(notify).port}/",
        f"http://[::ffff:127.0.0.1]:{receiver.port}/hooks",  # the receiver, by IPv6
        f"http://0.0.0.0:{receiver.port}/hooks",
        f"http://[::1]:{receiver.port}/hooks",
        "http://169.254.169.254/latest/meta-data/",
    ]
    for url in inside:
        refused = post(hooks, HEAD, {"url": url, "event_types": ["*"]})
        assert refused.status_code == 422, (url, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in refused.json()["errors"]] == ["url"]
    assert httpcalls.get(hooks, headers=HEAD, timeout=10).json()["subscriptions"] == []

    # The receiver's address and port, however spelled.
    url = f"http://127.1:{receiver.port}/gone-then-back"
    created = post(hooks, HEAD, {"url": url, "event_types": ["CaseReceived"]})
    assert created.status_code == 201, created.text
    sub = created.json()
    sandbox.webhooks.add_secret(sub["secret"])
    sandbox.webhooks.fail_next(1, 410)
    first = apply(intake)

    def paused() -> dict[str, Any] | None:
        shown = httpcalls.get(f"{hooks}/{sub['subscription_id']}", headers=HEAD, timeout=10)
        found: dict[str, Any] = shown.json()
        return found if found["status"] == "paused" else None

    shown = wait_until(paused, what="the 410 to pause the subscription", timeout=60)
    assert "410 Gone" in shown["status_reason"]
    assert "sandbox failure" not in shown["status_reason"]  # what the receiver said
    (held,) = [d for d in deliveries_of(notify, first) if d["channel"] == "webhook"]
    assert held["status"] == "pending" and "410 Gone" in held["last_error"]
    quiet = apply(intake)  # while paused: not planned for the subscription
    wait_until(
        lambda: any(d["event_type"] == "CaseAccepted" for d in deliveries_of(notify, quiet)),
        what="the paused-time case's other notices",
        timeout=30,
    )
    resumed = httpcalls.patch(
        f"{hooks}/{sub['subscription_id']}", json={"status": "active"}, headers=HEAD
    )
    assert resumed.status_code == 200 and resumed.json()["status_reason"] is None
    after = apply(intake)

    def calls() -> set[str]:
        return {c.json()["data"]["case_id"] for c in sandbox.webhooks.received}

    wait_until(lambda: {first, after} <= calls(), what="the held call and the next one", timeout=60)
    assert quiet not in calls()
    assert all(c.path == "/gone-then-back" for c in sandbox.webhooks.received[earlier:])
    assert sandbox.webhooks.rejected == 0  # every call signed with the secret
