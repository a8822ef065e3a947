"""The bus as a boundary: who gets in, and what each user may publish and subscribe to.

A real nats-server with the users ``shared.adapters.bus.access`` renders (the session's services,
relay and operator, and department credentials issued here), tried the way an outsider
or a department system gone wrong would: anonymously, with a wrong seed, and on every
subject that is not theirs. Each refusal is the server's own (a permissions violation or
an authorization violation), and nothing refused reaches a stream.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import api

from services.processing.dept import declare_department_consumers, department_consumer
from shared.adapters.bus.credentials import new_seed
from shared.adapters.bus.streams import DEPT_STREAM, EVENTS_STREAM, declare_streams
from shared.devtools.waiting import eventually
from tests.services import (
    BusServer,
    bus_server,
    connect_as,
    connect_department,
    issue_department,
    revoke_department,
    try_connect,
)

DEPARTMENTS = ("hc_forestry", "hc_hrss")


class Watched:
    """A connection and the errors the server sent it (permissions violations arrive
    asynchronously: the connection stays open)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def error(self, err: Exception) -> None:
        self.errors.append(str(err))

    async def violation(self, what: str, timeout: float = 5.0) -> str:
        """The server's permissions violation naming ``what`` (waits for it)."""

        def found() -> str | None:
            violations = (e for e in self.errors if "permissions violation" in e.lower())
            return next((e for e in violations if what.lower() in e.lower()), None)

        return await eventually(
            found,
            what=f"a permissions violation for {what}",
            timeout=timeout,
            detail=lambda: f"errors: {self.errors}",
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusServer]:
    with bus_server(tmp_path_factory.mktemp("bus")) as bus:
        yield bus


@pytest.fixture(scope="module")
def departments(server: BusServer) -> dict[str, dict[str, Any]]:
    """A credential for forestry's system, a second one for forestry, and one for HRSS."""
    return {
        "forestry": issue_department(server, "hc_forestry"),
        "forestry-2": issue_department(server, "hc_forestry"),
        "hrss": issue_department(server, "hc_hrss"),
    }


@pytest.fixture
async def processing(server: BusServer) -> AsyncIterator[NATS]:
    """Processing's connection: the streams and the authorities' consumers declared."""
    nc = await connect_as(server.url, "processing")
    js = nc.jetstream()
    await declare_streams(js)
    assert await declare_department_consumers(js, DEPARTMENTS) == []
    yield nc
    await nc.close()


@pytest.fixture
async def operator(server: BusServer) -> AsyncIterator[NATS]:
    nc = await connect_as(server.url, "operator")
    yield nc
    await nc.close()


@pytest.fixture
async def as_department(
    departments: dict[str, dict[str, Any]], processing: NATS
) -> AsyncIterator[Callable[[str], Awaitable[Watched]]]:
    """Connect as one of the department credentials, its server errors watched."""
    opened: list[NATS] = []

    async def open_(which: str) -> Watched:
        watched = Watched()
        watched.nc = await connect_department(departments[which], error_cb=watched.error)
        opened.append(watched.nc)
        return watched

    yield open_
    for nc in opened:
        await nc.close()


async def _stored(operator: NATS, stream: str, subject: str) -> int:
    info = await operator.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def _refused_request(watched: Watched, subject: str, call: Awaitable[Any]) -> None:
    """A JetStream API call the server drops: the client hears no answer, the server says
    why."""
    with pytest.raises((nats.errors.TimeoutError, TimeoutError, nats.errors.NoRespondersError)):
        await call
    await watched.violation(subject)


# -- who gets in -----------------------------------------------------------------------------


async def test_an_anonymous_client_is_refused(server: BusServer) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization violation"):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_seed_the_server_does_not_know_is_refused(
    server: BusServer, departments: dict[str, dict[str, Any]]
) -> None:
    stranger = {**departments["forestry"], "seed": new_seed()}
    refused = await try_connect(stranger)
    assert refused is not None and "authorization violation" in refused.lower()
    assert await try_connect(departments["forestry"]) is None  # the real one gets in


async def test_a_revoked_credential_is_refused_after_the_reload(
    server: BusServer, departments: dict[str, dict[str, Any]]
) -> None:
    file = issue_department(server, "hc_forestry")
    connected = await connect_department(file, allow_reconnect=False)
    revoke_department(server, file["name"])

    # Until the reload, the credential gets in; after it, the server says why it refuses
    # (on a loaded machine it may close the socket before the client reads the reason).
    async def refused() -> str | None:
        answer = await try_connect(file)
        return answer if answer and "authorization violation" in answer.lower() else None

    await eventually(refused, what="the revoked credential refused", timeout=15, interval=0.1)
    # The server also dropped the connection it had.
    await eventually(
        lambda: not connected.is_connected, what="the revoked connection dropped", timeout=15
    )
    await connected.close()
    assert await try_connect(departments["forestry"]) is None  # the others are untouched


# -- what a department may read --------------------------------------------------------------


