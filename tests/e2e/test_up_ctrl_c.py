"""Ctrl-C on ``caseflow up``: the terminal sends SIGINT to its whole foreground process
group. Only the supervisor may get it; it stops the services first (they drain while NATS
is still there), then nats-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil

from shared.adapters.auth import Role, SignedInStaff, SigningKey, issue_token
from shared.devtools import servers as devservers
from tests.services import SANDBOX, SERVICES, VALID_APPLICATION, wait_for_event, wait_for_line

CASEFLOW = str(Path(sys.executable).parent / "caseflow")


def test_ctrl_c_drains_the_services_before_nats_server_stops(tmp_path: Path) -> None:
    data = tmp_path / "var"
    ports = {n: devservers.free_port() for n in (*SERVICES, "nats", *SANDBOX)}
    args = [CASEFLOW, "up", "--data-dir", str(data)]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    log = tmp_path / "up.log"
    with open(log, "ab") as out:
        # A terminal's job: a process group of its own, which Ctrl-C signals as a whole.
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_line(log, "ready; press Ctrl-C to stop", proc)
        clerk = SignedInStaff(user="li.clerk", role=Role.window_clerk, org="xuefeng_station")
        headers = {"Authorization": f"Bearer {issue_token(clerk, SigningKey.load(data / 'keys'))}"}
        intake = f"http://127.0.0.1:{ports['intake']}"
        response = httpx.post(
            f"{intake}/cases",
            json=VALID_APPLICATION,
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        wait_for_event(intake, response.json()["case_id"], "NotificationSent", headers=headers)
        children = psutil.Process(proc.pid).children(recursive=True)
        started = log.read_text(errors="replace")
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        code = proc.wait(90)
    alive = psutil.wait_procs(children, timeout=10)[1]
    stopping = log.read_text(errors="replace")[len(started) :]
    assert code == 0, stopping[-3000:]
    assert alive == [], f"left behind: {alive}"
    # The services drained with NATS still up: no connection lost, no traceback.
    for trouble in ("Traceback", "disconnected from NATS", "NATS error", "unexpected EOF"):
        assert trouble not in stopping, stopping[-3000:]
    assert stopping.count('"stopped"') >= len(SERVICES), stopping[-3000:]
    # nats-server was told to stop by the supervisor (SIGTERM), not by the Ctrl-C, and after
    # the services.
    nats_log = (data / "nats.log").read_text(errors="replace")
    assert 'Trapped "interrupt" signal' not in nats_log
    assert 'Trapped "terminated" signal' in nats_log
    said = [line for line in stopping.splitlines() if line.startswith("caseflow: stopped")]
    assert said == [
        "caseflow: stopped intake, processing, notify",
        "caseflow: stopped sandbox",
        "caseflow: stopped nats-server",
        "caseflow: stopped",
    ]
