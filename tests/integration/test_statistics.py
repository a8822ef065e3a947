"""The statistics and delegation usage projections on both backends, over a month of the
Xuefeng station put through the case service (tests/statistics_story.py): the report's
figures against what was put through; the same rows for any split of the log into
batches, fresh processes and rolled-back batches; the CLI in every format; the API for
the station head and the auditors."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.processing.app import create_app
from services.processing.settings import ProcessingSettings
from shared.adapters.db import create_engine, migrate
from shared.adapters.eventlog import EventLog
from shared.adapters.eventlog.store import START
from shared.adapters.tables.projections import projection_checkpoints
from shared.adapters.tables.statistics import delegation_usage, station_statistics
from shared.application.projections import Projection
from shared.application.projections.checkpoints import REBUILD_PREFIX
from shared.application.statistics.projection import (
    DelegationUsageProjection,
    StatisticsProjection,
)
from shared.application.statistics.reading import (
    INCOMPLETE_CATCHING_UP,
    INCOMPLETE_INTERRUPTED,
    INCOMPLETE_NOT_STARTED,
    INCOMPLETE_REBUILDING,
    read_statistics,
)
from shared.application.statistics.report import StationReport
from shared.cli.main import app as cli
from shared.domain.events import StoredEvent
from shared.domain.tally import CASE_KINDS, CaseTally, StatisticsTally
from shared.domain.workflow.state import CaseState, apply
from shared.web.http import PROBLEM_JSON
from tests.services import session_keys, staff_headers
from tests.statistics_story import (
    EXPECTED_XUEFENG_NOVEMBER,
    REFERENCE,
    SUSPENDED_DELEGATION,
    project,
    put_through,
    table_rows,
)

NOVEMBER = (date(2026, 11, 1), date(2026, 11, 30))
Rows = dict[str, list[tuple[Any, ...]]]


async def _all_rows(engine: AsyncEngine) -> Rows:
    return {
        "statistics": await table_rows(engine, station_statistics),
        "delegation_usage": await table_rows(engine, delegation_usage),
    }


@pytest.fixture(scope="module")
def story(module_db_url: str) -> Iterator[tuple[str, Rows]]:
    """The month put through on this backend, projected in batches of 500."""

    async def build() -> Rows:
        engine = create_engine(module_db_url)
        try:
            await put_through(EventLog(engine))
            await project(engine)
            return await _all_rows(engine)
        finally:
            await engine.dispose()

    yield module_db_url, asyncio.run(build())


async def _report(url: str, **scope: str) -> StationReport:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await read_statistics(
                conn,
                REFERENCE.organisations,
                REFERENCE.catalogue,
                start=NOVEMBER[0],
                end=NOVEMBER[1],
                **scope,
            )
    finally:
        await engine.dispose()


def test_the_months_figures_are_what_was_put_through(story: tuple[str, Rows]) -> None:
    url, _ = story
    report = asyncio.run(_report(url, station="xuefeng_station"))
    expected = EXPECTED_XUEFENG_NOVEMBER
    assert report.people_received == expected["people_received"]
    visitors = {p: n for p, _, _, n in report.visitors}
    assert visitors == {"enquiry": 2, "application": 3, "mediation": 1}
    kinds = {line.code: line.counts for line in report.kinds}
    for name, value in expected["applications"].items():  # type: ignore[attr-defined]
        assert kinds["application"][name] == value, name
    for kind, figures in expected["matters"].items():  # type: ignore[attr-defined]
        for name, value in figures.items():
            assert kinds[kind][name] == value, (kind, name)
    assert report.matters_handled == 10 + 2 + 1 + 1 + 1
    assert report.totals["completed_at_station"] == 7 + 4
    assert report.totals["completed_upstream"] == 2
    rates = kinds["application"].rates()
    assert rates["on_time_committed_rate"] == round(6 / 9, 4)
    assert rates["on_time_legal_rate"] == 1.0
    assert rates["average_working_days"] == round(40 / 9, 2)
    assert rates["satisfaction_rate"] == 0.5
    assert rates["average_rating"] == 3.5
    items = {line.code: line for line in report.items}
    assert items["logging_permit"].counts["completed_upstream"] == 1
    assert items["logging_permit"].counts["forwarded"] == 1
    assert items["logging_permit"].completion == "forwarded"
    assert items["pension_enrolment"].counts["received"] == 3  # A B I (L in October)
    assert items["pension_enrolment"].counts["completed_at_station"] == 4  # L A B I
    assert items["pension_enrolment"].counts["on_time_committed"] == 3  # L A I
    assert items["pension_enrolment"].name_zh == "城乡居民基本养老保险参保登记"


def test_a_period_and_a_town_count_only_their_days_and_stations(
    story: tuple[str, Rows],
) -> None:
    url, _ = story

    async def first_week() -> StationReport:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await read_statistics(
                    conn,
                    REFERENCE.organisations,
                    REFERENCE.catalogue,
                    station="xuefeng_station",
                    start=date(2026, 11, 2),
                    end=date(2026, 11, 2),
                )
        finally:
            await engine.dispose()

    monday = asyncio.run(first_week())
    assert monday.people_received == 3
    apps = monday.kinds[0].counts
    # received A B C D E; L decided; E forwarded
    assert (apps["received"], apps["completed_at_station"], apps["forwarded"]) == (5, 1, 1)
    town = asyncio.run(_report(url, town="banqiao_town"))
    assert town.stations == ("longmen_station", "xuefeng_station")
    assert town.people_received == 7
    by_station = {line.code: line.counts for line in town.by_station}
    assert by_station["longmen_station"]["received"] == 1
    assert by_station["xuefeng_station"]["received"] == 15
    assert {line.code: line.counts["received"] for line in town.kinds}["assistance"] == 2


def test_delegation_usage_counts_actions_and_the_refusal_citing_the_instrument(
    story: tuple[str, Rows],
) -> None:
    _, rows = story
    health = {
        (version, item, power, day.isoformat()): (actions, refused)
        for code, version, station, item, power, day, actions, refused in rows["delegation_usage"]
        if code == SUSPENDED_DELEGATION
    }
    assert health == {
        (1, "maternal_health_handbook", "receive", "2026-11-16"): (1, 0),
        (1, "maternal_health_handbook", "accept", "2026-11-16"): (1, 0),
        (1, "maternal_health_handbook", "review", "2026-11-16"): (2, 0),
        (2, "maternal_health_handbook", "decide", "2026-11-17"): (0, 1),  # while suspended
        (3, "maternal_health_handbook", "decide", "2026-11-18"): (1, 0),  # resumed
    }
    stations = {row[2] for row in rows["delegation_usage"]}
    assert stations == {"xuefeng_station"}
    decided = sum(
        row[6]
        for row in rows["delegation_usage"]
        if row[4] == "decide" and row[3] == "pension_enrolment"
    )
    assert decided == 4 + 1  # L A B I approved at the station, and I's extension


def test_the_counters_fold_moves_status_and_clock_as_the_case_fold_does(
    story: tuple[str, Rows],
) -> None:
    """The statistics keep a small fold of their own (for speed); after every event of
    every case it must agree with ``shared.domain.workflow.state`` on the status and the clock."""
    url, _ = story

    async def check() -> int:
        engine = create_engine(url)
        try:
            events = await EventLog(engine).read_all(START, limit=100_000)
        finally:
            await engine.dispose()
        tally = StatisticsTally(REFERENCE.workflows, REFERENCE.calendar, REFERENCE.catalogue)
        cases: dict[Any, tuple[CaseTally, CaseState]] = {}
        compared = 0
        for event in events:
            if event.case_kind not in CASE_KINDS:
                continue
            mine, theirs = cases.get(event.case_id, (CaseTally(), CaseState()))
            tally.step(mine, event)
            theirs = apply(theirs, event, REFERENCE.workflows)
            cases[event.case_id] = (mine, theirs)
            assert (mine.status, mine.clock) == (theirs.status, theirs.clock), event.event_type
            compared += 1
        return compared

    assert asyncio.run(check()) == 77  # every event of the story's cases


# -- any split of the log gives the same rows -------------------------------------------


async def _replay(url: str, sizes: list[int], restarts: list[bool], rollbacks: list[bool]) -> Rows:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.delete(station_statistics))
            await conn.execute(sa.delete(delegation_usage))
        events: list[StoredEvent] = await EventLog(engine).read_all(START, limit=100_000)
        projections: list[Projection] = [
            StatisticsProjection(REFERENCE),
            DelegationUsageProjection(REFERENCE),
        ]
        start, turn = 0, 0
        while start < len(events):
            size = sizes[turn % len(sizes)]
            batch = events[start : start + size]
            if restarts[turn % len(restarts)]:  # a fresh process: nothing remembered
                projections = [
                    StatisticsProjection(REFERENCE, cache_limit=8),
                    DelegationUsageProjection(REFERENCE, cache_limit=8),
                ]
            if rollbacks[turn % len(rollbacks)]:  # the runner's transaction fails
                async with engine.connect() as conn, conn.begin() as tx:
                    for projection in projections:
                        await projection.apply(conn, batch)
                    await tx.rollback()
            async with engine.begin() as conn:
                for projection in projections:
                    await projection.apply(conn, batch)
            start += size
            turn += 1
        return await _all_rows(engine)
    finally:
        await engine.dispose()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=8),
    restarts=st.lists(st.booleans(), min_size=1, max_size=5),
    rollbacks=st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_any_split_of_the_log_gives_the_same_rows(
    story: tuple[str, Rows], sizes: list[int], restarts: list[bool], rollbacks: list[bool]
) -> None:
    url, expected = story
    assert expected["statistics"] and expected["delegation_usage"]
    assert asyncio.run(_replay(url, sizes, restarts, rollbacks)) == expected


def test_one_event_at_a_time_from_a_fresh_process_each_time(story: tuple[str, Rows]) -> None:
    url, expected = story
    assert asyncio.run(_replay(url, [1], [True], [False])) == expected


# -- the CLI -----------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, ["audit", "statistics", *args])


def _november(url: str, *more: str) -> list[str]:
    return ["--database-url", url, "--from", "2026-11-01", "--to", "2026-11-30", *more]


def test_cli_prints_the_report_in_every_format(story: tuple[str, Rows], tmp_path: Path) -> None:
    url, _ = story
    table = _cli(*_november(url, "--station", "xuefeng_station"))
    assert table.exit_code == 0, table.output
    assert "薛峰中心村政务服务站" in table.output
    assert "people received" in table.output and "接待群众" in table.output
    assert "城乡居民基本养老保险参保登记" in table.output
    assert _cli(*_november(url, "--station", "xuefeng_station")).output == table.output

    as_json = _cli(*_november(url, "--station", "xuefeng_station", "--format", "json"))
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["people_received"] == 6
    assert data["matters_handled"] == 15
    assert data["totals"]["completed_upstream"] == 2
    assert data["kinds"][0]["on_time_legal_rate"] == 1.0

    as_csv = _cli(*_november(url, "--station", "xuefeng_station", "--format", "csv"))
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    by_code = {(r["section"], r["code"]): r for r in rows}
    assert by_code[("kind", "application")]["forwarded"] == "2"
    assert by_code[("kind", "mediation")]["received"] == "2"
    assert by_code[("visitors", "enquiry")]["received"] == "2"
    assert by_code[("item", "logging_permit")]["working_days"] == "20"

    page = tmp_path / "report.html"
    written = _cli(
        *_november(url, "--town", "banqiao_town", "--format", "html", "--out", str(page))
    )
    assert written.exit_code == 0, written.output
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert (
        "<svg" in html
        and "<script" not in html.lower()
        and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert "板桥镇人民政府" in html and "Matters handled, by kind" in html
    assert "矛盾纠纷调解" in html and "disputes mediated" in html


async def _mark_statistics(url: str, **values: Any) -> dict[str, Any]:
    """Set columns of the statistics checkpoint; the values they had."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            t = projection_checkpoints
            where = t.c.name == StatisticsProjection.name
            before = (await conn.execute(sa.select(t).where(where))).one()._asdict()
            await conn.execute(sa.update(t).where(where).values(**values))
        return {k: before[k] for k in values}
    finally:
        await engine.dispose()


