"""NATS away: a service says so once per connection, not every half second while it
retries (issue 16: "NATS down → two tracebacks a second")."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from shared.devtools import servers as devservers
from tests.services import bus_server, service_env, start_process, wait_ready

pytestmark = [pytest.mark.nats]


def test_a_lost_nats_server_is_reported_once_per_connection(
    tmp_path: Path, sqlite_url: str
) -> None:
    with bus_server(tmp_path / "nats") as bus:
        port = devservers.free_port()
        intake = start_process(
            "intake",
            [sys.executable, "-m", "shared.cli.main", "serve", "intake"],
            service_env("intake", sqlite_url, bus.url, port),
            port,
            tmp_path,
        )
        try:
            wait_ready(intake)
            before = len(intake.logs())
            devservers.stop_process(bus.proc)  # NATS goes away; the service retries every 0.5 s
            time.sleep(6)
            after = intake.logs()[before:]
        finally:
            intake.terminate()
    refused = [line for line in after.splitlines() if "Connect call failed" in line]
    # one line for the service's own connection, one for the relay's: not twelve each
    assert 1 <= len(refused) <= 2, refused
    assert "Traceback" not in after