async def test_a_department_reads_its_own_requests_and_answers_for_its_authority(
    as_department: Callable[[str], Awaitable[Watched]], processing: NATS, operator: NATS
) -> None:
    case_id = str(uuid.uuid4())
    await processing.jetstream().publish(
        "caseflow.dept.hc_forestry.requests",
        json.dumps({"case_id": case_id}).encode(),
        headers={"Nats-Msg-Id": case_id},
    )
    forestry = await as_department("forestry")
    assert forestry.nc is not None
    js = forestry.nc.jetstream()
    info = await js.consumer_info(DEPT_STREAM, "dept_hc_forestry")
    assert info.config.filter_subject == "caseflow.dept.hc_forestry.requests"
    sub = await js.pull_subscribe_bind("dept_hc_forestry", stream=DEPT_STREAM)
    msgs = await sub.fetch(10, timeout=5)
    assert case_id in [json.loads(m.data)["case_id"] for m in msgs]
    for msg in msgs:
        await msg.ack_sync()
    subject = "caseflow.dept.hc_forestry.answers." + (await _name(forestry))
    ack = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": f"ok-{case_id}"})
    assert ack.stream == DEPT_STREAM
    assert forestry.errors == []


async def _name(watched: Watched) -> str:
    assert watched.nc is not None and watched.nc._inbox_prefix
    return bytes(watched.nc._inbox_prefix).decode().removeprefix("_INBOX.")


async def test_a_department_cant_subscribe_to_events_other_requests_or_other_inboxes(
    as_department: Callable[[str], Awaitable[Watched]], processing: NATS
) -> None:
    forestry = await as_department("forestry")
    hrss = await as_department("hrss")
    assert forestry.nc is not None
    got: list[str] = []

    async def heard(msg: Any) -> None:
        got.append(msg.subject)

    theirs = f"_INBOX.{await _name(hrss)}.x"
    for subject in ("caseflow.events.>", "caseflow.dept.hc_hrss.requests", theirs, ">"):
        await forestry.nc.subscribe(subject, cb=heard)
        await forestry.violation(f'Subscription to "{subject}"')
    # Nothing published there reaches it.
    await processing.jetstream().publish("caseflow.dept.hc_hrss.requests", b"{}")
    await asyncio.sleep(0.3)
    assert got == []


async def test_a_department_cant_pull_from_another_authoritys_consumer(
    as_department: Callable[[str], Awaitable[Watched]], processing: NATS
) -> None:
    forestry = await as_department("forestry")
    assert forestry.nc is not None
    js = forestry.nc.jetstream(timeout=1.0)
    sub = await js.pull_subscribe_bind("dept_hc_hrss", stream=DEPT_STREAM)
    with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
        await sub.fetch(1, timeout=1.0)
    await forestry.violation("$JS.API.CONSUMER.MSG.NEXT.CASEFLOW_DEPT.dept_hc_hrss")
    await _refused_request(
        forestry,
        "$JS.API.CONSUMER.INFO.CASEFLOW_DEPT.dept_hc_hrss",
        js.consumer_info(DEPT_STREAM, "dept_hc_hrss"),
    )


async def test_a_department_cant_create_or_delete_consumers_or_streams(
    as_department: Callable[[str], Awaitable[Watched]], operator: NATS
) -> None:
    forestry = await as_department("forestry")
    assert forestry.nc is not None
    js = forestry.nc.jetstream(timeout=1.0)
    # A consumer of its own could name any filter (another authority's requests) or push
    # messages anywhere: it may create none, not even on its own requests.
    own = api.ConsumerConfig(durable_name="mine", filter_subject="caseflow.dept.hc_hrss.requests")
    await _refused_request(
        forestry,
        "$JS.API.CONSUMER.DURABLE.CREATE.CASEFLOW_DEPT.mine",
        js.add_consumer(DEPT_STREAM, own),
    )
    await _refused_request(
        forestry,
        "$JS.API.CONSUMER.CREATE.CASEFLOW_DEPT.dept_hc_forestry",
        js.add_consumer(DEPT_STREAM, department_consumer("hc_forestry")),
    )
    await _refused_request(
        forestry, "$JS.API.CONSUMER.CREATE.CASEFLOW_EVENTS", js.add_consumer(EVENTS_STREAM)
    )
    await _refused_request(
        forestry,
        "$JS.API.CONSUMER.DELETE.CASEFLOW_DEPT.dept_hc_forestry",
        js.delete_consumer(DEPT_STREAM, "dept_hc_forestry"),
    )
    await _refused_request(
        forestry, "$JS.API.STREAM.DELETE.CASEFLOW_EVENTS", js.delete_stream(EVENTS_STREAM)
    )
    await _refused_request(
        forestry,
        "$JS.API.STREAM.CREATE.MINE",
        js.add_stream(api.StreamConfig(name="MINE", subjects=["caseflow.dept.hc_hrss.>"])),
    )
    # All still there, unchanged.
    ojs = operator.jetstream()
    assert (await ojs.consumer_info(DEPT_STREAM, "dept_hc_forestry")).config.filter_subject == (
        "caseflow.dept.hc_forestry.requests"
    )
    assert (await ojs.stream_info(EVENTS_STREAM)).config.name == EVENTS_STREAM
    with pytest.raises(nats.js.errors.NotFoundError):
        await ojs.consumer_info(DEPT_STREAM, "mine")