def test_a_report_says_when_it_does_not_count_the_whole_log(
    story: tuple[str, Rows], tmp_path: Path
) -> None:
    url, _ = story
    assert asyncio.run(_report(url, station="xuefeng_station")).incomplete is None
    args = _november(url, "--station", "xuefeng_station")
    data = json.loads(_cli(*args, "--format", "json").output)
    assert data["incomplete"] is None and "Incomplete" not in _cli(*args).output

    now = datetime.now(UTC)
    rebuilding = {
        "rebuild_started_at": now,
        "lease_holder": f"{REBUILD_PREFIX}elsewhere:1:x",
        "lease_until": now + timedelta(minutes=5),
    }
    before = asyncio.run(_mark_statistics(url, **rebuilding))
    try:
        data = json.loads(_cli(*args, "--format", "json").output)
        assert data["incomplete"] == INCOMPLETE_REBUILDING
        assert data["people_received"] == 6  # the figures as far as they are counted
        table = _cli(*args)
        assert table.exit_code == 0 and "Incomplete" in table.output, table.output
        assert "being rebuilt" in table.output
        page = tmp_path / "report.html"
        assert _cli(*args, "--format", "html", "--out", str(page)).exit_code == 0
        assert 'class="incomplete"' in page.read_text(encoding="utf-8")

        asyncio.run(_mark_statistics(url, lease_holder=None, lease_until=None))
        data = json.loads(_cli(*args, "--format", "json").output)
        assert data["incomplete"] == INCOMPLETE_INTERRUPTED

        # a live runner took the lease back and counts the rest
        runner = {"lease_holder": "vm:1:live", "lease_until": now + timedelta(minutes=5)}
        asyncio.run(_mark_statistics(url, **runner))
        data = json.loads(_cli(*args, "--format", "json").output)
        assert data["incomplete"] == INCOMPLETE_CATCHING_UP
    finally:
        asyncio.run(_mark_statistics(url, **before))
    assert asyncio.run(_report(url, station="xuefeng_station")).incomplete is None

    # A database whose statistics were never counted (no runner, no rebuild yet).
    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    migrate(empty)
    assert asyncio.run(_report(empty, station="xuefeng_station")).incomplete == (
        INCOMPLETE_NOT_STARTED
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--station", "nowhere"], "unknown station 'nowhere'"),
        (["--station", "hc_hrss"], "hc_hrss is not a station"),
        (["--town", "xuefeng_station"], "is not a town"),
        ([], "give either --station CODE or --town CODE"),
    ],
)
def test_cli_names_what_is_wrong(story: tuple[str, Rows], args: list[str], message: str) -> None:
    url, _ = story
    result = _cli(*_november(url, *args))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_a_bad_period_and_a_missing_database(tmp_path: Path) -> None:
    backwards = _cli(
        "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db", "--station", "xuefeng_station",
        "--from", "2026-11-30", "--to", "2026-11-01",
    )  # fmt: skip
    assert backwards.exit_code == 2 and "is before --from" in backwards.output
    not_a_day = _cli(
        "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db", "--station", "xuefeng_station",
        "--from", "2026-11-01", "--to", "30.11.2026",
    )  # fmt: skip
    assert not_a_day.exit_code == 2 and "is not a date" in not_a_day.output
    nowhere = f"sqlite+aiosqlite:///{tmp_path}/none.db"
    missing = _cli(*_november(nowhere, "--station", "xuefeng_station"))
    assert missing.exit_code == 1 and "no database at" in missing.output


