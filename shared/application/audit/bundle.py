"""Portable bundles: an exported copy of the log that an auditor verifies elsewhere.

A bundle is a folder:

- ``events.jsonl``: one event per line, every column of ``events`` exactly as stored (in
  the portable row form of ``shared.application.audit.rows``), in position order;
- ``checkpoints.jsonl``: every signed checkpoint, its leaf list in base64;
- ``manifest.json``: the SHA-256, size and line count of both files, the selection, the
  event count and position range, each checkpoint's range, digest and signature, and the
  public key (PEM) that signed them.

**What a filtered bundle holds** (``--station``, ``--from``, ``--to``): whole cases, never
parts of one: every case that had an event occurring in the period (local dates, China
time) and whose station (its first event's ``station``, else the actor's) is the one
asked for; all their events, up to the export, also those outside the period. Plus the
delegation instruments' own events (read models and compliance need them). The leaf lists
of *all* checkpoints go along: with them an auditor proves each included case is complete
and unaltered (every leaf signed for that case id is in the bundle, with the same hash).
They carry ids and hashes of other cases, never their content. What a filtered bundle
can't prove is that no *other* case of the station exists: leaves don't say which station
an event belongs to. A full export can.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.application.audit.bundle_claims import (
    Claims,
    Manifest,
    ManifestError,
    Scope,
    parse_manifest,
    scope_of,
)
from shared.application.audit.bundle_lines import (
    checkpoint_from_line,
    row_forms_ok,
    row_problem,
    row_types_ok,
)
from shared.application.audit.checkpoint import Checkpoint
from shared.application.audit.keys import AuditKeyError, keys_by_id, parse_public_keys, public_pem
from shared.application.audit.rows import EventRow
from shared.application.audit.source import stream_rows
from shared.application.audit.verify import Finding, Report, Verifier
from shared.application.audit.writer import load_checkpoints
from shared.domain.delegation import CASE_KIND as DELEGATION_KIND
from shared.domain.workcalendar import CHINA_TZ

FORMAT = "caseflow-audit-bundle/1"
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints.jsonl"


class BundleError(Exception):
    """The bundle can't be written or read; ``str()`` says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """Which cases an export holds: all, or a station's and/or a period's."""

    station: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    """Inclusive: events occurring on this local date count."""

    @property
    def everything(self) -> bool:
        return self.station is None and self.start is None and self.end is None

    def bounds(self) -> tuple[str | None, str | None]:
        """The period as canonical UTC text bounds ``[lo, hi)``."""

        def utc(day: dt.date) -> str:
            moment = dt.datetime.combine(day, dt.time(), CHINA_TZ).astimezone(dt.UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        lo = utc(self.start) if self.start else None
        hi = utc(self.end + dt.timedelta(days=1)) if self.end else None
        return lo, hi

    def as_dict(self) -> dict[str, Any]:
        return {
            "station": self.station,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
        }


def checkpoint_doc(cp: Checkpoint, *, leaves: bool = True) -> dict[str, Any]:
    doc = dataclasses.asdict(cp)
    if leaves:
        doc["leaves"] = base64.b64encode(cp.leaves).decode("ascii")
    else:
        del doc["leaves"]
    return doc


def checkpoint_from_doc(doc: Mapping[str, Any], line: int = 0) -> Checkpoint:
    """The checkpoint of a parsed line of ``checkpoints.jsonl`` (its number ``line``)."""
    try:
        return checkpoint_from_line(doc)
    except ValueError as err:
        raise BundleError(f"line {line} of {CHECKPOINTS}: {err}") from None


async def _select_cases(engine: AsyncEngine, selection: Selection) -> set[str]:
    """The case ids a filtered export holds (see the module docstring)."""
    lo, hi = selection.bounds()
    station_of: dict[str, str | None] = {}
    in_period: set[str] = set()
    delegations: set[str] = set()
    async for rows in stream_rows(engine):
        for row in rows:
            case_id = row["case_id"]
            if row["case_kind"] == DELEGATION_KIND:
                delegations.add(case_id)
                continue
            if row["version"] == 1:
                payload = row["payload"]
                station = payload.get("station") if isinstance(payload, dict) else None
                station_of[case_id] = station or row["actor_station"]
            occurred = row["occurred_at"]
            if (lo is None or occurred >= lo) and (hi is None or occurred < hi):
                in_period.add(case_id)
    chosen = {
        c for c in in_period if selection.station is None or station_of.get(c) == selection.station
    }
    return chosen | delegations


class _HashingWriter:
    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.lines = 0

    def write(self, line: bytes) -> None:
        self.file.write(line)
        self.sha.update(line)
        self.bytes += len(line)
        self.lines += 1

    def close(self) -> dict[str, Any]:
        self.file.close()
        return {"sha256": self.sha.hexdigest(), "bytes": self.bytes, "lines": self.lines}


def _prepare(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} already exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)


