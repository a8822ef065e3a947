"""The station statistics report as a terminal table (rich), CSV, JSON, and a printable
HTML page with its charts drawn as inline SVG (no script, nothing fetched). Labels in
Simplified Chinese with English alongside. Pure: strings in, strings out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from html import escape

import orjson
from jinja2 import Environment
from rich.console import Console
from rich.table import Table

from shared.adapters.tables.statistics import STATISTICS_MEASURES
from shared.application.statistics.report import (
    KIND_FIGURES,
    KIND_WORDS,
    MEASURE_LABELS,
    RATE_LABELS,
    ItemGroup,
    Line,
    StationReport,
)
from shared.domain.tally import APPLICATION

RATES = tuple(RATE_LABELS)
MEASURES_AND_RATES = (*STATISTICS_MEASURES, *RATES)
SHOWN = tuple(m for m in KIND_FIGURES[APPLICATION] if m != "corrections")
"""The counts shown per service item in the terminal and HTML tables: a convenience
service's figures but the correction notices (CSV and JSON carry them all)."""


def item_label(measure: str) -> tuple[str, str]:
    """A measure's words for a convenience service (收件, not 登记)."""
    return KIND_WORDS[APPLICATION].get(measure, MEASURE_LABELS[measure])


def percent(value: float | None) -> str:
    """``83.3%``, or a dash when there was nothing to count."""
    return "—" if value is None else f"{value * 100:.1f}%"


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _rate_cells(line: Line) -> list[str]:
    rates = line.counts.rates()
    return [
        percent(rates["on_time_committed_rate"]),
        percent(rates["on_time_legal_rate"]),
        number(rates["average_working_days"]),
        number(rates["average_rating"]),
        percent(rates["satisfaction_rate"]),
    ]


def headline(report: StationReport) -> list[tuple[str, str, str]]:
    """The figures the story leads with, then the time limits and satisfaction:
    (label zh, label en, value)."""
    totals = report.totals
    rates = totals.rates()
    return [
        *((f.name_zh, f.name_en, str(f.value)) for f in report.headline()),
        (*RATE_LABELS["on_time_committed_rate"], percent(rates["on_time_committed_rate"])),
        (*RATE_LABELS["on_time_legal_rate"], percent(rates["on_time_legal_rate"])),
        (*RATE_LABELS["average_working_days"], number(rates["average_working_days"])),
        (*RATE_LABELS["satisfaction_rate"], percent(rates["satisfaction_rate"])),
        (*RATE_LABELS["average_rating"], number(rates["average_rating"])),
        ("评价数", "ratings", str(totals["ratings"])),
    ]


def completed_parts(report: StationReport, *, english: bool = False) -> str:
    """``本站办结 295 = 便民服务 238 + 矛盾纠纷调解 40 + …``: the one figure and its parts."""
    parts = report.completed_at_station
    total = sum(part.value for part in parts)
    if english:
        shown = " + ".join(f"{part.name_en} {part.value}" for part in parts)
        return f"completed at the station {total} = {shown}"
    return f"本站办结 {total} = " + " + ".join(f"{part.name_zh} {part.value}" for part in parts)


def kind_words(line: Line, *, english: bool = False) -> str:
    """A kind's figures in its own words: ``受理纠纷 40 · 调解结案 38 · 撤回 2``."""
    return " · ".join(
        f"{figure.name_en if english else figure.name_zh} {figure.value}" for figure in line.figures
    )


# -- terminal ---------------------------------------------------------------------------


def _lines_table(title: str, lines: Sequence[Line], *, rates: bool) -> Table:
    """A section's lines: the counts, or (``rates``) the time limits and satisfaction."""
    table = Table(title=title, title_justify="left")
    table.add_column("事项 Matter", min_width=28, max_width=48)
    names = RATES if rates else SHOWN
    for name in names:
        zh, en = RATE_LABELS[name] if rates else item_label(name)
        table.add_column(f"{zh}\n{en}", justify="right", max_width=18)
    for line in lines:
        cells = _rate_cells(line) if rates else [str(line.counts[n]) for n in SHOWN]
        table.add_row(f"{line.name_zh}\n{line.name_en}", *cells)
    return table