def test_cli_names_an_output_file_it_cannot_write(story: tuple[str, Rows], tmp_path: Path) -> None:
    url, _ = story
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    for out in (tmp_path / "a-file" / "report.txt", tmp_path):  # under a file; a folder
        for output_format in ("table", "csv", "json", "html"):
            result = _cli(
                *_november(url, "--station", "xuefeng_station"),
                *("--format", output_format, "--out", str(out)),
            )
            assert result.exit_code == 1, (output_format, result.output)
            assert f"can't write {out}" in result.output, (output_format, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit)


# -- the API -----------------------------------------------------------------------------


@pytest.fixture
async def processing(story: tuple[str, Rows]) -> AsyncIterator[httpx.AsyncClient]:
    url, _ = story
    settings_ = ProcessingSettings(database_url=url, jwt_public_key_file=session_keys().public_path)
    app = create_app(settings_)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://processing") as http:
        yield http
    await app.state.runtime.engine.dispose()


HEAD = staff_headers("zhao.head", "station_head", "xuefeng_station")
LM_HEAD = staff_headers("liu.head", "station_head", "longmen_station")
CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")
AUDITOR = staff_headers("qian.audit", "auditor", "hc_audit")
PERIOD = {"from": "2026-11-01", "to": "2026-11-30"}


