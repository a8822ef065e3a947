"""The station statistics report, as the story reports a station's work: people
received (visits and distinct people), matters handled by kind (convenience services by
item, mediations, legal-publicity sessions, assistance and rescue with the people helped,
police assistance with the cases solved), completed at the station vs forwarded upstream,
on time against the committed and the legal limit, average working days, satisfaction;
and what a reader must know to trust the figures (a period outside the station's
operation, acts entered later from paper records). A pure function of the
``statistics`` projection's rows. No I/O.

Each kind of matter is told in its own words (a mediation is taken on and concluded, a
session planned and held); the convenience-service items come in the catalogue's order,
in two groups — completed at the station (一办到头) and forwarded — each with its subtotal.

Every figure counts the events of the period (days in China, both ends included): cases
received in it, decided in it, rated in it. Rates are None when nothing was there to
rate; the output depends only on the rows and the options, so a replayed copy of the log
gives the same report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any, Protocol

from shared.adapters.tables.statistics import STATISTICS_MEASURES
from shared.domain.tally import APPLICATION, MATTER_KINDS, RECEPTION, VISITOR

KIND_LABELS: Mapping[str, tuple[str, str]] = {
    APPLICATION: ("便民服务", "convenience services"),
    "mediation": ("矛盾纠纷调解", "disputes mediated"),
    "legal_publicity": ("法治宣传", "legal-publicity sessions"),
    "assistance": ("帮扶救助", "assistance and rescue"),
    "police_assistance": ("协助公安", "police assistance"),
}
"""The kinds of matter in the order the story lists them."""
PURPOSE_LABELS: Mapping[str, tuple[str, str]] = {
    "enquiry": ("咨询", "enquiry"),
    "application": ("办事", "application"),
    "mediation": ("调解", "mediation"),
    "legal_advice": ("法律咨询", "legal advice"),
    "assistance": ("求助", "assistance"),
    "police": ("警务", "police"),
    "other": ("其他", "other"),
}
KIND_FIGURES: Mapping[str, tuple[str, ...]] = {
    APPLICATION: (
        "received",
        "accepted",
        "corrections",
        "not_accepted",
        "withdrawn",
        "forwarded",
        "completed_at_station",
        "completed_upstream",
        "approved",
        "rejected",
        "delivered",
    ),
    "mediation": ("received", "completed_at_station", "withdrawn"),
    "legal_publicity": ("received", "completed_at_station", "withdrawn"),
    "assistance": ("received", "completed_at_station", "people_helped", "withdrawn"),
    "police_assistance": ("received", "completed_at_station", "cases_solved", "withdrawn"),
}
"""The figures each kind of matter reports, in order."""
KIND_WORDS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    APPLICATION: {
        "received": ("收件", "applications received"),
        "accepted": ("受理", "accepted"),
        "rejected": ("不予许可", "rejected"),
    },
    "mediation": {
        "received": ("受理纠纷", "disputes taken on"),
        "completed_at_station": ("调解结案", "mediations concluded"),
    },
    "legal_publicity": {
        "received": ("安排宣传", "sessions planned"),
        "completed_at_station": ("举办宣传", "sessions held"),
        "withdrawn": ("取消", "called off"),
    },
    "assistance": {
        "received": ("求助登记", "requests for help"),
        "completed_at_station": ("救助到位", "help given"),
    },
    "police_assistance": {
        "received": ("协助请求", "requests from the police"),
        "completed_at_station": ("协助完成", "assistance given"),
    },
}
"""Words for a figure of a kind where the general label (:data:`MEASURE_LABELS`) would
not fit it: a mediation is not "received", a session is not "completed"."""
MEASURE_LABELS: Mapping[str, tuple[str, str]] = {
    "received": ("收件/登记", "received"),
    "accepted": ("受理", "accepted"),
    "corrections": ("一次性告知", "correction notices"),
    "not_accepted": ("不予受理", "not accepted"),
    "withdrawn": ("撤回", "withdrawn"),
    "forwarded": ("转报上级", "forwarded upstream"),
    "completed_at_station": ("本站办结", "completed at the station"),
    "completed_upstream": ("上级办结", "decided upstream"),
    "approved": ("准予", "approved"),
    "rejected": ("不予", "rejected"),
    "delivered": ("送达", "delivered"),
    "timed": ("计时办结", "decisions timed"),
    "on_time_committed": ("承诺时限内", "within committed limit"),
    "on_time_legal": ("法定时限内", "within legal limit"),
    "working_days": ("工作日合计", "working days (sum)"),
    "ratings": ("评价数", "ratings"),
    "rating_sum": ("评分合计", "score (sum)"),
    "poor_ratings": ("差评", "poor ratings"),
    "people_helped": ("救助群众（人）", "people helped"),
    "cases_solved": ("协助破获案件", "police cases solved"),
    "backfilled": ("补录", "entered later from paper"),
    "undated_decisions": ("补录未填时间的决定", "decisions entered without their moment"),
}
RATE_LABELS: Mapping[str, tuple[str, str]] = {
    "on_time_committed_rate": ("按承诺时限办结率", "on time, committed limit"),
    "on_time_legal_rate": ("按法定时限办结率", "on time, legal limit"),
    "average_working_days": ("平均办理工作日", "average working days"),
    "average_rating": ("平均评分", "average score (1–5)"),
    "satisfaction_rate": ("满意率", "satisfaction (not poor)"),
}


class StatisticsError(ValueError):
    """The report was asked for something that does not exist (named)."""


@dataclasses.dataclass(frozen=True, slots=True)
class StatisticsRow:
    """One row of the ``statistics`` projection."""

    station: str
    day: date
    case_kind: str
    item: str
    counts: Mapping[str, int]


def _ratio(part: int, whole: int, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


@dataclasses.dataclass(frozen=True)
class Counts:
    """The measures of ``STATISTICS_MEASURES``, summed, and the rates drawn from them."""

    values: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(STATISTICS_MEASURES, 0)
    )

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    @classmethod
    def total(cls, parts: Iterable[Mapping[str, int]]) -> Counts:
        summed = dict.fromkeys(STATISTICS_MEASURES, 0)
        for part in parts:
            for name in STATISTICS_MEASURES:
                summed[name] += int(part.get(name, 0))
        return cls(summed)

    @property
    def completed(self) -> int:
        """Completed in the period, at the station or upstream (办结)."""
        return self["completed_at_station"] + self["completed_upstream"]

    def rates(self) -> dict[str, float | None]:
        """On-time rates, average working days and satisfaction, None where nothing counts."""
        timed, ratings = self["timed"], self["ratings"]
        return {
            "on_time_committed_rate": _ratio(self["on_time_committed"], timed),
            "on_time_legal_rate": _ratio(self["on_time_legal"], timed),
            "average_working_days": _ratio(self["working_days"], timed, 2),
            "average_rating": _ratio(self["rating_sum"], ratings, 2),
            "satisfaction_rate": _ratio(ratings - self["poor_ratings"], ratings),
        }

    def as_json(self) -> dict[str, Any]:
        return {**{name: self[name] for name in STATISTICS_MEASURES}, **self.rates()}


@dataclasses.dataclass(frozen=True, slots=True)
class Figure:
    """One figure as the report words it: a measure, its label and its value."""

    measure: str
    name_zh: str
    name_en: str
    value: int

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kind_figures(kind: str, counts: Counts) -> tuple[Figure, ...]:
    """The figures a kind of matter reports, in its own words."""
    words = KIND_WORDS.get(kind, {})
    return tuple(
        Figure(name, *words.get(name, MEASURE_LABELS[name]), counts[name])
        for name in KIND_FIGURES.get(kind, ())
    )


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of the report: a kind of matter, a service item, or a station."""

    code: str
    name_zh: str
    name_en: str
    counts: Counts
    completion: str | None = None
    """For a service item: ``station`` (一办到头) or ``forwarded``."""

    @property
    def figures(self) -> tuple[Figure, ...]:
        """For a kind of matter: its figures in its own words (empty for other lines)."""
        return kind_figures(self.code, self.counts)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            **self.counts.as_json(),
        }
        if self.completion is not None:
            data["completion"] = self.completion
        if self.figures:
            data["figures"] = [figure.as_json() for figure in self.figures]
        return data


