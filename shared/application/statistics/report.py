"""The station statistics report, as the story reports a station's work: people
received, matters handled by kind (convenience services by item, mediations, legal-
publicity sessions, assistance and rescue, police assistance), completed at the station
vs forwarded upstream, on time against the committed and the legal limit, average working
days, satisfaction. A pure function of the ``statistics`` projection's rows. No I/O.

Every figure counts the events of the period (days in China, both ends included): cases
received in it, decided in it, rated in it. Rates are None when nothing was there to
rate; the output depends only on the rows and the options, so a replayed copy of the log
gives the same report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Protocol

from shared.adapters.tables.statistics import STATISTICS_MEASURES
from shared.domain.tally import APPLICATION, MATTER_KINDS, RECEPTION

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
MEASURE_LABELS: Mapping[str, tuple[str, str]] = {
    "received": ("受理/登记", "received"),
    "accepted": ("受理", "accepted"),
    "corrections": ("一次性告知", "correction notices"),
    "not_accepted": ("不予受理", "not accepted"),
    "withdrawn": ("撤回", "withdrawn"),
    "forwarded": ("转报上级", "forwarded upstream"),
    "completed_at_station": ("站内办结", "completed at the station"),
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


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of the report: a kind of matter, a service item, or a station."""

    code: str
    name_zh: str
    name_en: str
    counts: Counts
    completion: str | None = None
    """For a service item: ``station`` (一办到头) or ``forwarded``."""

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            **self.counts.as_json(),
        }
        if self.completion is not None:
            data["completion"] = self.completion
        return data


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
    visitors: tuple[tuple[str, str, str, int], ...]
    """(purpose, label zh, label en, visitors) in the order of ``PURPOSE_LABELS``."""
    kinds: tuple[Line, ...]
    items: tuple[Line, ...]
    by_station: tuple[Line, ...]
    totals: Counts
    incomplete: str | None = None
    """Why the figures may not count every event of the log yet (the statistics
    projection is being rebuilt, or has never run), or None."""

    @property
    def matters_handled(self) -> int:
        """Matters taken on in the period, every kind (办理事项)."""
        return sum(line.counts["received"] for line in self.kinds)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, keys in a fixed order."""
        return {
            "scope": {"code": self.scope, "name_zh": self.scope_zh, "name_en": self.scope_en},
            "stations": list(self.stations),
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "people_received": self.people_received,
            "visitors_by_purpose": [
                {"purpose": p, "name_zh": zh, "name_en": en, "visitors": n}
                for p, zh, en, n in self.visitors
            ],
            "matters_handled": self.matters_handled,
            "completed": self.totals.completed,
            "totals": self.totals.as_json(),
            "kinds": [line.as_json() for line in self.kinds],
            "items": [line.as_json() for line in self.items],
            "by_station": [line.as_json() for line in self.by_station],
            "incomplete": self.incomplete,
        }


class ItemNames(Protocol):
    """The catalogue, for the items' names and completion mode."""

    def get(self, code: str, version: int | None = None) -> Any: ...


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


def build_report(
    rows: Iterable[StatisticsRow],
    *,
    stations: Sequence[str],
    start: date,
    end: date,
    scope: tuple[str, str, str] | None = None,
    station_names: Mapping[str, tuple[str, str]] | None = None,
    catalogue: ItemNames | None = None,
) -> StationReport:
    """The report of ``stations`` over ``start``..``end`` (both included) from the rows.

    ``scope`` is (code, name zh, name en) of the station or town reported on;
    ``station_names`` maps station codes to (zh, en) for the per-station lines."""
    if end < start:
        raise StatisticsError(f"the period ends ({end}) before it starts ({start})")
    if not stations:
        raise StatisticsError("no station to report on")
    wanted = set(stations)
    kept = [r for r in rows if r.station in wanted and start <= r.day <= end]
    visitors: dict[str, int] = {}
    kinds: dict[str, list[Mapping[str, int]]] = {kind: [] for kind in KIND_LABELS}
    items: dict[str, list[Mapping[str, int]]] = {}
    per_station: dict[str, list[Mapping[str, int]]] = {s: [] for s in sorted(wanted)}
    for row in kept:
        if row.case_kind == RECEPTION:
            visitors[row.item] = visitors.get(row.item, 0) + row.counts.get("received", 0)
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
    return StationReport(
        scope=code,
        scope_zh=zh,
        scope_en=en,
        stations=tuple(sorted(wanted)),
        start=start,
        end=end,
        people_received=sum(visitors.values()),
        visitors=tuple(
            (p, *PURPOSE_LABELS.get(p, (p, p)), visitors[p]) for p in purposes if p in visitors
        ),
        kinds=kind_lines,
        items=tuple(_item_line(c, items[c], catalogue) for c in sorted(items)),
        by_station=tuple(
            Line(s, *names.get(s, (s, s)), Counts.total(parts)) for s, parts in per_station.items()
        ),
        totals=Counts.total(line.counts.values for line in kind_lines),
    )


__all__ = [
    "KIND_LABELS",
    "MATTER_KINDS",
    "Counts",
    "Line",
    "StationReport",
    "StatisticsError",
    "StatisticsRow",
    "build_report",
]
