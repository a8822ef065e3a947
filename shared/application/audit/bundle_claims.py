"""What a bundle's manifest claims, checked against what the bundle holds (pure).

The manifest is not signed: anyone can edit it. Whatever it says about the bundle's
selection (complete log or a station's/period's cases, which cases, how many events) is
therefore checked against the rows actually present before it is believed, and a
verification says prominently which of the two the bundle is, since a selection's
verifier can't see cases outside it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from shared.application.audit.rows import EventRow
from shared.application.audit.verify import Finding
from shared.domain.delegation import CASE_KIND as DELEGATION_KIND
from shared.domain.workcalendar import CHINA_TZ

_SHOWN = 3
"""Case ids named in one finding before "and N more"."""


class ManifestError(ValueError):
    """The manifest is not a bundle manifest's shape; ``str()`` says where."""


class _Selection(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    station: str | None = None
    start: dt.date | None = Field(default=None, alias="from")
    end: dt.date | None = Field(default=None, alias="to")


class _Events(BaseModel):
    count: StrictInt
    first_position: StrictInt | None
    last_position: StrictInt | None


class _File(BaseModel):
    sha256: str
    bytes: StrictInt
    lines: StrictInt


class _Checkpoint(BaseModel):
    model_config = ConfigDict(extra="allow")
    seq: StrictInt
    digest: str


class Manifest(BaseModel):
    """The manifest's shape (what ``export_bundle`` writes)."""

    model_config = ConfigDict(extra="allow")
    complete_log: StrictBool
    selection: _Selection
    cases: list[uuid.UUID] | None
    events: _Events
    case_count: StrictInt
    files: dict[str, _File]
    checkpoints: list[_Checkpoint]


def parse_manifest(doc: dict[str, Any]) -> Manifest:
    """The manifest's claims; :class:`ManifestError` naming the first bad field."""
    try:
        return Manifest.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the manifest"
        raise ManifestError(f"{where}: {first['msg']}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """What a verification covered: the complete log, or a selection of whole cases."""

    complete: bool
    station: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    cases: int | None = None
    """How many cases a selection names."""

    def describe(self) -> str:
        if self.complete:
            return "the complete log: every event and case is checked"
        period = (
            f"{self.start.isoformat() if self.start else '…'} to "
            f"{self.end.isoformat() if self.end else '…'}"
        )
        what = f"station {self.station or 'any'}, period {period}, {self.cases or 0} cases"
        return (
            f"a selection ({what}): only these cases are checked; "
            "cases not in the selection are not checked, nor whether any are missing"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "complete_log": self.complete,
            "station": self.station,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "cases": self.cases,
            "meaning": self.describe(),
        }


COMPLETE = Scope(complete=True)


def scope_of(manifest: Manifest) -> Scope:
    """The scope the manifest claims (believe it only once :class:`Claims` agrees)."""
    if manifest.complete_log:
        return COMPLETE
    s = manifest.selection
    return Scope(False, s.station, s.start, s.end, len(manifest.cases or []))


def _utc_text(day: dt.date) -> str:
    moment = dt.datetime.combine(day, dt.time(), CHINA_TZ).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ids(ids: set[str]) -> str:
    shown = sorted(ids)[:_SHOWN]
    more = len(ids) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _claim(detail: str, kind: Any = "modified", case_id: str | None = None) -> Finding:
    return Finding(kind, f"bundle manifest: {detail}", case_id=case_id)


class Claims:
    """Feed the bundle's rows (:meth:`feed`), then :meth:`findings` for every manifest claim
    the rows or checkpoints contradict."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        s = manifest.selection
        self._lo = _utc_text(s.start) if s.start else None
        self._hi = _utc_text(s.end + dt.timedelta(days=1)) if s.end else None
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.case_ids: set[str] = set()
        self._station: dict[str, str | None] = {}
        self._applications: set[str] = set()
        self._in_period: set[str] = set()

    def feed(self, rows: list[EventRow]) -> None:
        if not rows:
            return
        self.count += len(rows)
        if self.first is None:
            self.first = rows[0]["position"]
        self.last = rows[-1]["position"]
        lo, hi = self._lo, self._hi
        for row in rows:
            case_id = row["case_id"]
            self.case_ids.add(case_id)
            if row["case_kind"] == DELEGATION_KIND:
                continue
            self._applications.add(case_id)
            if row["version"] == 1:
                payload = row["payload"]
                station = payload.get("station") if isinstance(payload, dict) else None
                self._station[case_id] = station or row["actor_station"]
            occurred = row["occurred_at"]
            if (lo is None or occurred >= lo) and (hi is None or occurred < hi):
                self._in_period.add(case_id)

    def findings(
        self, checkpoint_lines: int, checkpoint_digests: list[tuple[int, str]]
    ) -> list[Finding]:
        m = self.manifest
        found: list[Finding] = []
        s = m.selection
        everything = s.station is None and s.start is None and s.end is None
        if m.complete_log:
            if not everything:
                found.append(_claim("it says the complete log, yet names a station or period"))
            if m.cases is not None:
                found.append(_claim("it says the complete log, yet lists selected cases"))
        else:
            if everything:
                found.append(
                    _claim("it says a selection of cases, yet names no station and no period")
                )
            listed = {str(c) for c in m.cases or []}
            missing = listed - self.case_ids
            extra = self.case_ids - listed
            if missing:
                found.append(
                    _claim(
                        f"{len(missing)} cases of its selection have no event in the bundle: "
                        f"{_ids(missing)}",
                        "deleted",
                    )
                )
            if extra:
                found.append(
                    _claim(
                        f"{len(extra)} cases in the bundle are not in its selection: {_ids(extra)}",
                        "inserted",
                    )
                )
            if not everything:
                outside = {
                    c
                    for c in self._applications
                    if (s.station is not None and self._station.get(c) != s.station)
                    or c not in self._in_period
                }
                if outside:
                    found.append(
                        _claim(
                            f"{len(outside)} cases in the bundle do not belong to its selection "
                            f"(another station, or no event in the period): {_ids(outside)}",
                            "inserted",
                        )
                    )
        counts = [
            ("events.count", m.events.count, self.count),
            ("events.first_position", m.events.first_position, self.first),
            ("events.last_position", m.events.last_position, self.last),
            ("case_count", m.case_count, len(self.case_ids)),
        ]
        for name, events_file in (
            ("events.jsonl", self.count),
            ("checkpoints.jsonl", checkpoint_lines),
        ):
            entry = m.files.get(name)
            if entry is None:
                found.append(_claim(f"files lists no {name}"))
            else:
                counts.append((f"files.{name}.lines", entry.lines, events_file))
        for name, claimed, actual in counts:
            if claimed != actual:
                found.append(_claim(f"{name} says {claimed}, the bundle holds {actual}"))
        listed_cps = [(c.seq, c.digest) for c in m.checkpoints]
        if listed_cps != checkpoint_digests:
            found.append(
                _claim(
                    f"its checkpoint list ({len(listed_cps)}) differs from checkpoints.jsonl "
                    f"({len(checkpoint_digests)}) in sequence numbers or digests"
                )
            )
        return found
