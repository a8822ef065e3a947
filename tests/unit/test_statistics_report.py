"""The station statistics report as a pure function of the projection's rows, and its
renderings (CSV, JSON, HTML with SVG charts)."""

from __future__ import annotations

import csv
import dataclasses
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


def test_people_are_counted_as_visits_and_as_different_people_each_labelled() -> None:
    rows = [
        row(XF, 2, "reception", "enquiry", received=3),
        row(XF, 2, "visitor", "p1", received=2),  # came twice that day
        row(XF, 9, "visitor", "p1", received=1),  # and again a week later
        row(LM, 9, "visitor", "p2", received=1),  # another station
    ]
    r = build_report(rows, stations=[XF], start=date(2026, 11, 2), end=date(2026, 11, 30))
    assert (r.people_received, r.distinct_people) == (3, 1)
    town = build_report(rows, stations=[XF, LM], start=date(2026, 11, 2), end=date(2026, 11, 30))
    assert town.distinct_people == 2
    figures = {f.measure: (f.name_zh, f.value) for f in r.headline()}
    assert figures["people_received"] == ("接待群众（人次）", 3)
    assert figures["distinct_people"] == ("接待群众（人）", 1)
    data = json.loads(to_json(r))
    assert (data["visits"], data["distinct_people"]) == (3, 1)


def test_each_kind_is_told_in_its_own_words_with_people_helped_and_cases_solved() -> None:
    rows = [
        row(XF, 3, "assistance", received=3, completed_at_station=3, people_helped=4),
        row(XF, 4, "police_assistance", received=3, completed_at_station=3, cases_solved=2),
        row(XF, 5, "legal_publicity", received=2, completed_at_station=1),
        row(XF, 6, "application", "pension_enrolment", received=1, delivered=1),
    ]
    r = build_report(rows, stations=[XF], start=date(2026, 11, 2), end=date(2026, 11, 30))
    words = {line.code: {f.name_zh: f.value for f in line.figures} for line in r.kinds}
    assert words["assistance"] == {"求助登记": 3, "救助到位": 3, "救助群众（人）": 4, "撤回": 0}
    assert words["police_assistance"]["协助破获案件"] == 2
    assert words["legal_publicity"] == {"安排宣传": 2, "举办宣传": 1, "取消": 0}
    assert words["application"]["收件"] == 1 and words["application"]["送达"] == 1
    assert "受理" not in words["mediation"]  # a dispute is taken on, not "accepted"
    data = json.loads(to_json(r))
    assert (data["people_helped"], data["cases_solved"]) == (4, 2)
    assert data["matters_handled"] == 3 + 3 + 2 + 1
    parts = {p["measure"]: p["value"] for p in data["completed_at_station"]["parts"]}
    assert parts == {
        "application": 0, "mediation": 0, "legal_publicity": 1, "assistance": 3,
        "police_assistance": 3,
    }  # fmt: skip
    assert data["completed_at_station"]["total"] == data["totals"]["completed_at_station"] == 7
    assert "本站办结 7 = 便民服务 0 + 矛盾纠纷调解 0 + 法治宣传 1" in to_html(r)


def test_items_come_in_the_catalogues_order_in_two_groups_with_subtotals() -> None:
    r = report()
    groups = r.item_groups
    assert [g.completion for g in groups] == ["station", "forwarded"]
    station = [i for i in CATALOGUE.published() if i.completion == "station"]
    forwarded = [i for i in CATALOGUE.published() if i.completion == "forwarded"]
    assert [line.code for line in groups[0].items] == [i.code for i in station]
    assert [line.code for line in groups[1].items] == [i.code for i in forwarded]
    assert (len(station), len(forwarded)) == (10, 17)
    assert groups[0].subtotal["received"] == 2 and groups[1].subtotal["forwarded"] == 1
    rows = list(csv.DictReader(io.StringIO(to_csv(r))))
    items = [x["code"] for x in rows if x["section"] == "item"]
    assert items == [i.code for i in station] + [i.code for i in forwarded]
    subtotals = {x["group"]: x for x in rows if x["section"] == "subtotal"}
    assert subtotals["station"]["received"] == "2" and subtotals["forwarded"]["rejected"] == "1"
    page = to_html(r)
    assert page.index("本站办结事项（一办到头）") < page.index("本站收件、转报办理事项")


def test_a_period_outside_the_stations_operation_is_said() -> None:
    opened = {XF: date(2021, 11, 14)}
    before = build_report(
        [], stations=[XF], start=date(2021, 1, 1), end=date(2021, 10, 31), opened=opened
    )
    assert [n.code for n in before.notes] == ["before_opening"]
    assert "尚未运行" in before.notes[0].zh and "2021-11-14" in before.notes[0].en
    across = build_report(
        [], stations=[XF], start=date(2021, 11, 1), end=date(2022, 2, 23), opened=opened
    )
    assert "2021-11-01至2021-11-13尚未运行" in across.notes[0].zh
    since = build_report(
        [], stations=[XF], start=date(2021, 11, 14), end=date(2022, 2, 23), opened=opened,
        today=date(2022, 2, 23),
    )  # fmt: skip
    assert since.notes == ()
    ahead = build_report(
        [], stations=[XF], start=date(2026, 11, 1), end=date(2026, 12, 31), opened=opened,
        today=date(2026, 12, 5),
    )  # fmt: skip
    assert [n.code for n in ahead.notes] == ["future"]
    rows = list(csv.DictReader(io.StringIO(to_csv(before))))
    assert [x["code"] for x in rows if x["section"] == "note"] == ["before_opening"]


def test_backfilled_acts_are_counted_and_low_on_time_rates_explained() -> None:
    rows = [
        row(XF, 2, "reception", "enquiry", received=2, backfilled=2),
        row(
            XF, 3, "application", "pension_enrolment", received=2, accepted=2, approved=2,
            completed_at_station=2, timed=2, on_time_committed=0, on_time_legal=1,
            working_days=30, backfilled=4, undated_decisions=2,
        ),
    ]  # fmt: skip
    r = build_report(rows, stations=[XF], start=date(2026, 11, 2), end=date(2026, 11, 30))
    notes = {n.code: n for n in r.notes}
    assert "6项办理行为或来访为补录" in notes["backfilled"].zh
    assert "按时办结率（承诺时限 0.0%）偏低" in notes["undated_decisions"].zh
    assert "occurred_at" in notes["undated_decisions"].en
    assert json.loads(to_json(r))["backfilled"] == 6
    clean = build_report(rows[:1], stations=[XF], start=date(2026, 11, 2), end=date(2026, 11, 30))
    assert [n.code for n in clean.notes] == ["backfilled"]


def test_the_csv_says_on_every_row_whether_the_figures_are_incomplete() -> None:
    r = report()
    assert {x["incomplete"] for x in csv.DictReader(io.StringIO(to_csv(r)))} == {""}
    waiting = dataclasses.replace(r, incomplete="the statistics are being rebuilt")
    marks = {x["incomplete"] for x in csv.DictReader(io.StringIO(to_csv(waiting)))}
    assert marks == {"the statistics are being rebuilt"}
    header = next(csv.reader(io.StringIO(to_csv(r))))
    assert header[-1] == "incomplete" and "delivered" in header and "cases_solved" in header
