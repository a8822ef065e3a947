"""Worklists that update while open (issue 15): ``GET /worklist/changes`` on processing,
fed by the projection runner through NATS, so that every replica's pages hear of a
change, whichever replica applied it."""

from __future__ import annotations

import queue
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from tests.services import (
    CLERK,
    VALID_APPLICATION,
    ServiceProcess,
    running_stack,
    service_env,
    staff_headers,
    start_process,
    wait_ready,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

REVIEWER = staff_headers("wang.reviewer", "reviewer", "xuefeng_station")


@pytest.fixture
def two_replicas(
    db_url: str, nats_url: str, tmp_path: Path
) -> Iterator[tuple[dict[str, ServiceProcess], ServiceProcess]]:
    """The stack, and a second processing replica on the same database and bus."""
    with running_stack(db_url, nats_url, tmp_path) as stack:
        port = devservers.free_port()
        second = start_process(
            "processing-2",
            [sys.executable, "-m", "shared.cli.main", "serve", "processing"],
            service_env("processing", db_url, nats_url, port),
            port,
            tmp_path,
        )
        try:
            wait_ready(second)
            yield stack, second
        finally:
            second.terminate()


def listen(base_url: str, heard: queue.Queue[str], stop: threading.Event) -> None:
    """Read the stream in a thread: each line that comes, as it comes."""
    url = f"{base_url}/worklist/changes"
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=60)) as client,
        client.stream("GET", url, headers=REVIEWER) as answer,
    ):
        heard.put(f"status {answer.status_code}")
        for line in answer.iter_lines():
            heard.put(line)
            if stop.is_set():
                return


def test_every_replica_tells_its_open_worklists_of_a_new_case(
    two_replicas: tuple[dict[str, ServiceProcess], ServiceProcess],
) -> None:
    stack, second = two_replicas
    stop = threading.Event()
    streams: list[queue.Queue[str]] = []
    for replica in (stack["processing"], second):
        heard: queue.Queue[str] = queue.Queue()
        threading.Thread(target=listen, args=(replica.base_url, heard, stop), daemon=True).start()
        assert heard.get(timeout=30) == "status 200"
        assert heard.get(timeout=30) == "retry: 5000"  # the stream is open
        streams.append(heard)
    answer = httpcalls.post(
        f"{stack['intake'].base_url}/cases",
        json=VALID_APPLICATION,
        headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    try:
        # Only one replica holds the projection's lease; both streams hear of the change.
        for heard in streams:
            line = heard.get(timeout=30)
            while line in ("", ": keep-alive"):
                line = heard.get(timeout=30)
            assert line == "event: changed"
        # The worklist read after the event already holds the case.
        tasks = httpcalls.get(f"{second.base_url}/worklist", headers=REVIEWER, timeout=10).json()[
            "tasks"
        ]
        assert answer.json()["case_id"] in {t["case_id"] for t in tasks}
    finally:
        stop.set()


def test_the_stream_wants_a_token(
    two_replicas: tuple[dict[str, ServiceProcess], ServiceProcess],
) -> None:
    _, second = two_replicas
    answer = httpcalls.get(f"{second.base_url}/worklist/changes", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