def _section(console: Console, title: str, lines: Sequence[Line]) -> None:
    console.print(_lines_table(title, lines, rates=False))
    rates_title = f"{title} — 时限与满意度 time limits and satisfaction"
    console.print(_lines_table(rates_title, lines, rates=True))


def subtotal_line(group: ItemGroup) -> Line:
    """A group's subtotal as a line of its table."""
    return Line(group.completion, f"小计：{group.name_zh}", f"subtotal: {group.name_en}",
                group.subtotal)  # fmt: skip


def render_table(report: StationReport, console: Console) -> None:
    """The report as rich tables."""
    console.print(
        f"[bold]{report.scope_zh} 统计报表[/bold] — {report.scope_en}, statistics "
        f"{report.start.isoformat()} – {report.end.isoformat()}"
    )
    if report.incomplete:
        console.print(f"[bold yellow]不完整 Incomplete:[/bold yellow] {report.incomplete}")
    for note in report.notes:
        console.print(f"[bold yellow]注意 Note:[/bold yellow] {note.zh}\n  {note.en}")
    summary = Table(show_header=False)
    summary.add_column()
    summary.add_column(justify="right")
    for zh, en, value in headline(report):
        summary.add_row(f"{zh} {en}", value)
    console.print(summary)
    console.print(completed_parts(report))
    console.print(completed_parts(report, english=True))
    if report.visitors:
        visitors = Table(title="来访目的 Visitors by purpose", title_justify="left")
        visitors.add_column("目的 Purpose")
        visitors.add_column("人次 Visits", justify="right")
        for _, zh, en, count in report.visitors:
            visitors.add_row(f"{zh} {en}", str(count))
        console.print(visitors)
    kinds = Table(title="按类别 By kind of matter", title_justify="left")
    kinds.add_column("类别 Kind", min_width=20)
    kinds.add_column("办理情况 What was done")
    for line in report.kinds:
        kinds.add_row(
            f"{line.name_zh}\n{line.name_en}",
            f"{kind_words(line)}\n{kind_words(line, english=True)}",
        )
    console.print(kinds)
    for group in report.item_groups:
        title = f"便民服务：{group.name_zh} Convenience services: {group.name_en}"
        _section(console, title, [*group.items, subtotal_line(group)])
    if len(report.by_station) > 1:
        _section(console, "按服务站 By station", report.by_station)


# -- JSON and CSV -----------------------------------------------------------------------


def to_json(report: StationReport) -> str:
    """The report as indented JSON with sorted keys."""
    return orjson.dumps(
        report.as_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    ).decode()


CSV_COLUMNS = (
    "scope",
    "from",
    "to",
    "section",
    "group",
    "code",
    "name_zh",
    "name_en",
    "value",
    *STATISTICS_MEASURES,
    *RATES,
    "incomplete",
)