async def test_api_gives_the_head_their_own_station_and_auditors_any(
    processing: httpx.AsyncClient,
) -> None:
    own = await processing.get("/reports/statistics", params=PERIOD, headers=HEAD)
    assert own.status_code == 200, own.text
    assert own.json()["scope"]["code"] == "xuefeng_station"
    assert own.json()["people_received"] == 6
    other = await processing.get(
        "/reports/statistics", params={**PERIOD, "station": "xuefeng_station"}, headers=LM_HEAD
    )
    assert other.status_code == 403 and other.headers["content-type"] == PROBLEM_JSON
    clerk = await processing.get("/reports/statistics", params=PERIOD, headers=CLERK)
    assert clerk.status_code == 403 and clerk.headers["content-type"] == PROBLEM_JSON
    town = await processing.get(
        "/reports/statistics",
        params={**PERIOD, "town": "banqiao_town", "format": "csv"},
        headers=AUDITOR,
    )
    assert town.status_code == 200 and town.headers["content-type"].startswith("text/csv")
    assert "longmen_station" in town.text
    page = await processing.get(
        "/reports/statistics",
        params={**PERIOD, "station": "xuefeng_station", "format": "html"},
        headers=AUDITOR,
    )
    assert page.status_code == 200 and "<svg" in page.text
    same = await processing.get(
        "/reports/statistics", params={**PERIOD, "station": "xuefeng_station"}, headers=AUDITOR
    )
    assert same.json() == own.json()


async def test_api_answers_bad_requests_with_problems(processing: httpx.AsyncClient) -> None:
    for params in (
        {"from": "2026-11-30", "to": "2026-11-01", "station": "xuefeng_station"},
        {**PERIOD, "station": "nowhere"},
        {**PERIOD},
        {"from": "yesterday", "to": "2026-11-01", "station": "xuefeng_station"},
    ):
        answer = await processing.get("/reports/statistics", params=params, headers=AUDITOR)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.headers["content-type"] == PROBLEM_JSON
    anonymous = await processing.get("/reports/statistics", params=PERIOD)
    assert anonymous.status_code == 401
