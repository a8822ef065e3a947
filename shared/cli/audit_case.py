"""``caseflow audit case`` and ``caseflow audit compliance``: what an auditor reads in a
terminal (rich tables), or as JSON / CSV. Straight from the log's database: the live one
or one replayed from an export.

The output depends only on the log and the options: no "now" (the clock is read as of
the case's latest event, or the ``--as-of`` moment), rows sorted by the log's own facts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.db import create_engine, shown_url
from shared.application.audit.reading import CaseNotFound, read_compliance, read_timeline
from shared.domain.audit.compliance import ComplianceError, ComplianceReport, check_period
from shared.domain.audit.timeline import Basis, ClockPoint, Timeline, TimelineError, check_moment
from shared.domain.delegation import DelegationError
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow.reference import Reference, load_reference
from shared.settings import DEFAULT_DATABASE_URL

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="CASEFLOW_DATABASE_URL",
        help="the log's database (live, or replayed from an export)",
    ),
]
WIDTH = 200
"""Table width when the output is not a terminal, so that files and tests see the same."""
T = TypeVar("T")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"caseflow audit: {message}", err=True)
    return typer.Exit(code)


def _check_url(database_url: str) -> None:
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise _fail(
            f"--database-url must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
            f"(got {database_url.split('://')[0]}://…)",
            2,
        )
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        if path and path != ":memory:" and not Path(path).is_file():
            raise _fail(f"no database at {path} (give --database-url or CASEFLOW_DATABASE_URL)")


def _read(database_url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    _check_url(database_url)

    async def main() -> T:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    shown = shown_url(database_url)
    try:
        return asyncio.run(main())
    except (CaseNotFound, TimelineError, ComplianceError, DelegationError) as err:
        raise _fail(str(err)) from None
    except (SQLAlchemyError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(f"can't read the log at {shown}: {first}") from None


def _reference() -> Reference:
    return load_reference()


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else WIDTH, highlight=False)


def _json(data: Any) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _local(moment: datetime) -> str:
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _clock(clock: ClockPoint | None) -> str:
    if clock is None:
        return "—"
    if not clock.started:
        return f"not started ({clock.limit} working days once accepted)"
    state = "paused" if clock.paused else "running" if clock.running else "stopped"
    text = f"{clock.used}/{clock.limit} used, {clock.paused_days} paused, {clock.remaining} left"
    text += f" ({state}{', ' + clock.level if clock.level else ''})"
    return text


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{option} {value!r} is not a moment; e.g. 2026-11-28T09:30:00+08:00", 2
        ) from None
    if moment.tzinfo is None:
        raise _fail(f"{option} needs a time zone, e.g. 2026-11-28T09:30:00+08:00", 2)
    try:
        check_moment(moment)
    except TimelineError as err:
        raise _fail(f"{option} {err}", 2) from None
    return moment


def _delegation(entry: Any) -> str:
    if entry.judgement is None:
        return entry.delegation_id or ""
    mark = "valid" if entry.delegation_valid else "NOT VALID"
    named = f"{entry.delegation_id} v{entry.delegation_version}" if entry.delegation_id else "none"
    why = ", ".join(w for w in (entry.judgement.use.value, entry.judgement.power) if w)
    text = f"{named}: {mark} ({why})"
    if entry.judgement.at_entry_id:
        text += f"; valid at entry (v{entry.judgement.at_entry_version} in force when entered)"
    if entry.judgement.when_recorded:
        text += f"; at entry: {entry.judgement.when_recorded.value}"
    return text


def render_timeline(timeline: Timeline, console: Console) -> None:
    """The timeline as a rich table, with the case's standing under it."""
    item = f"{timeline.item_code} v{timeline.item_version}" if timeline.item_code else "—"
    workflow = f"{timeline.workflow} v{timeline.workflow_version}" if timeline.workflow else "—"
    console.print(
        f"[bold]{timeline.case_number or timeline.case_id}[/bold]  case {timeline.case_id} "
        f"({timeline.case_kind}), item {item}, workflow {workflow}, station "
        f"{timeline.station or '—'}, in the name of {timeline.authority or '—'}"
    )
    table = Table(title="Timeline (times in China, UTC+8)", show_lines=False)
    for column in (
        "v",
        "pos",
        "event",
        "occurred",
        "recorded",
        "actor",
        "for",
        "delegation",
        "status",
        "clock after",
        "details",
    ):
        table.add_column(column, overflow="fold")
    for e in timeline.entries:
        status = (
            e.status_after
            if e.status_before == e.status_after
            else f"{e.status_before or '—'} → {e.status_after}"
        )
        if e.not_allowed:
            status = f"{e.status_before or '—'} (NOT ALLOWED by the workflow: read on as before)"
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v not in (None, ""))
        table.add_row(
            str(e.version),
            str(e.position),
            e.event_type,
            _local(e.occurred_at),
            "same" if _local(e.recorded_at) == _local(e.occurred_at) else _local(e.recorded_at),
            f"{e.actor_user} ({e.actor_role}@{e.actor_station or '—'})",
            e.authority or "",
            _delegation(e),
            status,
            _clock(e.clock),
            details,
        )
    console.print(table)
    s = timeline.standing
    if s.as_of is not None:
        sense = "had happened" if s.basis is Basis.OCCURRED else "the system knew"
        console.print(
            f"As of {_local(s.as_of)} (China time), counting what {sense} by then: "
            f"{s.events_counted} of {s.events_total} events."
        )
        if not s.known:
            console.print("The case did not exist yet in that sense.")
    console.print(f"Status: [bold]{s.status or '—'}[/bold] (version {s.version})")
    if s.clock_as_of is not None:
        means = "that moment" if s.as_of else "its latest event"
        console.print(f"Clock as of {s.clock_as_of} ({means}): {_clock(s.clock)}")
    tasks = ", ".join(
        f"{t['kind']} for {t['role']}@{t['org']}"
        + (f" (claimed by {t['claimed_by']})" if t["claimed_by"] else "")
        for t in s.tasks
    )
    console.print(f"Open tasks: {tasks or 'none'}")
    for version, event_type, occurred, recorded in s.not_counted:
        console.print(
            f"  not counted: v{version} {event_type} "
            f"(occurred {_local(occurred)}, recorded {_local(recorded)})"
        )