def to_csv(report: StationReport) -> str:
    """One table, the report's sections one after another (``section`` says which):
    ``figure`` (the headline figures, ``value``), ``note`` (what to know to read them),
    ``total``, ``kind``, ``item`` (``group``: station or forwarded, in the catalogue's
    order) and each group's ``subtotal``, ``station``, ``visitors`` (visits by purpose).
    Rates as fractions, empty when nothing was counted; ``incomplete`` on every row says
    why the figures may not count the whole log yet (empty when they do)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    base = {
        "scope": report.scope,
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "incomplete": report.incomplete or "",
    }

    def write(section: str, line: Line, group: str = "") -> None:
        values = line.counts.as_json()
        writer.writerow(
            {
                **base,
                "section": section,
                "group": group,
                "code": line.code,
                "name_zh": line.name_zh,
                "name_en": line.name_en,
                **{k: "" if values[k] is None else values[k] for k in MEASURES_AND_RATES},
            }
        )

    for figure in report.headline():
        writer.writerow(
            {
                **base,
                "section": "figure",
                "code": figure.measure,
                "name_zh": figure.name_zh,
                "name_en": figure.name_en,
                "value": figure.value,
            }
        )
    for note in report.notes:
        writer.writerow(
            {**base, "section": "note", "code": note.code, "name_zh": note.zh, "name_en": note.en}
        )
    write("total", Line(report.scope, report.scope_zh, report.scope_en, report.totals))
    for line in report.kinds:
        write("kind", line)
    for group in report.item_groups:
        for line in group.items:
            write("item", line, group.completion)
        write("subtotal", subtotal_line(group), group.completion)
    for line in report.by_station:
        write("station", line)
    for purpose, zh, en, count in report.visitors:
        writer.writerow(
            {
                **base,
                "section": "visitors",
                "code": purpose,
                "name_zh": zh,
                "name_en": en,
                "value": count,
                "received": count,
            }
        )
    return out.getvalue()


# -- HTML with SVG charts ---------------------------------------------------------------

COLOURS = ("#1f5fa8", "#d98c1f", "#4a9a5b", "#a83a3a", "#7a5aa8")


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, Sequence[int]]],
    series: Sequence[str],
    *,
    width: int = 720,
) -> str:
    """A horizontal (stacked) bar chart as an SVG element: one bar per label, one segment
    per series; the figures are written at the end of each bar."""
    label_width, row, top = 260, 26, 34
    legend = 22 if len(series) > 1 else 0
    height = top + legend + row * max(1, len(bars)) + 10
    plot = width - label_width - 60
    largest = max((sum(values) for _, values in bars), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="0" y="18" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    if legend:
        x = label_width
        for index, name in enumerate(series):
            colour = COLOURS[index % len(COLOURS)]
            parts.append(f'<rect x="{x}" y="{top - 6}" width="12" height="12" fill="{colour}"/>')
            parts.append(f'<text x="{x + 16}" y="{top + 4}" font-size="12">{escape(name)}</text>')
            x += 16 + 8 * len(name) + 24
    for position, (label, values) in enumerate(bars):
        y = top + legend + position * row
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 16}" font-size="12" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        end = float(label_width)
        for index, value in enumerate(values):
            length = plot * value / largest
            if length > 0:
                colour = COLOURS[index % len(COLOURS)]
                parts.append(
                    f'<rect x="{end:.1f}" y="{y + 4}" width="{length:.1f}" height="16" '
                    f'fill="{colour}"/>'
                )
            end += length
        figures = " + ".join(str(v) for v in values) if len(values) > 1 else str(values[0])
        parts.append(f'<text x="{end + 6:.1f}" y="{y + 16}" font-size="12">{figures}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_PAGE = Environment(autoescape=True).from_string(
    """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>{{ r.scope_zh }} 统计报表 {{ r.start }} – {{ r.end }}</title>