# -- what a department may write -------------------------------------------------------------


async def test_a_department_cant_publish_events_or_answer_for_another(
    as_department: Callable[[str], Awaitable[Watched]],
    departments: dict[str, dict[str, Any]],
    operator: NATS,
) -> None:
    forestry = await as_department("forestry")
    assert forestry.nc is not None
    forged = json.dumps(
        {"case_id": str(uuid.uuid4()), "outcome": "approve", "officer": "nobody"}
    ).encode()
    other_name = departments["forestry-2"]["name"]
    hrss_name = departments["hrss"]["name"]
    for subject in (
        "caseflow.events.application.CaseApproved",
        f"caseflow.dept.hc_hrss.answers.{hrss_name}",  # another authority's answers
        f"caseflow.dept.hc_forestry.answers.{other_name}",  # its authority, another's name
        "caseflow.dept.hc_forestry.answers",  # the subject before credentials
        "caseflow.dept.hc_forestry.requests",  # a forged request
        "caseflow.dlq.processing-dept-answers",
    ):
        await forestry.nc.publish(subject, forged)
        await forestry.violation(f'Publish to "{subject}"')
    await forestry.nc.flush()
    await asyncio.sleep(0.3)
    assert await _stored(operator, EVENTS_STREAM, "caseflow.events.application.CaseApproved") == 0
    assert await _stored(operator, DEPT_STREAM, f"caseflow.dept.hc_hrss.answers.{hrss_name}") == 0
    assert await _stored(operator, DEPT_STREAM, f"caseflow.dept.*.answers.{other_name}") == 0


# -- caseflow's own users ------------------------------------------------------------------------


async def test_only_the_relay_publishes_events(server: BusServer, operator: NATS) -> None:
    subject = f"caseflow.events.application.Probe{uuid.uuid4().hex[:8]}"
    for user in ("intake", "processing", "notify", "operator"):
        watched = Watched()
        nc = await connect_as(server.url, user, error_cb=watched.error)
        try:
            await nc.publish(subject, b"{}")
            await watched.violation(f'Publish to "{subject}"')
            with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
                await nc.jetstream(timeout=1.0).publish(subject, b"{}")
        finally:
            await nc.close()
    assert await _stored(operator, EVENTS_STREAM, subject) == 0
    relay = await connect_as(server.url, "relay")
    try:
        ack = await relay.jetstream().publish(subject, b"{}")
        assert ack.stream == EVENTS_STREAM
    finally:
        await relay.close()
    assert await _stored(operator, EVENTS_STREAM, subject) == 1


async def test_a_service_reads_only_its_own_consumers_and_inbox(
    server: BusServer, processing: NATS
) -> None:
    watched = Watched()
    notify = await connect_as(server.url, "notify", error_cb=watched.error)
    try:
        js = notify.jetstream(timeout=1.0)
        # Not processing's consumers, not a department's, not another service's inbox.
        sub = await js.pull_subscribe_bind("processing-dept", stream=EVENTS_STREAM)
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await sub.fetch(1, timeout=1.0)
        await watched.violation("$JS.API.CONSUMER.MSG.NEXT.CASEFLOW_EVENTS.processing-dept")
        await _refused_request(
            watched,
            "$JS.API.CONSUMER.CREATE.CASEFLOW_DEPT.dept_hc_forestry",
            js.add_consumer(DEPT_STREAM, department_consumer("hc_forestry")),
        )
        await notify.subscribe("_INBOX.processing.>")
        await watched.violation('Subscription to "_INBOX.processing.>"')
        await notify.subscribe("caseflow.dept.hc_forestry.requests")
        await watched.violation('Subscription to "caseflow.dept.hc_forestry.requests"')
    finally:
        await notify.close()


def test_the_server_config_holds_no_revoked_or_unknown_user(tmp_path: Path) -> None:
    from shared.adapters.bus.credentials import CredentialStore, authorities

    store = CredentialStore(tmp_path / "nats")
    store.ensure_own()
    credential, file = store.issue_department("hc_forestry", "forestry-system", nats_url="x")
    assert (store.folder / "intake.nk").stat().st_mode & 0o777 == 0o600
    assert store.register_path.stat().st_mode & 0o777 == 0o600
    assert credential.public_key in store.server_config(authorities())
    assert file["seed"] not in store.register_path.read_text()  # the seed is not kept
    store.revoke("forestry-system")
    config = store.server_config(authorities())
    assert credential.public_key not in config
    assert config.count("nkey:") == 5  # three services, the relay, the operator
