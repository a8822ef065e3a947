"""The station statistics report as a pure function of the projection's rows, and its
renderings (CSV, JSON, HTML with SVG charts)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest

from shared.application.statistics.render import bar_chart, to_csv, to_html, to_json
from shared.application.statistics.report import (
    StationReport,
    StatisticsError,
    StatisticsRow,
    build_report,
)
from shared.domain.catalogue import load_catalogue

CATALOGUE = load_catalogue()
XF, LM = "xuefeng_station", "longmen_station"


def row(station: str, day: int, kind: str, item: str = "", **counts: int) -> StatisticsRow:
    return StatisticsRow(station, date(2026, 11, day), kind, item, counts)


ROWS = [
    row(XF, 2, "reception", "enquiry", received=3),
    row(XF, 2, "reception", "application", received=2),
    row(XF, 30, "reception", "enquiry", received=1),
    row(XF, 31 - 30, "reception", "enquiry", received=9),  # 1 November: outside 2..30
    row(LM, 2, "reception", "enquiry", received=4),  # another station
    row(
        XF, 2, "application", "pension_enrolment",
        received=2, accepted=2, completed_at_station=2, approved=2, timed=2,
        on_time_committed=1, on_time_legal=2, working_days=5, ratings=2, rating_sum=6,
        poor_ratings=1,
    ),
    row(
        XF, 20, "application", "logging_permit",
        received=1, forwarded=1, completed_upstream=1, rejected=1, timed=1, on_time_legal=1,
        working_days=12,
    ),
    row(XF, 5, "mediation", received=3, completed_at_station=2, withdrawn=1),
    row(XF, 6, "police_assistance", received=1, completed_at_station=1),
]  # fmt: skip


def report() -> StationReport:
    return build_report(
        ROWS, stations=[XF], start=date(2026, 11, 2), end=date(2026, 11, 30), catalogue=CATALOGUE
    )


def test_figures_are_sums_over_the_period_and_the_station() -> None:
    r = report()
    assert r.people_received == 6
    assert [(p, n) for p, _, _, n in r.visitors] == [("enquiry", 4), ("application", 2)]
    kinds = {line.code: line.counts for line in r.kinds}
    assert list(kinds) == [
        "application", "mediation", "legal_publicity", "assistance", "police_assistance"
    ]  # fmt: skip
    assert kinds["application"]["received"] == 3
    assert kinds["legal_publicity"]["received"] == 0
    assert r.matters_handled == 3 + 3 + 1
    assert r.totals.completed == 2 + 1 + 2 + 1
    rates = kinds["application"].rates()
    assert rates == {
        "on_time_committed_rate": round(1 / 3, 4),
        "on_time_legal_rate": 1.0,
        "average_working_days": round(17 / 3, 2),
        "average_rating": 3.0,
        "satisfaction_rate": 0.5,
    }
    assert kinds["mediation"].rates()["on_time_legal_rate"] is None
    items = {line.code: line for line in r.items}
    assert items["logging_permit"].completion == "forwarded"
    assert items["logging_permit"].name_zh == "林木采伐许可证核发"
    assert items["pension_enrolment"].completion == "station"


def test_a_town_report_has_a_line_per_station() -> None:
    r = build_report(ROWS, stations=[XF, LM], start=date(2026, 11, 2), end=date(2026, 11, 2))
    assert r.people_received == 3 + 2 + 4
    assert [line.code for line in r.by_station] == [LM, XF]


def test_bad_periods_and_scopes_are_named() -> None:
    with pytest.raises(StatisticsError, match="before it starts"):
        build_report(ROWS, stations=[XF], start=date(2026, 11, 3), end=date(2026, 11, 2))
    with pytest.raises(StatisticsError, match="no station"):
        build_report(ROWS, stations=[], start=date(2026, 11, 2), end=date(2026, 11, 3))


def test_renderings_carry_the_figures_and_do_not_depend_on_row_order() -> None:
    r = report()
    shuffled = build_report(
        list(reversed(ROWS)),
        stations=[XF],
        start=date(2026, 11, 2),
        end=date(2026, 11, 30),
        catalogue=CATALOGUE,
    )
    assert to_json(shuffled) == to_json(r)
    assert to_csv(shuffled) == to_csv(r)
    assert to_html(shuffled) == to_html(r)
    data = json.loads(to_json(r))
    assert data["people_received"] == 6 and data["totals"]["forwarded"] == 1
    rows = {(x["section"], x["code"]): x for x in csv.DictReader(io.StringIO(to_csv(r)))}
    assert rows[("kind", "mediation")]["withdrawn"] == "1"
    assert rows[("kind", "mediation")]["on_time_legal_rate"] == ""
    assert rows[("item", "pension_enrolment")]["satisfaction_rate"] == "0.5"
    page = to_html(r)
    assert "<script" not in page.lower() and page.count("<svg") == 3
    assert "接待群众" in page and "people received" in page and "66.7%" not in page
    assert "33.3%" in page  # on time against the committed limit


def test_bar_chart_scales_bars_to_the_largest_and_escapes_labels() -> None:
    svg = bar_chart("t", [("a<b", [10, 0]), ("c", [5, 5])], ["x", "y"], width=460)
    assert "a&lt;b" in svg and "a<b" not in svg
    widths = [float(part.split('"')[0]) for part in svg.split('width="')[2:] if part[0].isdigit()]
    assert max(widths) == pytest.approx(460 - 260 - 60)