def case(
    ref: Annotated[str, typer.Argument(help="case number (XF-2026-000123) or case id")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="rebuild the case as it stood then, e.g. 2026-11-28T09:30:00+08:00"
        ),
    ] = None,
    basis: Annotated[
        Basis | None,
        typer.Option(
            help="with --as-of: what had happened by then (occurred, the default) or what "
            "the system knew by then (recorded)"
        ),
    ] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """A case's timeline, or the case as it stood at a moment.

    Every event with its times, actor, authority, delegation (valid then?), status before
    and after, and the clock after it.
    """
    moment = _moment(as_of, "--as-of")
    if basis is not None and moment is None:
        raise _fail("--basis goes with --as-of: as of which moment?", 2)
    sense = basis or Basis.OCCURRED
    reference = _reference()
    timeline = _read(
        database_url,
        lambda conn: read_timeline(conn, ref, reference, as_of=moment, basis=sense),
    )
    if as_json:
        _json(timeline.as_json())
    else:
        render_timeline(timeline, _console())


def render_compliance(report: ComplianceReport, console: Console) -> None:
    """The compliance report as rich tables."""
    console.print(
        f"[bold]Delegation compliance[/bold] of {report.station}, "
        f"{report.start} to {report.end} (days in China, both included)"
    )
    counts = report.counts()
    console.print(
        ", ".join(f"{use}: {n}" for use, n in counts.items())
        + f"; refused attempts: {len(report.refused)}"
    )
    table = Table(title="Actions under a power")
    for column in ("occurred", "case", "v", "action", "item", "power", "actor", "recorded", "use"):
        table.add_column(column, overflow="fold")
    table.add_column("why", overflow="fold")
    for a in report.actions:
        j = a.judgement
        use = j.use.value if j.legitimate else f"[bold red]{j.use.value}[/bold red]"
        recorded = f"{a.delegation_id} v{a.delegation_version}" if a.delegation_id else "none"
        table.add_row(
            _local(a.occurred_at),
            a.case_number or str(a.case_id),
            str(a.version),
            j.action,
            a.item_code,
            j.power,
            f"{a.actor_user} ({a.actor_role})",
            recorded,
            use,
            j.message,
        )
    console.print(table)
    if not report.refused:
        console.print("Refused attempts: none")
    refused = Table(title="Refused attempts")
    for column in ("occurred", "case", "v", "action", "actor", "reason", "message"):
        refused.add_column(column, overflow="fold")
    for r in report.refused:
        refused.add_row(
            _local(r.occurred_at),
            r.case_number or str(r.case_id),
            str(r.version),
            r.action,
            f"{r.actor_user} ({r.actor_role})",
            r.reason,
            r.message,
        )
    if report.refused:
        console.print(refused)
    verdict = (
        "every action was within a delegation (or the authority's own)"
        if report.compliant
        else "[bold red]some actions were not covered by a valid delegation[/bold red]"
    )
    console.print(verdict)


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{option} {value!r} is not a date; e.g. 2026-11-01", 2) from None


def compliance(
    station: Annotated[str, typer.Option("--station", help="station code, e.g. xuefeng_station")],
    start: Annotated[str, typer.Option("--from", help="first day, e.g. 2026-11-01")],
    end: Annotated[str, typer.Option("--to", help="last day (included), e.g. 2026-11-30")],
    output: Annotated[
        str, typer.Option("--format", help="table, csv or json", case_sensitive=False)
    ] = "table",
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Delegation compliance of a station over a period.

    Each action under a delegated power, checked again from the log (within, outside,
    after revocation, while suspended, expired, wrong role, citing the wrong instrument,
    not allowed by the workflow), and the refused attempts with their reasons.
    """
    fmt = output.lower()
    if fmt not in ("table", "csv", "json"):
        raise _fail(f"--format must be table, csv or json (got {output!r})", 2)
    first, last = _day(start, "--from"), _day(end, "--to")
    if last < first:
        raise _fail(f"--to {last} is before --from {first}", 2)
    try:
        check_period(first, last)
    except ComplianceError as err:
        raise _fail(str(err), 2) from None
    reference = _reference()
    stations = sorted(o.code for o in reference.organisations.stations())
    if station not in stations:
        raise _fail(f"{station!r} is not a station; stations: {', '.join(stations)}", 2)
    report = _read(
        database_url,
        lambda conn: read_compliance(conn, reference, station=station, start=first, end=last),
    )
    if fmt == "json":
        _json(report.as_json())
    elif fmt == "csv":
        typer.echo(report.csv(), nl=False)
    else:
        render_compliance(report, _console())
