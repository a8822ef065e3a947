"""The working calendar: which days count toward the legal clocks.

Weekends are off unless they are adjusted working days (调休上班); public holidays are off.
The data (``holidays.yaml`` in the data directory) covers whole years; asking about a date
outside them raises ``OutsideCalendar`` rather than guessing. Dates are local dates in
China (UTC+8, no daylight saving time): use ``local_date`` to turn a stored UTC instant into
the date its clock counts.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.domain.yamltext import YAMLError, parse_yaml

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
HOLIDAYS_FILE = "holidays.yaml"

_SATURDAY = 5


class CalendarError(ValueError):
    """The holiday data is invalid (names the year or day and the problem)."""


class OutsideCalendar(ValueError):
    """A date outside the years the holiday data covers."""


def local_date(at: dt.datetime) -> dt.date:
    """The date in China of an aware instant (what a working-day clock counts)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("local_date needs an aware datetime")
    return at.astimezone(CHINA_TZ).date()


class WorkingCalendar:
    """Working days of the years ``first_year``..``last_year`` (inclusive)."""

    def __init__(
        self,
        *,
        first_year: int,
        last_year: int,
        holidays: Mapping[dt.date, str],
        adjusted_working_days: Iterable[dt.date],
        provisional_years: Iterable[int] = (),
    ) -> None:
        if last_year < first_year:
            raise CalendarError(f"last year {last_year} is before first year {first_year}")
        self.first_year = first_year
        self.last_year = last_year
        self._start = dt.date(first_year, 1, 1)
        self._end = dt.date(last_year, 12, 31)
        self.holidays: Mapping[dt.date, str] = dict(holidays)
        self.adjusted_working_days = frozenset(adjusted_working_days)
        self.provisional_years = frozenset(provisional_years)
        for day in (*self.holidays, *self.adjusted_working_days):
            if not self._start <= day <= self._end:
                raise CalendarError(f"{day} is outside {first_year}-{last_year}")
        for day in sorted(self.adjusted_working_days):
            if day.weekday() < _SATURDAY:
                raise CalendarError(f"adjusted working day {day} is not a Saturday or Sunday")
            if day in self.holidays:
                raise CalendarError(f"{day} is both a holiday and an adjusted working day")
        for year in self.provisional_years:
            if not first_year <= year <= last_year:
                raise CalendarError(f"provisional year {year} is outside the calendar")
        self._working = [
            ordinal
            for ordinal in range(self._start.toordinal(), self._end.toordinal() + 1)
            if self._compute_working(dt.date.fromordinal(ordinal))
        ]

    def _compute_working(self, day: dt.date) -> bool:
        if day in self.holidays:
            return False
        return day.weekday() < _SATURDAY or day in self.adjusted_working_days

    def _check(self, day: dt.date) -> None:
        if not self._start <= day <= self._end:
            raise OutsideCalendar(
                f"{day} is outside the working calendar ({self.first_year}-{self.last_year})"
            )

    def is_working_day(self, d: dt.date) -> bool:
        self._check(d)
        return self._compute_working(d)

    def holiday(self, d: dt.date) -> str | None:
        """The name of the public holiday ``d`` falls in, if any."""
        self._check(d)
        return self.holidays.get(d)

    def is_provisional(self, d: dt.date) -> bool:
        """Whether ``d``'s year only has statutory days (no published arrangement yet)."""
        self._check(d)
        return d.year in self.provisional_years

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """The n-th working day after ``start`` (``n=0``: ``start`` itself)."""
        if n < 0:
            raise ValueError(f"n must not be negative (got {n})")
        self._check(start)
        if n == 0:
            return start
        index = bisect.bisect_right(self._working, start.toordinal()) + n - 1
        if index >= len(self._working):
            raise OutsideCalendar(
                f"{n} working days after {start} fall beyond the working calendar"
                f" ({self.first_year}-{self.last_year})"
            )
        return dt.date.fromordinal(self._working[index])

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days in the half-open interval (start, end]; 0 if ``end <= start``."""
        self._check(start)
        self._check(end)
        if end <= start:
            return 0
        return bisect.bisect_right(self._working, end.toordinal()) - bisect.bisect_right(
            self._working, start.toordinal()
        )


class _Range(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: dt.date = Field(alias="from")
    to: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.to < self.from_:
            raise ValueError(f"'to' {self.to} is before 'from' {self.from_}")
        return self

    def days(self) -> list[dt.date]:
        count = (self.to - self.from_).days + 1
        return [self.from_ + dt.timedelta(days=i) for i in range(count)]


class _Holiday(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    days_off: _Range
    working_days: tuple[dt.date, ...] = ()


class _Year(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provisional: bool
    source: str = Field(min_length=1)
    holidays: tuple[_Holiday, ...]


class _HolidayFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    years: dict[int, _Year] = Field(min_length=1)


def load_calendar(data_dir: Path | None = None) -> WorkingCalendar:
    """Read and validate ``holidays.yaml``; raises CalendarError naming the problem."""
    path = (data_dir or DEFAULT_DATA_DIR) / HOLIDAYS_FILE
    raw = _read_yaml(path)
    try:
        data = _HolidayFile.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            ".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in err.errors()
        )
        raise CalendarError(f"{path}: {problems}") from None
    years = sorted(data.years)
    missing = sorted(set(range(years[0], years[-1] + 1)) - set(years))
    if missing:
        raise CalendarError(f"{path}: years {missing} are missing (the years must be contiguous)")
    holidays: dict[dt.date, str] = {}
    working: set[dt.date] = set()
    for year in years:
        for holiday in data.years[year].holidays:
            where = f"{path}: {year} {holiday.name_zh}"
            for day in holiday.days_off.days():
                if day in holidays:
                    raise CalendarError(f"{where}: {day} is already off for {holidays[day]}")
                holidays[day] = holiday.name_zh
            for day in holiday.working_days:
                if day in working:
                    raise CalendarError(f"{where}: adjusted working day {day} is listed twice")
                working.add(day)
    try:
        return WorkingCalendar(
            first_year=years[0],
            last_year=years[-1],
            holidays=holidays,
            adjusted_working_days=working,
            provisional_years=[y for y in years if data.years[y].provisional],
        )
    except CalendarError as err:
        raise CalendarError(f"{path}: {err}") from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CalendarError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return parse_yaml(text)
    except YAMLError as err:
        raise CalendarError(f"{path}: invalid YAML: {err}") from None
