"""Operating the services: readiness, bad settings, and `caseflow up` as an operator runs it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil

from shared.adapters.auth import Role, SignedInStaff, SigningKey, issue_token
from shared.devtools import httpcalls, waiting
from shared.devtools import servers as devservers
from tests.services import (
    SANDBOX,
    SERVICES,
    VALID_APPLICATION,
    refusing_port,
    service_env,
    session_bus,
    start_process,
    wait_for_event,
    wait_for_line,
)


def test_readyz_is_503_while_nats_and_database_are_unreachable(tmp_path: Path) -> None:
    port = devservers.free_port()
    dead_nats = f"nats://127.0.0.1:{refusing_port()}"
    dead_pg = f"postgresql+asyncpg://caseflow:x@127.0.0.1:{refusing_port()}/caseflow"
    service = start_process(
        "intake",
        [sys.executable, "-m", "shared.cli.main", "serve", "intake"],
        service_env("intake", dead_pg, dead_nats, port),
        port,
        tmp_path,
    )
    try:
        live = waiting.wait_until(
            lambda: httpcalls.get(f"{service.base_url}/livez", timeout=1),
            what="intake to answer /livez",
            timeout=waiting.READINESS,
            ignoring=(httpx.HTTPError,),
            give_up=waiting.exited(service.proc, "intake"),
            detail=service.logs,
        )
        assert live.status_code == 200
        ready = httpcalls.get(f"{service.base_url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
        assert ready.json()["checks"]["nats"].startswith("unreachable")
        assert ready.json()["checks"]["database"].startswith("unreachable")
    finally:
        service.terminate()


def test_bad_setting_stops_start_up_naming_the_variable() -> None:
    env = {
        **os.environ,
        "CASEFLOW_PROCESSING_PORT": "eighty",
        "CASEFLOW_PROCESSING_DATABASE_URL": "mysql://x",
    }
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "serve", "processing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CASEFLOW_PROCESSING_PORT" in result.stderr
    assert "CASEFLOW_PROCESSING_DATABASE_URL" in result.stderr
    assert "sqlite+aiosqlite://" in result.stderr


def _up(
    data_dir: Path, ports: dict[str, int], log: Path, *, terminal: bool = False
) -> subprocess.Popen[bytes]:
    """``caseflow up`` (``terminal``: in a process group of its own, as a terminal starts
    it, which Ctrl-C signals as a whole)."""
    args = [str(Path(sys.executable).parent / "caseflow"), "up", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=terminal
        )


def _stop(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """SIGINT to the supervisor alone (as ``kill -INT`` sends it); what is left running."""
    if proc.poll() is not None:  # it stopped by itself: never right while a test runs
        raise AssertionError(f"caseflow up had exited by itself (exit code {proc.returncode})")
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    return alive


def _ctrl_c(proc: subprocess.Popen[bytes], data: Path, log: Path) -> None:
    """Ctrl-C at the terminal: SIGINT to the whole process group of ``caseflow up``
    (started with ``terminal=True``). Only the supervisor may act on it: it stops the
    services first (they drain while NATS is still there), then nats-server."""
    if proc.poll() is not None:
        raise AssertionError(f"caseflow up had exited by itself (exit code {proc.returncode})")
    children = psutil.Process(proc.pid).children(recursive=True)
    started = len(log.read_text(errors="replace"))
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(90)
    alive = psutil.wait_procs(children, timeout=10)[1]
    stopping = log.read_text(errors="replace")[started:]
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
        "caseflow: stopped intake, processing, notify, console",
        "caseflow: stopped sandbox",
        "caseflow: stopped nats-server",
        "caseflow: stopped",
    ]


def _clerk(key_dir: Path) -> dict[str, str]:
    """A window clerk's token signed with the key ``caseflow up`` made in its data folder."""
    staff = SignedInStaff(user="li.clerk", role=Role.window_clerk, org="xuefeng_station")
    return {"Authorization": f"Bearer {issue_token(staff, SigningKey.load(key_dir))}"}


