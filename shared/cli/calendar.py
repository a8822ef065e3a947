"""``caseflow calendar``: the working calendar's holiday data.

``load NOTICE --data-dir DIR``: a new year's notice from the State Council (国务院办公厅关于
…年部分节假日安排的通知), entered as YAML in the format of ``shared/data/holidays.yaml``
(``years: {2028: {provisional: false, source: …, holidays: […]}}``), merged into the
reference data folder the services read (``CASEFLOW_<SERVICE>_DATA_DIR``). A folder without
reference data yet gets a copy of the packaged data first. The result is checked as the
services will load it before it replaces anything; a published year is replaced only
with ``--replace`` (a correction), a provisional one whenever its notice comes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from shared.domain.workcalendar import (
    DEFAULT_DATA_DIR,
    HOLIDAYS_FILE,
    CalendarError,
    load_calendar,
)
from shared.domain.yamltext import YAMLError, parse_yaml

app = typer.Typer(
    help="The working calendar: load a new year's holiday notice.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"caseflow: {message}", err=True)
    return typer.Exit(1)


def _years(text: str, where: Path) -> dict[int, Any]:
    try:
        document = parse_yaml(text)
    except YAMLError as err:
        raise _fail(f"{where}: invalid YAML: {err}") from None
    years = document.get("years") if isinstance(document, dict) else None
    if not isinstance(years, dict) or not years:
        raise _fail(f"{where}: no `years:` mapping (the format of shared/data/holidays.yaml)")
    return {int(year): block for year, block in years.items()}


@app.command()
def load(
    notice: Annotated[
        Path,
        typer.Argument(
            help="the year's notice, as holidays.yaml's YAML", exists=True, dir_okay=False
        ),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="the reference data folder the services read (CASEFLOW_<SERVICE>_DATA_DIR)",
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="also replace a published year (a correction)")
    ] = False,
) -> None:
    """Merge a year's holiday notice into the reference data the services read."""
    if not (data_dir / HOLIDAYS_FILE).is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(DEFAULT_DATA_DIR, data_dir, dirs_exist_ok=True)
        typer.echo(f"reference data copied into {data_dir} (the packaged data)")
    target = data_dir / HOLIDAYS_FILE
    current = _years(target.read_text(encoding="utf-8"), target)
    new = _years(notice.read_text(encoding="utf-8"), notice)
    for year in sorted(new):
        old = current.get(year)
        if old is not None and not old.get("provisional", False) and not replace:
            raise _fail(
                f"{year} is published already ({old.get('source')}); --replace to correct it"
            )
    merged = {**current, **new}
    text = (
        "# China's public holidays and adjusted working days by year (the format of\n"
        "# shared/data/holidays.yaml), written by `caseflow calendar load`.\n"
        + yaml.safe_dump(
            {"years": dict(sorted(merged.items()))}, allow_unicode=True, sort_keys=False
        )
    )
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / HOLIDAYS_FILE).write_text(text, encoding="utf-8")
        try:
            calendar = load_calendar(Path(scratch))
        except CalendarError as err:
            raise _fail(str(err).replace(scratch, str(data_dir))) from None
    written = target.with_suffix(".yaml.new")
    written.write_text(text, encoding="utf-8")
    os.replace(written, target)
    provisional = sorted(calendar.provisional_years)
    typer.echo(
        f"loaded {', '.join(map(str, sorted(new)))} into {target}: the calendar runs"
        f" {calendar.first_year}-{calendar.last_year}"
        + (f" (provisional: {', '.join(map(str, provisional))})" if provisional else "")
        + "; restart the services to use it"
    )