async def export_bundle(
    engine: AsyncEngine,
    out: Path,
    public_keys: Mapping[str, Ed25519PublicKey],
    selection: Selection = Selection(),
) -> dict[str, Any]:
    """Write a bundle of the log behind ``engine`` into the new folder ``out``; the manifest."""
    async with engine.connect() as conn:
        checkpoints = await load_checkpoints(conn)  # first: a log without schema leaves no folder
        await conn.rollback()
    _prepare(out)
    cases = None if selection.everything else await _select_cases(engine, selection)
    events = _HashingWriter(out / EVENTS)
    first = last = None
    case_ids: set[str] = set()
    try:
        async for rows in stream_rows(engine, cases=cases):
            for row in rows:
                events.write(orjson.dumps(row) + b"\n")
                case_ids.add(row["case_id"])
                first = row["position"] if first is None else first
                last = row["position"]
    finally:
        events_entry = events.close()
    cps = _HashingWriter(out / CHECKPOINTS)
    for cp in checkpoints:
        cps.write(orjson.dumps(checkpoint_doc(cp)) + b"\n")
    cps_entry = cps.close()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "selection": selection.as_dict(),
        "complete_log": cases is None,
        "cases": sorted(cases) if cases is not None else None,
        "events": {"count": events_entry["lines"], "first_position": first, "last_position": last},
        "case_count": len(case_ids),
        "files": {EVENTS: events_entry, CHECKPOINTS: cps_entry},
        "checkpoints": [checkpoint_doc(cp, leaves=False) for cp in checkpoints],
        "public_keys": [public_pem(k) for k in public_keys.values()],
    }
    (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle opened for reading: its manifest and checkpoints; events are streamed."""

    path: Path
    manifest: dict[str, Any]
    checkpoints: list[Checkpoint]
    claims: Manifest
    """What the (unsigned) manifest claims: checked against the rows by :func:`verify_bundle`."""

    @property
    def cases(self) -> list[str] | None:
        """The selected case ids the manifest names (``None``: the complete log)."""
        if self.claims.complete_log:
            return None
        return [str(c) for c in self.claims.cases or []]

    @property
    def scope(self) -> Scope:
        """The complete log or a selection, as the manifest says (verify before relying)."""
        return scope_of(self.claims)

    def keys(self) -> dict[str, Ed25519PublicKey]:
        """The public keys the bundle carries (trust them only after comparing their ids)."""
        keys: dict[str, Ed25519PublicKey] = {}
        try:
            for pem in self.manifest.get("public_keys") or []:
                keys.update(parse_public_keys(pem))
        except (AuditKeyError, ValueError) as err:
            raise BundleError(f"{MANIFEST}: the public key can't be read: {err}") from None
        return keys

    def rows(self, batch: int = 10_000, *, forms: bool = True) -> Iterator[list[EventRow]]:
        """The events, in the file's order, in batches; :class:`BundleError` naming the
        first line that is not an event row.

        ``forms=False`` checks each row's fields and types only, not the forms of its ids,
        hashes and times (quicker; the verifier's use, see :func:`verify_bundle`).
        """
        with (self.path / EVENTS).open("rb") as f:
            rows: list[EventRow] = []
            for number, line in enumerate(f, 1):
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    raise BundleError(f"line {number} of {EVENTS}: not JSON ({err})") from None
                if not row_types_ok(row) or (forms and not row_forms_ok(row)):
                    _bad_line(row, number)
                rows.append(row)
                if len(rows) == batch:
                    yield rows
                    rows = []
            if rows:
                yield rows

    def file_findings(self) -> list[Finding]:
        """The bundle's files whose hash, size or lines differ from the manifest's."""
        findings = []
        for name, expected in (self.manifest.get("files") or {}).items():
            path = self.path / name
            if not path.is_file():
                findings.append(Finding("deleted", f"bundle file {name} is missing"))
                continue
            sha = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    sha.update(block)
            if sha.hexdigest() != expected.get("sha256"):
                findings.append(
                    Finding("modified", f"bundle file {name} differs from its manifest hash")
                )
        return findings


def _bad_line(row: Any, number: int) -> None:
    """Raise :class:`BundleError` if ``row`` (line ``number``) is not an event row."""
    problem = row_problem(row)
    if problem is not None:
        raise BundleError(f"line {number} of {EVENTS}: {problem}")


def open_bundle(path: Path) -> Bundle:
    """Read a bundle's manifest and checkpoints; :class:`BundleError` if it isn't one."""
    try:
        manifest = orjson.loads((path / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{path} is not an audit bundle (no {MANIFEST})") from None
    except orjson.JSONDecodeError as err:
        raise BundleError(f"{path / MANIFEST} is not JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path / MANIFEST} is not a {FORMAT} manifest")
    try:
        claims = parse_manifest(manifest)
    except ManifestError as err:
        raise BundleError(f"{path / MANIFEST} is damaged: {err}") from None
    checkpoints = []
    cp_path = path / CHECKPOINTS
    if cp_path.is_file():
        with cp_path.open("rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    raise BundleError(f"line {number} of {CHECKPOINTS}: not JSON ({err})") from None
                checkpoints.append(checkpoint_from_doc(doc, number))
    return Bundle(path, manifest, checkpoints, claims)


def verify_bundle(bundle: Bundle, keys: Mapping[str, Ed25519PublicKey] | None = None) -> Report:
    """Verify a bundle with ``keys`` (default: the key it carries).

    The manifest's claims (complete log or which cases, the counts) are checked against
    the rows too: a selection is only believed when the rows hold exactly its cases.
    """
    keys = bundle.keys() if keys is None else keys
    verifier = Verifier(bundle.checkpoints, keys, cases=bundle.cases)
    claims = Claims(bundle.claims)
    line = 1
    for rows in bundle.rows(forms=False):
        try:
            verifier.feed(rows)
        except ValueError:
            # A malformed id or hash (the rows' forms are only checked when one fails).
            for number, row in enumerate(rows, line):
                _bad_line(row, number)
            raise
        claims.feed(rows)
        line += len(rows)
    report = verifier.finish()
    digests = [(cp.seq, cp.digest) for cp in bundle.checkpoints]
    files = [*bundle.file_findings(), *claims.findings(len(bundle.checkpoints), digests)]
    if files:
        report = dataclasses.replace(report, findings=(*files, *report.findings))
    return report


async def aiter_rows(bundle: Bundle) -> AsyncIterator[list[EventRow]]:
    """The bundle's rows for async callers (a replay)."""
    for rows in bundle.rows():
        yield rows


__all__ = [
    "Bundle",
    "BundleError",
    "Scope",
    "Selection",
    "export_bundle",
    "keys_by_id",
    "open_bundle",
    "verify_bundle",
]
