"""The working calendar: published 2025/2026 arrangements, clock arithmetic, validation."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.workcalendar import (
    CHINA_TZ,
    DEFAULT_DATA_DIR,
    HOLIDAYS_FILE,
    CalendarError,
    OutsideCalendar,
    WorkingCalendar,
    load_calendar,
    local_date,
)

CAL = load_calendar()
D = dt.date


def test_covers_2021_to_2027_with_2027_provisional() -> None:
    assert (CAL.first_year, CAL.last_year) == (2021, 2027)
    assert CAL.provisional_years == {2027}
    assert CAL.is_provisional(D(2027, 3, 1))
    assert not CAL.is_provisional(D(2026, 3, 1))


@pytest.mark.parametrize(
    ("day", "working"),
    [
        # 2026 Spring Festival: 15-23 Feb off, Saturdays 14 and 28 Feb worked
        (D(2026, 2, 13), True),  # Friday
        (D(2026, 2, 14), True),  # Saturday, adjusted working day
        (D(2026, 2, 15), False),
        (D(2026, 2, 17), False),  # 初一, a Tuesday
        (D(2026, 2, 23), False),  # Monday, still off
        (D(2026, 2, 24), True),
        (D(2026, 2, 28), True),  # Saturday, adjusted working day
        (D(2026, 3, 1), False),  # ordinary Sunday
        # other 2026 holidays
        (D(2026, 1, 2), False),
        (D(2026, 1, 4), True),  # Sunday worked after New Year
        (D(2026, 5, 5), False),
        (D(2026, 5, 9), True),  # Saturday worked after Labour Day
        (D(2026, 6, 19), False),  # Dragon Boat, Friday
        (D(2026, 9, 20), True),  # Sunday worked before National Day
        (D(2026, 9, 25), False),  # Mid-Autumn, Friday
        (D(2026, 10, 7), False),
        (D(2026, 10, 8), True),
        (D(2026, 10, 10), True),  # Saturday worked after National Day
        # 2025
        (D(2025, 1, 1), False),
        (D(2025, 1, 26), True),  # Sunday worked before Spring Festival
        (D(2025, 2, 4), False),
        (D(2025, 2, 8), True),
        (D(2025, 4, 4), False),
        (D(2025, 4, 27), True),
        (D(2025, 6, 2), False),
        (D(2025, 9, 28), True),
        (D(2025, 10, 8), False),  # Wednesday, last day of the combined holiday
        (D(2025, 10, 9), True),
        (D(2025, 10, 11), True),
        (D(2025, 10, 12), False),  # ordinary Sunday
        # 2027, provisional statutory days
        (D(2027, 2, 5), False),  # 除夕
        (D(2027, 2, 8), False),  # 初三, a Monday
        (D(2027, 2, 9), True),
        (D(2027, 10, 1), False),
    ],
)
def test_known_days(day: dt.date, working: bool) -> None:
    assert CAL.is_working_day(day) is working


def test_holiday_names() -> None:
    assert CAL.holiday(D(2026, 2, 17)) == "春节"
    assert CAL.holiday(D(2025, 10, 6)) == "国庆节、中秋节"
    assert CAL.holiday(D(2026, 2, 14)) is None


def test_working_days_per_year() -> None:
    # 261 weekdays in 2025, 18 of them off, 5 weekend days worked
    assert CAL.working_days_between(D(2025, 1, 1), D(2025, 12, 31)) == 248  # 1 Jan is off anyway
    assert CAL.working_days_between(D(2025, 12, 31), D(2026, 12, 31)) == 248


def test_add_working_days_across_the_2026_spring_festival() -> None:
    friday = D(2026, 2, 13)
    assert CAL.add_working_days(friday, 1) == D(2026, 2, 14)  # the adjusted Saturday
    assert CAL.add_working_days(friday, 2) == D(2026, 2, 24)  # the nine days off skipped
    assert CAL.add_working_days(friday, 6) == D(2026, 2, 28)  # the second adjusted Saturday
    assert CAL.add_working_days(friday, 7) == D(2026, 3, 2)
    # a 20-working-day legal limit from receipt on 10 Feb 2026
    assert CAL.add_working_days(D(2026, 2, 10), 20) == D(2026, 3, 16)


def test_add_working_days_from_a_holiday_and_zero() -> None:
    assert CAL.add_working_days(D(2026, 10, 3), 0) == D(2026, 10, 3)
    assert CAL.add_working_days(D(2026, 10, 3), 1) == D(2026, 10, 8)
    with pytest.raises(ValueError, match="negative"):
        CAL.add_working_days(D(2026, 10, 3), -1)


def test_working_days_between_is_half_open() -> None:
    assert CAL.working_days_between(D(2026, 2, 13), D(2026, 2, 24)) == 2
    assert CAL.working_days_between(D(2026, 2, 13), D(2026, 2, 13)) == 0
    assert CAL.working_days_between(D(2026, 2, 24), D(2026, 2, 13)) == 0
    assert CAL.working_days_between(D(2026, 2, 14), D(2026, 2, 23)) == 0


@given(
    start=st.dates(min_value=D(2025, 1, 1), max_value=D(2027, 10, 31)),
    n=st.integers(min_value=0, max_value=40),
)
def test_add_and_count_agree(start: dt.date, n: int) -> None:
    end = CAL.add_working_days(start, n)
    assert CAL.working_days_between(start, end) == n
    assert n == 0 or CAL.is_working_day(end)


def test_dates_outside_the_data_are_refused() -> None:
    with pytest.raises(OutsideCalendar, match="2020-12-31"):
        CAL.is_working_day(D(2020, 12, 31))
    with pytest.raises(OutsideCalendar):
        CAL.working_days_between(D(2027, 12, 1), D(2028, 1, 3))
    with pytest.raises(OutsideCalendar, match="beyond"):
        CAL.add_working_days(D(2027, 12, 20), 20)
    assert CAL.add_working_days(D(2027, 12, 30), 1) == D(2027, 12, 31)


def test_local_date_is_china_time() -> None:
    assert CHINA_TZ.utcoffset(None) == dt.timedelta(hours=8)
    late_utc = dt.datetime(2026, 2, 13, 16, 30, tzinfo=dt.UTC)
    assert local_date(late_utc) == D(2026, 2, 14)
    assert local_date(dt.datetime(2026, 2, 13, 15, 59, tzinfo=dt.UTC)) == D(2026, 2, 13)
    with pytest.raises(ValueError, match="aware"):
        local_date(dt.datetime(2026, 2, 13, 16, 30))


# ------------------------------------------------------------- validation of edited data


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = (DEFAULT_DATA_DIR / HOLIDAYS_FILE).read_text(encoding="utf-8")
    assert old in text
    (tmp_path / HOLIDAYS_FILE).write_text(text.replace(old, new, 1), encoding="utf-8")
    return tmp_path


def test_unchanged_copy_loads(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_DATA_DIR / HOLIDAYS_FILE, tmp_path / HOLIDAYS_FILE)
    assert load_calendar(tmp_path).adjusted_working_days == CAL.adjusted_working_days


def test_a_weekday_as_adjusted_working_day_is_refused(tmp_path: Path) -> None:
    data_dir = _edited(tmp_path, "working_days: [2026-05-09]", "working_days: [2026-05-08]")
    with pytest.raises(CalendarError, match="2026-05-08 is not a Saturday or Sunday"):
        load_calendar(data_dir)


def test_overlapping_holidays_are_refused(tmp_path: Path) -> None:
    data_dir = _edited(
        tmp_path, "{from: 2026-06-19, to: 2026-06-21}", "{from: 2026-05-05, to: 2026-06-21}"
    )
    with pytest.raises(CalendarError, match="2026-05-05 is already off for 劳动节"):
        load_calendar(data_dir)


def test_a_gap_in_the_years_is_refused(tmp_path: Path) -> None:
    data_dir = _edited(tmp_path, "\n  2026:\n", "\n  2030:\n")
    with pytest.raises(CalendarError, match="must be contiguous"):
        load_calendar(data_dir)


def test_reversed_range_is_refused(tmp_path: Path) -> None:
    data_dir = _edited(
        tmp_path, "{from: 2025-04-04, to: 2025-04-06}", "{from: 2025-04-06, to: 2025-04-04}"
    )
    with pytest.raises(CalendarError, match="before 'from'"):
        load_calendar(data_dir)


def test_constructed_calendar() -> None:
    cal = WorkingCalendar(
        first_year=2030,
        last_year=2030,
        holidays={D(2030, 1, 1): "元旦"},
        adjusted_working_days=[D(2030, 1, 5)],
    )
    assert not cal.is_working_day(D(2030, 1, 1))
    assert cal.is_working_day(D(2030, 1, 5))
    assert cal.add_working_days(D(2030, 1, 1), 4) == D(2030, 1, 5)


def test_the_station_s_own_years_since_2021_follow_the_published_notices() -> None:
    """Xuefeng station opened on 2021-11-14: its years are in the calendar (issue 17)."""
    assert CAL.first_year == 2021 and not CAL.is_provisional(D(2021, 11, 14))
    assert not CAL.is_working_day(D(2021, 11, 14))  # the opening day, a Sunday
    assert CAL.is_working_day(D(2021, 9, 18))  # a Saturday worked for 中秋 2021
    assert not CAL.is_working_day(D(2022, 12, 31)) and not CAL.is_working_day(D(2023, 1, 2))
    assert CAL.is_working_day(D(2023, 6, 25))  # a Sunday worked for 端午 2023
    assert not CAL.is_working_day(D(2024, 2, 16)) and CAL.is_working_day(D(2024, 2, 18))
    # A case received on the Friday before 国庆 2024 runs over the whole holiday.
    assert CAL.add_working_days(D(2024, 9, 30), 1) == D(2024, 10, 8)