def test_caseflow_up_runs_the_stack_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    """Started as from a terminal and stopped with Ctrl-C (the whole process group), then
    started again on the same folder and stopped with SIGINT to the supervisor alone."""
    data = tmp_path / "var"
    ports = {n: devservers.free_port() for n in (*SERVICES, "console", "nats", *SANDBOX)}
    log = tmp_path / "up.log"
    proc = _up(data, ports, log, terminal=True)
    intake = f"http://127.0.0.1:{ports['intake']}"
    try:
        wait_for_line(log, "ready; press Ctrl-C to stop", proc)
        text = log.read_text()
        for name in ("intake", "processing", "notify"):
            assert f"http://127.0.0.1:{ports[name]}" in text
        clerk = _clerk(data / "keys")
        response = httpcalls.post(
            f"{intake}/cases",
            json=VALID_APPLICATION,
            headers={**clerk, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        case_id = response.json()["case_id"]
        wait_for_event(intake, case_id, "NotificationSent", headers=clerk)
    finally:
        _ctrl_c(proc, data, log)
    assert (data / "caseflow.db").exists() and (data / "jetstream").is_dir()
    # Citizens' data and the keys are the operator's alone.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "caseflow.db").stat().st_mode) & 0o077 == 0

    log = tmp_path / "up-again.log"
    proc = _up(data, ports, log)
    try:
        wait_for_line(log, "ready; press Ctrl-C to stop", proc)
        history = httpcalls.get(
            f"{intake}/cases/{case_id}/events", timeout=5, headers=_clerk(data / "keys")
        ).json()["events"]
        types = [e["event_type"] for e in history]
        assert types[:2] == ["CaseReceived", "CaseAccepted"]
        assert set(types[2:]) == {"NotificationSent"}, types
    finally:
        assert _stop(proc) == []


def test_caseflow_up_against_external_postgres_and_nats(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    ports = {n: devservers.free_port() for n in (*SERVICES, "console", *SANDBOX)}
    log = tmp_path / "up.log"
    args = [
        str(Path(sys.executable).parent / "caseflow"),
        "up",
        "--data-dir",
        str(tmp_path / "var"),
        "--database-url",
        postgres_url,
        "--nats-url",
        nats_url,
        # The external server knows the users of this folder (as an operator's would).
        "--nats-dir",
        str(session_bus().folder),
    ]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    intake = f"http://127.0.0.1:{ports['intake']}"
    try:
        wait_for_line(log, "ready; press Ctrl-C to stop", proc)
        assert "nats-server with JetStream" not in log.read_text()  # used the external one
        clerk = _clerk(tmp_path / "var" / "keys")
        response = httpcalls.post(
            f"{intake}/cases",
            json=VALID_APPLICATION,
            headers={**clerk, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        wait_for_event(intake, response.json()["case_id"], "NotificationSent", headers=clerk)
    finally:
        assert _stop(proc) == []


def test_caseflow_up_and_migrate_name_an_unusable_database_in_one_line(tmp_path: Path) -> None:
    """An unknown database host: one line naming the URL, its password hidden, no
    traceback; and a URL too broken to parse, the same (issue 16)."""
    caseflow = str(Path(sys.executable).parent / "caseflow")
    unreachable = "postgresql+asyncpg://caseflow:s3cret@nohost.invalid:5432/caseflow"
    ports = {n: devservers.free_port() for n in (*SERVICES, "console", "nats", *SANDBOX)}
    args = [caseflow, "up", "--data-dir", str(tmp_path / "var"), "--database-url", unreachable]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    up = subprocess.run(args, capture_output=True, text=True, timeout=120)
    said = up.stdout + up.stderr
    assert up.returncode == 1, said
    assert "Traceback" not in said and "s3cret" not in said, said
    (line,) = [x for x in said.splitlines() if "database" in x and "nohost.invalid" in x]
    assert line.startswith("caseflow: can't use the database at postgresql+asyncpg://caseflow:***@")
    assert "stopped nats-server" in said  # what it had started is stopped again
    broken = "postgresql+asyncpg://caseflow:p@ss@host:x/caseflow"
    migrate = subprocess.run(
        [caseflow, "migrate", "--database-url", broken], capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 1
    assert migrate.stderr.startswith("caseflow: can't use the database at ") and "p@ss" not in (
        migrate.stdout + migrate.stderr
    ), migrate.stderr
    assert len(migrate.stderr.strip().splitlines()) == 1
