"""``caseflow calendar load`` (issue 17): a new year's holiday notice into the reference
data the services read, checked before anything is replaced."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from shared.domain.catalogue import load_catalogue
from shared.domain.workcalendar import load_calendar

NOTICE_2027 = """
years:
  2027:
    provisional: false
    source: 国务院办公厅关于2027年部分节假日安排的通知 (a test's notice)
    holidays:
      - name_zh: 春节
        name_en: Spring Festival
        days_off: {from: 2027-02-05, to: 2027-02-12}
        working_days: [2027-02-13]
"""

NOTICE_2028 = """
years:
  2028:
    provisional: true
    source: statutory days only
    holidays:
      - name_zh: 元旦
        name_en: New Year's Day
        days_off: {from: 2028-01-01, to: 2028-01-01}
"""


def load(
    data_dir: Path, notice: str, tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"notice-{abs(hash(notice))}.yaml"
    path.write_text(notice, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.cli.main",
            "calendar",
            "load",
            str(path),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_years_notice_extends_the_calendar_the_services_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = load(data, NOTICE_2028, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the calendar runs 2021-2028" in done.stdout
    calendar = load_calendar(data)
    assert calendar.last_year == 2028 and not calendar.is_working_day(dt.date(2028, 1, 1))
    assert len(load_catalogue(data)) > 0  # the rest of the reference data came along


def test_a_provisional_year_takes_its_notice_and_a_published_one_needs_replace(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    done = load(data, NOTICE_2027, tmp_path)
    assert done.returncode == 0, done.stderr
    calendar = load_calendar(data)
    assert not calendar.is_provisional(dt.date(2027, 3, 1))
    assert calendar.is_working_day(dt.date(2027, 2, 13))  # the Saturday worked
    again = load(data, NOTICE_2027.replace("2027-02-12", "2027-02-11"), tmp_path)
    assert again.returncode == 1 and "2027 is published already" in again.stderr
    assert load(data, NOTICE_2027, tmp_path, "--replace").returncode == 0


def test_a_broken_notice_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert load(data, NOTICE_2028, tmp_path).returncode == 0
    before = (data / "holidays.yaml").read_text(encoding="utf-8")
    backwards = NOTICE_2028.replace("2028", "2029").replace("to: 2029-01-01", "to: 2028-12-31")
    for broken, said in (
        (backwards, "2029"),  # ends before it starts
        (NOTICE_2028.replace("2028", "2031"), "missing"),  # a gap: 2029 and 2030
        ("years: [1, 2]", "no `years:` mapping"),
    ):
        refused = load(data, broken, tmp_path)
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
        assert (data / "holidays.yaml").read_text(encoding="utf-8") == before
