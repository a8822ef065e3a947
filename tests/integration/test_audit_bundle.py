"""Export, verify elsewhere and replay, through the ``caseflow audit`` commands, on both
backends (source and replay target)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.application.audit.keys import key_pair
from shared.application.audit.rows import EventRow
from shared.application.audit.source import stream_rows
from shared.application.audit.writer import write_all
from shared.cli.main import app
from shared.domain.delegation import CASE_KIND as DELEGATION_KIND
from shared.domain.events import Actor, NewEvent
from tests.conftest import fresh_postgres_db
from tests.integration.audit_support import audit_key, fill

runner = CliRunner()


def caseflow(*args: str) -> Any:
    return runner.invoke(app, ["audit", *args], catch_exceptions=False)


async def _prepare(url: str, folder: Path) -> dict[str, list[uuid.UUID]]:
    engine = create_engine(url)
    log = EventLog(engine)
    try:
        xuefeng = await fill(log, cases=5, station="xuefeng_station")
        other = await fill(log, cases=3, station="qiaotou_station")
        officer = Actor(user="city", role="department_officer", station=None)
        await log.append(
            uuid.uuid4(),
            0,
            [NewEvent(event_type="DelegationPublished", actor=officer, payload={"v": 1})],
            case_kind=DELEGATION_KIND,
        )
        await write_all(engine, audit_key(folder), max_events=9)
        late = await fill(log, cases=1, station="xuefeng_station")  # after the last checkpoint
    finally:
        await engine.dispose()
    return {"xuefeng": xuefeng + late, "other": other}


async def _rows(url: str) -> list[EventRow]:
    engine = create_engine(url)
    try:
        return [row async for rows in stream_rows(engine) for row in rows]
    finally:
        await engine.dispose()


def _without_tx(rows: list[EventRow]) -> list[EventRow]:
    return [{k: v for k, v in r.items() if k != "tx_id"} for r in rows]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "audit-ed25519.pem"


def test_export_then_replay_into_fresh_sqlite_and_postgres_equals_the_source(
    db_url: str, tmp_path: Path, key_file: Path, postgres_server: str
) -> None:
    asyncio.run(_prepare(db_url, tmp_path))
    public = key_pair(key_file).public_path
    out = tmp_path / "bundle"
    exported = caseflow(
        "export", "--out", str(out), "--database-url", db_url, "--key-file", str(key_file)
    )
    assert exported.exit_code == 0, exported.output
    assert "37 events of 10 cases, 4 checkpoints" in exported.output
    checked = caseflow("verify", "--bundle", str(out), "--public-key", str(public))
    assert checked.exit_code == 0, checked.output
    assert "no tampering found" in checked.output

    source = _without_tx(asyncio.run(_rows(db_url)))
    sqlite_target = f"sqlite+aiosqlite:///{tmp_path / 'replayed.db'}"
    with fresh_postgres_db(postgres_server) as pg_target:
        for target in (sqlite_target, pg_target):
            replayed = caseflow(
                "replay", str(out), "--database-url", target, "--public-key", str(public)
            )
            assert replayed.exit_code == 0, replayed.output
            assert _without_tx(asyncio.run(_rows(target))) == source
            verified = caseflow(
                "verify", "--database-url", target, "--public-key", str(public), "--json"
            )
            assert verified.exit_code == 0, verified.output
            report = orjson.loads(verified.output.strip().splitlines()[-1])
            assert report["ok"] and report["checkpoints"] == 4 and report["events"] == 37

            again = caseflow("replay", str(out), "--database-url", target)
            assert again.exit_code == 1
            assert "not empty" in again.output and "Traceback" not in again.output


def test_a_station_bundle_holds_whole_cases_and_proves_them_complete(
    db_url: str, tmp_path: Path, key_file: Path
) -> None:
    cases = asyncio.run(_prepare(db_url, tmp_path))
    out = tmp_path / "xuefeng"
    exported = caseflow(
        "export",
        "--out",
        str(out),
        "--database-url",
        db_url,
        "--key-file",
        str(key_file),
        "--station",
        "xuefeng_station",
        "--from",
        "2020-01-01",
    )
    assert exported.exit_code == 0, exported.output
    lines = (out / "events.jsonl").read_bytes().splitlines()
    rows = [orjson.loads(line) for line in lines]
    wanted = {str(c) for c in cases["xuefeng"]}
    assert {r["case_id"] for r in rows if r["case_kind"] != DELEGATION_KIND} == wanted
    assert len(rows) == len(wanted) * 4 + 1  # whole cases, and the delegation instrument
    assert caseflow("verify", "--bundle", str(out)).exit_code == 0

    # Someone drops one event of an included case and mends the manifest's file hash:
    # the signed leaf list still names the event.
    victim = rows[5]
    kept = [line for line in lines if orjson.loads(line)["event_id"] != victim["event_id"]]
    (out / "events.jsonl").write_bytes(b"".join(line + b"\n" for line in kept))
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    import hashlib

    manifest["files"]["events.jsonl"]["sha256"] = hashlib.sha256(
        (out / "events.jsonl").read_bytes()
    ).hexdigest()
    manifest["files"]["events.jsonl"]["lines"] -= 1  # and the counts (they're checked too)
    manifest["events"]["count"] -= 1
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    result = caseflow("verify", "--bundle", str(out), "--json")
    assert result.exit_code == 1
    report = orjson.loads(result.output.strip().splitlines()[-1])
    assert [(f["kind"], f["event_id"]) for f in report["findings"]] == [
        ("deleted", victim["event_id"])
    ]


def test_a_tampered_bundle_is_not_replayed_and_bad_input_is_a_clear_message(
    sqlite_url: str, tmp_path: Path, key_file: Path
) -> None:
    asyncio.run(_prepare(sqlite_url, tmp_path))
    out = tmp_path / "bundle"
    assert (
        caseflow(
            "export", "--out", str(out), "--database-url", sqlite_url, "--key-file", str(key_file)
        ).exit_code
        == 0
    )
    text = (out / "events.jsonl").read_text(encoding="utf-8").replace("张三", "李四", 1)
    (out / "events.jsonl").write_text(text, encoding="utf-8")
    target = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    refused = caseflow("replay", str(out), "--database-url", target)
    assert refused.exit_code == 1 and "does not verify" in refused.output
    checked = caseflow("verify", "--bundle", str(out), "--json")
    kinds = {f["kind"] for f in orjson.loads(checked.output.splitlines()[-1])["findings"]}
    assert kinds == {"modified"}

    for args, message in [
        (("verify",), "no public key file"),  # the embedded default log, but no key here
        (("verify", "--database-url", "mysql://x"), "must start with"),
        (("verify", "--bundle", str(tmp_path)), "not an audit bundle"),
        (
            (
                "export",
                "--out",
                str(out),
                "--database-url",
                sqlite_url,
                "--key-file",
                str(key_file),
            ),
            "already exists",
        ),
        (
            (
                "export",
                "--out",
                str(tmp_path / "n"),
                "--database-url",
                sqlite_url,
                "--from",
                "yesterday",
                "--key-file",
                str(key_file),
            ),
            "must be a date",
        ),
        (
            ("checkpoint", "--database-url", sqlite_url, "--key-file", str(tmp_path / "no.pem")),
            "no audit signing key",
        ),
    ]:
        result = runner.invoke(app, ["audit", *args], env={"CASEFLOW_DATABASE_URL": ""})
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output


def test_checkpoint_and_public_key_commands(sqlite_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "k" / "audit.pem"
    assert "created" in caseflow("init-key", "--key-file", str(key_file)).output
    pem = caseflow("public-key", "--key-file", str(key_file)).output
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert pem == key_pair(key_file).public_path.read_text()
    engine_url = sqlite_url

    async def add() -> None:
        engine = create_engine(engine_url)
        await fill(EventLog(engine), cases=2)
        await engine.dispose()

    asyncio.run(add())
    first = caseflow("checkpoint", "--database-url", sqlite_url, "--key-file", str(key_file))
    assert first.exit_code == 0 and "checkpoint 1: positions 1–8, 8 events" in first.output
    second = caseflow("checkpoint", "--database-url", sqlite_url, "--key-file", str(key_file))
    assert "nothing new to sign" in second.output