<style>
  body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC",
         "Microsoft YaHei", sans-serif; margin: 24px; color: #222; }
  h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
  .en { color: #666; font-size: 0.85em; }
  .figures { display: flex; flex-wrap: wrap; gap: 8px; }
  .figure { border: 1px solid #ccc; border-radius: 4px; padding: 8px 12px; min-width: 150px; }
  .figure b { display: block; font-size: 22px; }
  table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
  th, td { border: 1px solid #bbb; padding: 3px 6px; }
  td.n { text-align: right; } th { background: #f1f1f1; font-weight: normal; }
  figure { margin: 16px 0; page-break-inside: avoid; }
  .incomplete { border: 2px solid #b60; padding: 6px 10px; font-weight: bold; }
  .note { border-left: 4px solid #b60; padding: 4px 10px; background: #fff7e6; }
  tr.subtotal td { font-weight: bold; background: #f7f7f7; }
  @media print { body { margin: 10mm; } .figure { border-color: #888; } }
  @page { size: A4 landscape; margin: 10mm; }
</style>
</head>
<body>
<h1>{{ r.scope_zh }} 统计报表 <span class="en">{{ r.scope_en }} — statistics</span></h1>
<p>统计期间 <span class="en">Period</span>: {{ r.start }} 至 {{ r.end }}
 <span class="en">(days in China, both included)</span>
{% if r.stations|length > 1 %}<br>服务站 <span class="en">Stations</span>:
 {{ r.stations|join(", ") }}{% endif %}</p>
{% if r.incomplete %}<p class="incomplete">不完整 <span class="en">Incomplete</span>:
 {{ r.incomplete }}</p>{% endif %}
{% for note in r.notes %}<p class="note">注意 <span class="en">Note</span>: {{ note.zh }}
 <span class="en">{{ note.en }}</span></p>{% endfor %}
<div class="figures">
{% for zh, en, value in figures %}
  <div class="figure">{{ zh }} <span class="en">{{ en }}</span><b>{{ value }}</b></div>
{% endfor %}
</div>
<p>{{ completed_zh }}<br><span class="en">{{ completed_en }}</span></p>
<figure>{{ kinds_chart|safe }}</figure>
{% if items_chart %}<figure>{{ items_chart|safe }}</figure>{% endif %}
{% if visitors_chart %}<figure>{{ visitors_chart|safe }}</figure>{% endif %}
<h2>按类别 <span class="en">By kind of matter</span></h2>
<table>
  <tr><th>类别 <span class="en">Kind</span></th>
  <th>办理情况 <span class="en">What was done</span></th></tr>
  {% for line in r.kinds %}
  <tr><td>{{ line.name_zh }}<br><span class="en">{{ line.name_en }}</span></td>
  <td>{{ words(line) }}<br><span class="en">{{ words(line, english=True) }}</span></td></tr>
  {% endfor %}
</table>
{% for title_zh, title_en, lines in tables %}
<h2>{{ title_zh }} <span class="en">{{ title_en }}</span></h2>
<table>
  <tr><th>事项 <span class="en">Matter</span></th>
  {% for zh, en in headers %}<th>{{ zh }}<br><span class="en">{{ en }}</span></th>{% endfor %}</tr>
  {% for line in lines %}
  <tr{% if line.name_zh.startswith("小计") %} class="subtotal"{% endif %}>
  <td>{{ line.name_zh }}<br><span class="en">{{ line.name_en }}</span></td>
  {% for cell in cells(line) %}<td class="n">{{ cell }}</td>{% endfor %}</tr>
  {% endfor %}
</table>
{% endfor %}
<p class="en">From the event log of caseflow: each figure counts the events of the period
(cases received, decided, rated in it). On time: decisions within the committed (承诺) or
legal (法定) limit in working days, extension included, suspensions left out.</p>
</body>
</html>
"""
)


def to_html(report: StationReport) -> str:
    """A self-contained printable page: the headline figures, charts and tables."""
    kinds_chart = bar_chart(
        "办理事项按类别 Matters handled, by kind",
        [(f"{line.name_zh} {line.name_en}", [line.counts["received"]]) for line in report.kinds],
        ["收件/登记 taken on"],
    )
    counted = [line for line in report.items if line.counts["received"] or line.counts.completed]
    items_chart = (
        bar_chart(
            "便民服务办结按事项 Convenience services completed, by item",
            [
                (
                    line.name_zh,
                    [line.counts["completed_at_station"], line.counts["completed_upstream"]],
                )
                for line in counted
            ],
            ["本站办结 at the station", "上级办结 upstream"],
            width=900,
        )
        if counted
        else ""
    )
    visitors_chart = (
        bar_chart(
            "接待群众按来访目的 People received, by purpose",
            [(f"{zh} {en}", [count]) for _, zh, en, count in report.visitors],
            ["人次 visits"],
        )
        if report.visitors
        else ""
    )
    headers = [item_label(name) for name in SHOWN] + [RATE_LABELS[name] for name in RATES]

    def cells(line: Line) -> list[str]:
        return [str(line.counts[name]) for name in SHOWN] + _rate_cells(line)

    tables = [
        (f"便民服务：{group.name_zh}", f"Convenience services: {group.name_en}",
         [*group.items, subtotal_line(group)])
        for group in report.item_groups
    ]  # fmt: skip
    if len(report.by_station) > 1:
        tables.append(("按服务站", "By station", list(report.by_station)))
    return _PAGE.render(
        r=report,
        figures=headline(report),
        completed_zh=completed_parts(report),
        completed_en=completed_parts(report, english=True),
        kinds_chart=kinds_chart,
        items_chart=items_chart,
        visitors_chart=visitors_chart,
        tables=tables,
        headers=headers,
        cells=cells,
        words=kind_words,
    )