GROUP_LABELS: Mapping[str, tuple[str, str]] = {
    "station": ("本站办结事项（一办到头）", "items completed at the station"),
    "forwarded": ("本站收件、转报办理事项", "items received here and forwarded"),
    "other": ("目录外事项", "items not in the catalogue"),
}


@dataclasses.dataclass(frozen=True)
class ItemGroup:
    """The items of one completion mode, in the catalogue's order, with their subtotal."""

    completion: str
    name_zh: str
    name_en: str
    items: tuple[Line, ...]
    subtotal: Counts

    def as_json(self) -> dict[str, Any]:
        return {
            "completion": self.completion,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "items": [line.as_json() for line in self.items],
            "subtotal": self.subtotal.as_json(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Note:
    """Something the reader must know to read the figures right (code, zh, en)."""

    code: str
    zh: str
    en: str

    def as_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StationReport:
    """The statistics of one station, or of the stations of a town, over a period."""

    scope: str
    scope_zh: str
    scope_en: str
    stations: tuple[str, ...]
    start: date
    end: date
    people_received: int
    """Visits logged (人次)."""
    visitors: tuple[tuple[str, str, str, int], ...]
    """(purpose, label zh, label en, visitors) in the order of ``PURPOSE_LABELS``."""
    kinds: tuple[Line, ...]
    items: tuple[Line, ...]
    """Every item of the catalogue in its order (those with nothing counted too), then
    any counted item the catalogue no longer lists."""
    by_station: tuple[Line, ...]
    totals: Counts
    distinct_people: int = 0
    """Different people among the visits (人): by ID number where taken, else by name and
    village; a person who came on several days of the period counts once."""
    backfilled_visits: int = 0
    notes: tuple[Note, ...] = ()
    incomplete: str | None = None
    """Why the figures may not count every event of the log yet (the statistics
    projection is being rebuilt, or has never run), or None."""

    @property
    def matters_handled(self) -> int:
        """Matters taken on in the period, every kind (办理事项)."""
        return sum(line.counts["received"] for line in self.kinds)

    @property
    def completed_at_station(self) -> tuple[Figure, ...]:
        """What was completed at the station, by kind (the parts of the one figure)."""
        return tuple(
            Figure(line.code, line.name_zh, line.name_en, line.counts["completed_at_station"])
            for line in self.kinds
        )

    @property
    def item_groups(self) -> tuple[ItemGroup, ...]:
        """The items in two groups (completed at the station, forwarded), each with its
        subtotal; items the catalogue no longer lists in a third, if any were counted."""
        groups: list[ItemGroup] = []
        for completion, (zh, en) in GROUP_LABELS.items():
            lines = tuple(line for line in self.items if (line.completion or "other") == completion)
            if lines or completion != "other":
                subtotal = Counts.total(line.counts.values for line in lines)
                groups.append(ItemGroup(completion, zh, en, lines, subtotal))
        return tuple(groups)

    def headline(self) -> tuple[Figure, ...]:
        """The figures the story leads with, each labelled with what it counts."""
        kinds = {line.code: line.counts for line in self.kinds}
        totals = self.totals
        return (
            Figure("people_received", "接待群众（人次）", "people received (visits)",
                   self.people_received),
            Figure("distinct_people", "接待群众（人）", "people received (different people)",
                   self.distinct_people),
            Figure("matters_handled", "办理事项（件）", "matters handled", self.matters_handled),
            Figure("convenience_services", "便民服务事项（件）", "convenience services",
                   kinds[APPLICATION]["received"]),
            Figure("mediations", "调解矛盾纠纷（起）", "disputes mediated",
                   kinds["mediation"]["received"]),
            Figure("publicity_sessions", "法律宣传（次）", "legal-publicity sessions",
                   kinds["legal_publicity"]["received"]),
            Figure("assistance", "帮扶救助（件）", "assistance matters",
                   kinds["assistance"]["received"]),
            Figure("people_helped", "救助群众（人）", "people helped",
                   totals["people_helped"]),
            Figure("police_assistance", "协助公安（起）", "police assistance",
                   kinds["police_assistance"]["received"]),
            Figure("cases_solved", "协助破获案件（起）", "police cases solved",
                   totals["cases_solved"]),
            Figure("completed_at_station", "本站办结（件）", "completed at the station",
                   totals["completed_at_station"]),
            Figure("forwarded", "转报上级（件）", "forwarded upstream", totals["forwarded"]),
            Figure("completed_upstream", "上级办结（件）", "decided upstream",
                   totals["completed_upstream"]),
            Figure("delivered", "送达（件）", "decisions delivered", totals["delivered"]),
            Figure("backfilled", "补录（项）", "acts entered later from paper",
                   totals["backfilled"] + self.backfilled_visits),
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, keys in a fixed order."""
        completed = self.completed_at_station
        return {
            "scope": {"code": self.scope, "name_zh": self.scope_zh, "name_en": self.scope_en},
            "stations": list(self.stations),
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "people_received": self.people_received,
            "visits": self.people_received,
            "distinct_people": self.distinct_people,
            "visitors_by_purpose": [
                {"purpose": p, "name_zh": zh, "name_en": en, "visitors": n}
                for p, zh, en, n in self.visitors
            ],
            "matters_handled": self.matters_handled,
            "people_helped": self.totals["people_helped"],
            "cases_solved": self.totals["cases_solved"],
            "completed": self.totals.completed,
            "completed_at_station": {
                "total": sum(part.value for part in completed),
                "parts": [part.as_json() for part in completed],
            },
            "backfilled": self.totals["backfilled"] + self.backfilled_visits,
            "headline": [figure.as_json() for figure in self.headline()],
            "notes": [note.as_json() for note in self.notes],
            "totals": self.totals.as_json(),
            "kinds": [line.as_json() for line in self.kinds],
            "items": [line.as_json() for line in self.items],
            "item_groups": [group.as_json() for group in self.item_groups],
            "by_station": [line.as_json() for line in self.by_station],
            "incomplete": self.incomplete,
        }


class ItemNames(Protocol):
    """The catalogue, for the items' names, order and completion mode."""

    def get(self, code: str, version: int | None = None) -> Any: ...

    def published(self) -> list[Any]: ...


def _item_line(code: str, parts: list[Mapping[str, int]], catalogue: ItemNames | None) -> Line:
    try:
        item = catalogue.get(code) if catalogue is not None else None
    except LookupError:
        item = None
    if item is None:
        return Line(code, code, code, Counts.total(parts))
    return Line(
        code, item.name_zh, item.name_en, Counts.total(parts), completion=str(item.completion)
    )


def _item_order(counted: Iterable[str], catalogue: ItemNames | None) -> list[str]:
    """The catalogue's items in its order (station items first, then forwarded ones, each
    in the catalogue's order), then counted items it does not list, by code."""
    listed = list(catalogue.published()) if catalogue is not None else []
    ordered = [i.code for i in listed if str(i.completion) == "station"]
    ordered += [i.code for i in listed if str(i.completion) != "station"]
    return [*ordered, *sorted(set(counted) - set(ordered))]


def operation_notes(
    start: date,
    end: date,
    opened: Mapping[str, tuple[str, str, date | None]],
    today: date | None,
) -> list[Note]:
    """Warnings for a period reaching outside the stations' operation: before a station
    opened (nothing can be recorded then), or past today."""
    notes: list[Note] = []
    for code in sorted(opened):
        name, name_en, opened_on = opened[code]
        if opened_on is None or start >= opened_on:
            continue
        if end < opened_on:
            zh = f"{name}于{opened_on.isoformat()}设立，本期间尚未运行，没有任何记录。"
            en = (
                f"{name_en} opened on {opened_on.isoformat()}: it was not yet operating in this "
                "period, so there is nothing to count."
            )
        else:
            zh = (
                f"{name}于{opened_on.isoformat()}设立，{start.isoformat()}至"
                f"{(opened_on - timedelta(days=1)).isoformat()}尚未运行，这些日期没有记录。"
            )
            en = (
                f"{name_en} opened on {opened_on.isoformat()}: the days of the period before "
                "it are empty because it was not yet operating."
            )
        notes.append(Note("before_opening", zh, en))
    if today is not None and end > today:
        notes.append(
            Note(
                "future",
                f"期间包括尚未到来的日期（{(today + timedelta(days=1)).isoformat()}起），"
                "其数字尚未发生。",
                f"the period reaches past today ({today.isoformat()}): its later days have "
                "nothing yet.",
            )
        )
    return notes


def backfill_notes(totals: Counts, backfilled_visits: int) -> list[Note]:
    """What the acts entered later from paper records mean for the figures."""
    notes: list[Note] = []
    entered = totals["backfilled"] + backfilled_visits
    if entered:
        notes.append(
            Note(
                "backfilled",
                f"本期有{entered}项办理行为或来访为补录（依纸质记录事后录入），均按实际发生"
                "的时间计数、计时。",
                f"{entered} acts or visits of the period were entered later from paper "
                "records; each is counted and timed at the moment it happened.",
            )
        )
    undated = totals["undated_decisions"]
    if undated:
        rate = totals.rates()["on_time_committed_rate"]
        shown = "—" if rate is None else f"{rate * 100:.1f}%"
        notes.append(
            Note(
                "undated_decisions",
                f"有{undated}件决定是在录入纸质档案时按录入当天记录的，未填写实际办理时间，"
                f"其办理工作日一直算到录入当天，因此按时办结率（承诺时限 {shown}）偏低。"
                "补录纸质档案时，请为每一个环节（不只是收件）填写实际办理时间（需补录权限）。",
                f"{undated} decisions were recorded on the day a paper file was entered, "
                f"without the moment they were taken: their working days run to that day, "
                f"which is why the on-time rate (committed limit: {shown}) is low. When "
                "entering paper files, date every act, not only the hand-in (occurred_at, "
                "permission 'backfill').",
            )
        )
    return notes


def build_report(
    rows: Iterable[StatisticsRow],
    *,
    stations: Sequence[str],
    start: date,
    end: date,
    scope: tuple[str, str, str] | None = None,
    station_names: Mapping[str, tuple[str, str]] | None = None,
    catalogue: ItemNames | None = None,
    opened: Mapping[str, date | None] | None = None,
    today: date | None = None,
) -> StationReport:
    """The report of ``stations`` over ``start``..``end`` (both included) from the rows.

    ``scope`` is (code, name zh, name en) of the station or town reported on;
    ``station_names`` maps station codes to (zh, en) for the per-station lines;
    ``opened`` gives each station's opening day, and ``today`` the day the report is
    read, for the warnings of a period outside the stations' operation."""
    if end < start:
        raise StatisticsError(f"the period ends ({end}) before it starts ({start})")
    if not stations:
        raise StatisticsError("no station to report on")
    wanted = set(stations)
    kept = [r for r in rows if r.station in wanted and start <= r.day <= end]
    visitors: dict[str, int] = {}
    people: set[str] = set()
    backfilled_visits = 0
    kinds: dict[str, list[Mapping[str, int]]] = {kind: [] for kind in KIND_LABELS}
    items: dict[str, list[Mapping[str, int]]] = {}
    per_station: dict[str, list[Mapping[str, int]]] = {s: [] for s in sorted(wanted)}
    for row in kept:
        if row.case_kind == RECEPTION:
            visitors[row.item] = visitors.get(row.item, 0) + row.counts.get("received", 0)
            backfilled_visits += row.counts.get("backfilled", 0)
            continue
        if row.case_kind == VISITOR:
            people.add(row.item)  # a person who came to two stations of a town: one
            continue
        if row.case_kind not in kinds:
            continue
        kinds[row.case_kind].append(row.counts)
        per_station[row.station].append(row.counts)
        if row.case_kind == APPLICATION:
            items.setdefault(row.item, []).append(row.counts)
    purposes = [*PURPOSE_LABELS, *sorted(set(visitors) - set(PURPOSE_LABELS))]
    names = station_names or {}
    code, zh, en = scope or (stations[0], stations[0], stations[0])
    kind_lines = tuple(
        Line(kind, *KIND_LABELS[kind], Counts.total(parts)) for kind, parts in kinds.items()
    )
    totals = Counts.total(line.counts.values for line in kind_lines)
    openings = {s: (*names.get(s, (s, s)), (opened or {}).get(s)) for s in sorted(wanted)}
    return StationReport(
        scope=code,
        scope_zh=zh,
        scope_en=en,
        stations=tuple(sorted(wanted)),
        start=start,
        end=end,
        people_received=sum(visitors.values()),
        distinct_people=len(people),
        backfilled_visits=backfilled_visits,
        visitors=tuple(
            (p, *PURPOSE_LABELS.get(p, (p, p)), visitors[p]) for p in purposes if p in visitors
        ),
        kinds=kind_lines,
        items=tuple(
            _item_line(c, items.get(c, []), catalogue) for c in _item_order(items, catalogue)
        ),
        by_station=tuple(
            Line(s, *names.get(s, (s, s)), Counts.total(parts)) for s, parts in per_station.items()
        ),
        totals=totals,
        notes=(
            *operation_notes(start, end, openings, today),
            *backfill_notes(totals, backfilled_visits),
        ),
    )


__all__ = [
    "KIND_FIGURES",
    "KIND_LABELS",
    "KIND_WORDS",
    "MATTER_KINDS",
    "Counts",
    "Figure",
    "ItemGroup",
    "Line",
    "Note",
    "StationReport",
    "StatisticsError",
    "StatisticsRow",
    "build_report",
]
