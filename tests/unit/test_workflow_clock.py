"""Reading working-day clocks around the 2026 Spring Festival (15-23 Feb off, Saturdays
14 and 28 Feb worked): days used, pauses left out, yellow at ceil(80 %) of the committed
limit, red once it is exceeded, and when the next warning falls due."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.workcalendar import load_calendar
from shared.domain.workflow.clock import ClockReading, next_warning, read, yellow_at
from shared.domain.workflow.state import Clock

CAL = load_calendar()
D = date
STARTED = D(2026, 2, 12)  # a Thursday, accepted the day before the festival's run-up
# working days after 12 Feb: 13 (1), 14 Sat (2), 24 (3), 25 (4), 26 (5), 27 (6), 28 Sat (7),
# 2 Mar (8)


@pytest.mark.parametrize(
    ("limit", "yellow"),
    [(1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (7, 6), (10, 8), (15, 12), (20, 16), (30, 24)],
)
def test_yellow_falls_due_at_the_ceiling_of_eighty_percent(limit: int, yellow: int) -> None:
    assert yellow_at(limit) == yellow


@pytest.mark.parametrize(
    ("today", "used", "level"),
    [
        (D(2026, 2, 12), 0, None),
        (D(2026, 2, 13), 1, None),
        (D(2026, 2, 14), 2, None),  # the adjusted working Saturday counts
        (D(2026, 2, 20), 2, None),  # the festival does not
        (D(2026, 2, 23), 2, None),
        (D(2026, 2, 24), 3, None),
        (D(2026, 2, 25), 4, "yellow"),  # 4 = ceil(0.8 × 5)
        (D(2026, 2, 26), 5, "yellow"),  # the last day of the limit: not yet exceeded
        (D(2026, 2, 27), 6, "red"),
        (D(2026, 3, 1), 7, "red"),  # Sunday after the worked Saturday 28 Feb
    ],
)
def test_days_used_and_the_warning_level_across_the_festival(
    today: date, used: int, level: str | None
) -> None:
    reading = read(
        Clock(started_on=STARTED, epoch=2), committed=5, legal=20, calendar=CAL, today=today
    )
    assert (reading.used, reading.level, reading.remaining) == (used, level, 5 - used)
    assert (reading.limit, reading.legal_limit, reading.paused_days) == (5, 20, 0)
    assert reading.running and not reading.paused


def test_a_running_clock_says_when_its_limit_runs_out() -> None:
    reading = read(Clock(started_on=STARTED), committed=5, legal=20, calendar=CAL, today=STARTED)
    assert reading == ClockReading(
        used=0,
        limit=5,
        legal_limit=20,
        remaining=5,
        paused_days=0,
        running=True,
        paused=False,
        level=None,
        deadline=D(2026, 2, 26),
    )
    assert reading.as_dict()["deadline"] == "2026-02-26"
    late = read(Clock(started_on=STARTED), committed=5, legal=20, calendar=CAL, today=D(2026, 3, 2))
    assert (late.remaining, late.deadline) == (-3, D(2026, 3, 2))  # overdue: today


def test_a_clock_not_started_reads_zero() -> None:
    reading = read(Clock(), committed=5, legal=20, calendar=CAL, today=D(2026, 2, 25))
    assert (reading.used, reading.running, reading.level, reading.deadline) == (
        0,
        False,
        None,
        None,
    )
    assert next_warning(Clock(), committed=5, calendar=CAL, today=D(2026, 2, 25)) is None


def test_closed_pauses_are_left_out() -> None:
    # suspended on 13 Feb, resumed on 24 Feb: 14 Feb and 24 Feb are paused working days
    clock = Clock(started_on=STARTED, pauses=((D(2026, 2, 13), D(2026, 2, 24)),), epoch=5)
    reading = read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 2, 26))
    assert (reading.used, reading.paused_days, reading.level) == (3, 2, None)
    assert reading.deadline == D(2026, 2, 28)  # two days left: 27, and Saturday 28 Feb
    assert read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 2, 27)).level == "yellow"
    assert read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 3, 2)).level == "red"


def test_an_open_pause_freezes_the_days_used() -> None:
    clock = Clock(started_on=STARTED, pauses=((D(2026, 2, 13), None),))
    for today in (D(2026, 2, 13), D(2026, 2, 24), D(2026, 3, 31)):
        reading = read(clock, committed=5, legal=20, calendar=CAL, today=today)
        assert (reading.used, reading.paused, reading.running) == (1, True, False)
        assert (reading.level, reading.deadline) == (None, None)
    assert next_warning(clock, committed=5, calendar=CAL, today=D(2026, 2, 24)) is None


def test_a_stopped_clock_keeps_its_reading() -> None:
    clock = Clock(started_on=STARTED, stopped_on=D(2026, 2, 24))
    reading = read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 5, 20))
    assert (reading.used, reading.level, reading.running, reading.deadline) == (
        3,
        None,
        False,
        None,
    )
    assert next_warning(clock, committed=5, calendar=CAL, today=D(2026, 5, 20)) is None


def test_a_clock_stopped_while_paused_counts_up_to_the_pause() -> None:
    clock = Clock(started_on=STARTED, pauses=((D(2026, 2, 24), None),), stopped_on=D(2026, 3, 2))
    reading = read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 4, 1))
    assert (reading.used, reading.paused_days) == (3, 5)


def test_an_extension_adds_ten_days_to_both_limits() -> None:
    clock = Clock(started_on=STARTED, extension_days=10)
    reading = read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 3, 2))
    assert (reading.used, reading.limit, reading.legal_limit, reading.level) == (8, 15, 30, None)
    # yellow at ceil(0.8 × 15) = 12 days used: 3 Mar is the 9th, 5 Mar the 11th, 6 Mar the 12th
    assert read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 3, 5)).level is None
    assert read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 3, 6)).level == "yellow"


def test_a_folded_clock_with_a_pause_an_extension_and_a_stop() -> None:
    clock = (
        Clock()
        .start(STARTED, 2)
        .pause(D(2026, 2, 25))
        .resume(D(2026, 3, 2), 6)
        .extend(10, 7)
        .stop(D(2026, 3, 10))
    )
    assert clock.pauses == ((D(2026, 2, 25), D(2026, 3, 2)),)
    reading = read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 3, 31))
    # (12 Feb, 10 Mar]: 14 working days; (25 Feb, 2 Mar] paused: 26, 27, 28 Feb, 2 Mar
    assert (reading.used, reading.paused_days, reading.limit) == (10, 4, 15)
    assert (reading.level, reading.running) == (None, False)


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (STARTED, ("yellow", D(2026, 2, 25))),  # the 4th working day
        (D(2026, 2, 17), ("yellow", D(2026, 2, 25))),  # asked during the festival
        (D(2026, 2, 24), ("yellow", D(2026, 2, 25))),
        (D(2026, 2, 25), ("red", D(2026, 2, 27))),  # yellow is due today: red comes next
        (D(2026, 2, 26), ("red", D(2026, 2, 27))),
        (D(2026, 2, 27), None),  # red: nothing more to raise
    ],
)
def test_the_next_warning_and_the_day_it_falls_due(
    today: date, expected: tuple[str, date] | None
) -> None:
    assert next_warning(Clock(started_on=STARTED), committed=5, calendar=CAL, today=today) == (
        expected
    )


def test_the_next_warning_leaves_paused_days_out() -> None:
    # started Tue 10 Feb, paused 11 Feb, resumed 25 Feb: 1 day used (11 Feb)
    clock = Clock(started_on=D(2026, 2, 10), pauses=((D(2026, 2, 11), D(2026, 2, 25)),))
    assert read(clock, committed=5, legal=20, calendar=CAL, today=D(2026, 2, 25)).used == 1
    # three more to yellow (4): 26, 27 and the worked Saturday 28 Feb
    assert next_warning(clock, committed=5, calendar=CAL, today=D(2026, 2, 25)) == (
        "yellow",
        D(2026, 2, 28),
    )


def test_a_one_day_limit_is_yellow_on_its_day_and_red_after() -> None:
    clock = Clock(started_on=D(2026, 2, 13))
    assert next_warning(clock, committed=1, calendar=CAL, today=D(2026, 2, 13)) == (
        "yellow",
        D(2026, 2, 14),
    )
    assert next_warning(clock, committed=1, calendar=CAL, today=D(2026, 2, 14)) == (
        "red",
        D(2026, 2, 24),  # the next working day after the festival
    )


@settings(max_examples=200, deadline=None)
@given(
    start=st.dates(D(2026, 1, 1), D(2026, 11, 30)),
    committed=st.integers(1, 30),
    wait=st.integers(0, 40),
    pause=st.none() | st.tuples(st.integers(0, 10), st.integers(0, 10)),
)
def test_a_warning_falls_due_on_the_day_next_warning_names_and_not_before(
    start: date, committed: int, wait: int, pause: tuple[int, int] | None
) -> None:
    """Whatever the day asked, reading the clock on the named day gives that level, and on
    the day before a lower one."""
    pauses: tuple[tuple[date, date | None], ...] = ()
    if pause is not None:
        began = start + timedelta(days=pause[0])
        pauses = ((began, began + timedelta(days=pause[1])),)
    clock = Clock(started_on=start, pauses=pauses)
    today = max([start + timedelta(days=wait), *(end or start for _, end in pauses)])
    upcoming = next_warning(clock, committed=committed, calendar=CAL, today=today)
    now = read(clock, committed=committed, legal=committed, calendar=CAL, today=today)
    assert now.used + now.remaining == committed
    if upcoming is None:
        assert now.level == "red"
        return
    level, due = upcoming
    assert due > today and CAL.is_working_day(due)
    at_due = read(clock, committed=committed, legal=committed, calendar=CAL, today=due)
    before = read(
        clock, committed=committed, legal=committed, calendar=CAL, today=due - timedelta(1)
    )
    assert at_due.level == level
    assert before.level != level
    assert at_due.used == (yellow_at(committed) if level == "yellow" else committed + 1)
