"""Tamper evidence (pure): check rows of the log against their hashes, their cases' chains
and the signed checkpoints, and name each tampered event and what was done to it.

No database and no I/O: rows arrive in position order (from a database reader or an
exported bundle), checkpoints and public keys are handed in. :class:`Verifier` streams, so
a log of millions of events needs memory only per case, not per event.

What is checked, and what each finding means:

- **hash**: every row's hash is recomputed from its content. A mismatch is ``modified``.
- **chain**: within a case, versions run 1, 2, 3, … in position order and each event's
  ``prev_hash`` is its predecessor's hash. A missing version is ``deleted``; a version that
  turns up after a later one is ``reordered``; a second copy of a version is ``inserted``;
  a predecessor whose hash is not what its successor links to was ``modified`` and its
  hash recomputed.
- **checkpoints**: each one's signature (Ed25519, by a known key), its digest over its leaf
  list, its link to the previous checkpoint and its range (contiguous with the previous
  one). Then every event in a checkpoint's range is matched against the signed leaf at its
  position: a different hash is ``modified`` even when the attacker recomputed the hash
  and every later link (the signed leaf keeps the original); a signed leaf with no row is
  ``deleted``; a row where no leaf was signed is ``inserted``; a signed event found at
  another position is ``reordered``. An event whose only change is the link to a modified
  predecessor is reported as ``relinked`` (a consequence, not a separate act).

Segments: the rows may also be verified in consecutive ranges of positions, each by its own
verifier (``Verifier(..., after=a)`` fed the rows ``a < position <= b``, then
:meth:`Verifier.segment`), e.g. in parallel processes; :meth:`Verifier.join` combines them into
exactly the report one verifier fed every row would give. A segment doesn't know the cases'
histories before it, so it takes each case's first row there as linking correctly to its
predecessor and records that assumption; joining checks each one against the previous
segments' end state. Where an assumption fails or the previous segments leave something a
later row could resolve (a gap in a case's versions), ``join`` answers ``None``: read the
rows in one pass instead.

What cannot be detected: anything after the last valid checkpoint that keeps every hash and
link consistent — a rewritten and rehashed tail of a case, a deleted last event of a case,
an invented event appended at the end, two uncovered events of different cases swapped —
and the removal of the newest checkpoints together with the events they covered (compare
the last checkpoint's digest with a copy kept elsewhere, e.g. an earlier export).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.application.audit.checkpoint import (
    LEAF_SIZE,
    Checkpoint,
    LeafFormatError,
    Leaves,
    decode_leaves,
    signature_valid,
)
from shared.application.audit.rows import EventRow, row_hash

Kind = Literal["modified", "deleted", "inserted", "reordered", "relinked", "checkpoint"]
KIND_ORDER: dict[str, int] = {
    "checkpoint": 0,
    "deleted": 1,
    "inserted": 2,
    "reordered": 3,
    "modified": 4,
    "relinked": 5,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One sign of tampering, located as exactly as the evidence allows."""

    kind: Kind
    detail: str
    position: int | None = None
    event_id: str | None = None
    case_id: str | None = None
    case_number: str | None = None
    version: int | None = None
    checkpoint: int | None = None
    """The checkpoint whose signed leaves revealed it (or the checkpoint at fault)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The outcome of a verification."""

    events: int
    cases: int
    checkpoints: int
    valid_checkpoints: int
    covered_events: int
    """Events inside the range of a valid checkpoint (checked against its signed leaves)."""
    covered_upto: int
    """The last position covered by an unbroken chain of valid checkpoints (0: none)."""
    uncovered_events: int
    """Events after it: protected by their hashes and links only."""
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["findings"] = [f.as_dict() for f in self.findings]
        doc["ok"] = self.ok
        return doc


_BEYOND = 2**63
END = 2**63 - 1
"""The ``upto`` of the last segment: the end of the log."""
_NO_CHECKPOINT = Checkpoint(0, _BEYOND, _BEYOND, 0, b"", None, "", "", "", "")
_NO_LEAVES = Leaves((), b"")
_ASSUMED = ""
"""The event id of a case's state a segment assumed (its predecessor lies before the segment)."""


@dataclasses.dataclass(slots=True)
class _Case:
    version: int
    hash: str
    position: int
    event_id: str
    signed_hash: bytes | None  # the signed leaf's hash of the event at `version`, if covered
    number: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # A segment's cases go through a pipe: as plain tuples, a third of the time.
        return _Case, (
            self.version,
            self.hash,
            self.position,
            self.event_id,
            self.signed_hash,
            self.number,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _Leaf:
    position: int
    event_id: str
    case_id: str
    hash: str
    checkpoint: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    position: int
    event_id: str
    case_id: str
    version: int
    checkpoint: int


@dataclasses.dataclass(slots=True)
class Segment:
    """What a verifier fed the rows ``after < position <= upto`` found, for :meth:`Verifier.join`
    (plain data: it can be pickled to the process that joins)."""

    after: int
    upto: int
    events: int
    covered: int
    findings: dict[tuple[Any, ...], Finding]
    cases: dict[str, _Case]
    starts: dict[str, tuple[Any, Any, bool]]
    """Each case's first row in the segment: ``(version, prev_hash, content ok)``."""
    missing_versions: dict[tuple[str, int], tuple[int, int]]
    missing_leaves: dict[str, _Leaf]
    extra_rows: dict[str, _Row]
    tail: dict[str, _Row]
    doubts: int
    """Checks that needed the history before the segment (only one pass can decide them)."""


class Verifier:
    """Feed rows in position order (:meth:`feed`, any number of times), then :meth:`finish`.

    ``cases``: when the rows are a selection of whole cases (a filtered export), the ids of
    the selected cases; signed leaves of other cases are then not expected among the rows.
    """

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        keys: Mapping[str, Ed25519PublicKey],
        *,
        cases: Iterable[str] | None = None,
        after: int = 0,
    ) -> None:
        """``after``: the rows up to this position are verified by another verifier (this
        one is a segment: see :meth:`segment`)."""
        self._cp_findings: dict[tuple[Any, ...], Finding] = {}
        self._selected = (
            None if cases is None else {bytes.fromhex(c.replace("-", "")) for c in cases}
        )
        self._checkpoints: list[tuple[Checkpoint, Leaves]] = self._check_checkpoints(
            sorted(checkpoints, key=lambda c: c.seq), keys
        )
        self.checkpoint_count = len(checkpoints)
        self._start(after)

    def _start(self, after: int) -> None:
        """The state before the first row after ``after``."""
        self._cp = 0  # index of the checkpoint the next rows may fall in
        self._leaf = 0  # index of the next leaf of that checkpoint
        self._findings = dict(self._cp_findings)
        self._cases: dict[str, _Case] = {}
        self._missing_versions: dict[tuple[str, int], tuple[int, int]] = {}
        self._missing_leaves: dict[str, _Leaf] = {}
        self._extra_rows: dict[str, _Row] = {}
        self._tail: dict[str, _Row] = {}
        self._last_position = after
        self.events = 0
        self.covered = 0
        self._after = after
        self._starts: dict[str, tuple[Any, Any, bool]] = {}
        self._doubts = 0
        if after:
            self._skip_to(after)

    # -- checkpoints -------------------------------------------------------------------

    def _add(self, key: tuple[Any, ...], finding: Finding) -> None:
        self._findings.setdefault(key, finding)

    def _check_checkpoints(
        self, checkpoints: Sequence[Checkpoint], keys: Mapping[str, Ed25519PublicKey]
    ) -> list[tuple[Checkpoint, Leaves]]:
        """The checkpoints whose leaves can be trusted, in order; findings for the rest."""
        trusted: list[tuple[Checkpoint, Leaves]] = []
        previous: Checkpoint | None = None
        self.covered_upto = 0
        chain_intact = True
        for cp in checkpoints:
            fault = None
            expected_seq = previous.seq + 1 if previous else 1
            if cp.expected_digest() != cp.digest:
                fault = "its digest does not match its range and leaf list: it was altered"
            elif not signature_valid(cp, keys):
                fault = (
                    f"its signature is not valid under the given public key(s) "
                    f"(key id {cp.key_id}): forged or altered"
                )
            if fault is None:
                try:
                    leaves = decode_leaves(cp.leaves)
                except LeafFormatError as err:
                    fault = f"its leaf list is damaged: {err}"
                else:
                    if len(leaves) != cp.event_count:
                        fault = "its event count disagrees with its leaf list"
                    elif leaves.positions and not (
                        cp.after_position < leaves.positions[0]
                        and leaves.positions[-1] <= cp.upto_position
                    ):
                        fault = "its leaves lie outside its range"
            if fault is not None:
                self._cp_findings.setdefault(
                    ("cp", cp.seq),
                    Finding("checkpoint", f"checkpoint {cp.seq}: {fault}", checkpoint=cp.seq),
                )
                chain_intact = False
                continue
            if (
                cp.seq != expected_seq
                or (
                    previous is not None
                    and (
                        cp.prev_digest != previous.digest
                        or cp.after_position != previous.upto_position
                    )
                )
                or (previous is None and (cp.prev_digest is not None or cp.after_position != 0))
            ):
                gone = f"{expected_seq}" if cp.seq == expected_seq + 1 else f"{expected_seq}…"
                self._cp_findings.setdefault(
                    ("cp-link", cp.seq),
                    Finding(
                        "checkpoint",
                        f"checkpoint {cp.seq} does not follow "
                        + (f"checkpoint {previous.seq}" if previous else "the start of the log")
                        + f": checkpoint {gone} before it was deleted or replaced "
                        f"(positions {previous.upto_position if previous else 0}"
                        f"–{cp.after_position} are not covered by a valid checkpoint)",
                        checkpoint=cp.seq,
                    ),
                )
                chain_intact = False
            if previous is not None and cp.after_position < previous.upto_position:
                continue  # overlapping: can't use it beside the previous one
            trusted.append((cp, leaves))
            previous = cp
            if chain_intact:
                self.covered_upto = cp.upto_position
        return trusted

    def _current(self) -> tuple[Checkpoint, Leaves, int, int, Sequence[int]]:
        """The checkpoint rows may fall in now, its leaves, bounds and positions."""
        if self._cp < len(self._checkpoints):
            cp, leaves = self._checkpoints[self._cp]
            return cp, leaves, cp.after_position, cp.upto_position, leaves.positions
        return _NO_CHECKPOINT, _NO_LEAVES, _BEYOND, _BEYOND, ()

    def _skip_to(self, after: int) -> None:
        """Start at the first signed leaf after ``after`` (earlier ones are another's)."""
        checkpoints = self._checkpoints
        while self._cp < len(checkpoints) and checkpoints[self._cp][0].upto_position <= after:
            self._cp += 1
        if self._cp < len(checkpoints):
            self._leaf = bisect.bisect_right(checkpoints[self._cp][1].positions, after)

    def _close_checkpoint(self) -> None:
        """Every leaf of the current checkpoint not matched yet has no row at its position."""
        cp, leaves = self._checkpoints[self._cp]
        for index in range(self._leaf, len(leaves)):
            self._leaf_without_row(cp, leaves, index)
        self._cp += 1
        self._leaf = 0

    def _leaf_without_row(self, cp: Checkpoint, leaves: Leaves, index: int) -> None:
        record = leaves.record(index)
        if self._selected is not None and record[16:32] not in self._selected:
            return  # another case, not part of this selection
        position, event_id, case_id, hash_ = leaves.describe(index)
        self._missing_leaves[event_id] = _Leaf(position, event_id, case_id, hash_, cp.seq)

    # -- rows ---------------------------------------------------------------------------

    def feed(self, rows: Iterable[EventRow]) -> None:
        """Check the next rows (ascending positions, continuing from the previous call)."""
        checkpoints = self._checkpoints
        cases = self._cases
        covered = 0
        leaf = self._leaf
        cp, leaves, after, upto, positions = self._current()
        for row in rows:
            position = row["position"]
            if position <= self._last_position:
                self._add(
                    ("order", position),
                    Finding(
                        "reordered",
                        f"rows are not in position order: {position} after {self._last_position}",
                        position=position,
                        event_id=row["event_id"],
                        case_id=row["case_id"],
                        version=row["version"],
                    ),
                )
                continue
            self._last_position = position
            self.events += 1
            stored = row["hash"]
            content_ok = row_hash(row) == stored
            case_id = row["case_id"]
            case = cases.get(case_id)
            if case is None and self._after:
                case = self._assume(row, case_id, content_ok)
            payload = row["payload"]
            number = payload.get("case_number") if type(payload) is dict else None
            if number is not None and case is not None and case.number is None:
                case.number = number if isinstance(number, str) else None
            if not content_ok:
                self._add(
                    ("modified", position),
                    self._finding(
                        "modified",
                        row,
                        case,
                        "its content no longer matches its hash (changed after it was written)",
                    ),
                )

            # signed leaves
            signed_hash: bytes | None = None
            seq = 0
            if position > upto:
                self._leaf = leaf
                while (
                    self._cp < len(checkpoints)
                    and position > checkpoints[self._cp][0].upto_position
                ):
                    self._close_checkpoint()
                leaf = 0
                cp, leaves, after, upto, positions = self._current()
            if position > after:
                seq = cp.seq
                covered += 1
                while leaf < len(positions) and positions[leaf] < position:
                    self._leaf_without_row(cp, leaves, leaf)
                    leaf += 1
                if leaf < len(positions) and positions[leaf] == position:
                    record = leaves.records[leaf * LEAF_SIZE : (leaf + 1) * LEAF_SIZE]
                    leaf += 1
                    actual = bytes.fromhex(
                        row["event_id"].replace("-", "") + case_id.replace("-", "") + stored
                    )
                    signed_hash = record[32:]
                    if actual != record:
                        if actual[:32] == record[:32]:
                            self._changed_hash(row, case, seq, signed_hash.hex(), content_ok)
                        else:
                            self._leaf_without_row(cp, leaves, leaf - 1)
                            self._extra(row, seq)
                            signed_hash = None
                else:
                    self._extra(row, seq)
            else:
                # Outside the signed ranges: kept so a signed event moved here can be found.
                self._tail[row["event_id"]] = _Row(
                    position, row["event_id"], case_id, row["version"], 0
                )

            # the case's chain
            version = row["version"]
            if case is None:
                case = cases[case_id] = _Case(0, "", 0, "", None)
                if isinstance(number, str):
                    case.number = number
            expected = case.version + 1
            if version == expected:
                prev_hash = row["prev_hash"]
                linked = case.hash if case.version else None
                if prev_hash != linked and content_ok:
                    self._broken_link(row, case)
            elif version > expected:
                for missing in range(expected, version):
                    self._missing_versions[(case_id, missing)] = (case.position, position)
            else:
                if self._missing_versions.pop((case_id, version), None) is not None:
                    self._add(
                        ("reordered-chain", position),
                        self._finding(
                            "reordered",
                            row,
                            case,
                            f"version {version} stands at position {position}, after "
                            f"version {case.version} at position {case.position}",
                            seq or None,
                        ),
                    )
                else:
                    self._add(
                        ("inserted", position),
                        self._finding(
                            "inserted",
                            row,
                            case,
                            f"a second event with version {version} of its case",
                            seq or None,
                        ),
                    )
                continue
            case.version = version
            case.hash = stored
            case.position = position
            case.event_id = row["event_id"]
            case.signed_hash = signed_hash
        self._leaf = leaf
        self.covered += covered

    def _assume(self, row: EventRow, case_id: str, content_ok: bool) -> _Case | None:
        """A segment's first row of a case: unless it starts the case, take its link to
        the predecessor before the segment as right (:meth:`join` checks it)."""
        version, prev_hash = row["version"], row["prev_hash"]
        self._starts[case_id] = (version, prev_hash, content_ok)
        if version == 1 and prev_hash is None:
            return None  # starts its case: checked as in one pass
        if type(version) is not int or version < 2 or type(prev_hash) is not str:
            self._doubts += 1
            return None
        case = self._cases[case_id] = _Case(version - 1, prev_hash, self._after, _ASSUMED, None)
        return case

    def _finding(
        self,
        kind: Kind,
        row: EventRow,
        case: _Case | None,
        detail: str,
        checkpoint: int | None = None,
    ) -> Finding:
        return Finding(
            kind,
            detail,
            position=row["position"],
            event_id=row["event_id"],
            case_id=row["case_id"],
            case_number=case.number if case else None,
            version=row["version"],
            checkpoint=checkpoint,
        )

    def _changed_hash(
        self, row: EventRow, case: _Case | None, seq: int, signed: str, content_ok: bool
    ) -> None:
        """Same event at its signed position, but not the hash that was signed."""
        position = row["position"]
        if content_ok and case is not None and case.version and case.event_id == _ASSUMED:
            self._doubts += 1  # re-linked to a predecessor before the segment? Unknown here.
        if content_ok and case is not None and case.signed_hash and case.version:
            relinked = dict(row, prev_hash=case.signed_hash.hex())
            if row_hash(relinked) == signed:
                self._add(
                    ("relinked", position),
                    self._finding(
                        "relinked",
                        row,
                        case,
                        f"unchanged but re-linked to the altered version {case.version} and "
                        "re-hashed",
                        seq,
                    ),
                )
                return
        how = (
            "its hash was recomputed to hide it"
            if content_ok
            else "its content no longer matches its hash"
        )
        self._findings.pop(("modified", position), None)
        self._add(
            ("modified", position),
            self._finding(
                "modified",
                row,
                case,
                f"differs from what checkpoint {seq} signed (hash {signed[:12]}…); {how}",
                seq,
            ),
        )

    def _broken_link(self, row: EventRow, case: _Case) -> None:
        """The row links to a hash its predecessor no longer has."""
        if case.version == 0:
            self._add(
                ("modified", row["position"]),
                self._finding(
                    "modified",
                    row,
                    case,
                    "the first event of its case links to a predecessor",
                    None,
                ),
            )
            return
        key = ("modified", case.position)
        self._add(
            key,
            Finding(
                "modified",
                f"its hash is not the one its successor (version {row['version']}, position "
                f"{row['position']}) links to: it was changed and its hash recomputed",
                position=case.position,
                event_id=case.event_id,
                case_id=row["case_id"],
                case_number=case.number,
                version=case.version,
            ),
        )

    def _extra(self, row: EventRow, seq: int) -> None:
        self._extra_rows[row["event_id"]] = _Row(
            row["position"], row["event_id"], row["case_id"], row["version"], seq
        )

    # -- segments -----------------------------------------------------------------------

    def segment(self, upto: int) -> Segment:
        """End this segment at ``upto`` (the rows fed were ``after < position <= upto``):
        its state for :meth:`join`. Signed leaves up to ``upto`` without a row are missing."""
        if self._last_position > upto:
            raise ValueError(f"a row at position {self._last_position} lies beyond {upto}")
        checkpoints = self._checkpoints
        while self._cp < len(checkpoints) and checkpoints[self._cp][0].upto_position <= upto:
            self._close_checkpoint()
        if self._cp < len(checkpoints):
            cp, leaves = checkpoints[self._cp]
            while self._leaf < len(leaves) and leaves.positions[self._leaf] <= upto:
                self._leaf_without_row(cp, leaves, self._leaf)
                self._leaf += 1
        return Segment(
            after=self._after,
            upto=upto,
            events=self.events,
            covered=self.covered,
            findings=self._findings,
            cases=self._cases,
            starts=self._starts,
            missing_versions=self._missing_versions,
            missing_leaves=self._missing_leaves,
            extra_rows=self._extra_rows,
            tail=self._tail,
            doubts=self._doubts,
        )

    def restarted(self) -> Verifier:
        """A new verifier of the same checkpoints and keys (not checked again), e.g. to
        :meth:`join` segments."""
        fresh = object.__new__(Verifier)
        fresh._cp_findings = self._cp_findings
        fresh._selected = self._selected
        fresh._checkpoints = self._checkpoints
        fresh.covered_upto = self.covered_upto
        fresh.checkpoint_count = self.checkpoint_count
        fresh._start(0)
        return fresh

    def join(self, segments: Sequence[Segment]) -> Report | None:
        """The report for the whole log from consecutive segments (the first after position
        0, the last up to the end), exactly as if this verifier had been fed every row; or
        ``None`` when a segment's assumptions about the history before it don't hold (then
        feed the rows in one pass). Call on a new verifier with the same checkpoints
        (:meth:`restarted`)."""
        if self.events or not segments or segments[-1].upto != END:
            raise ValueError("join needs a new verifier and segments up to the end")
        upto = 0
        for segment in segments:
            if segment.after != upto:
                raise ValueError(f"segments are not consecutive at position {upto}")
            upto = segment.upto
            if segment.doubts or not self._continues(segment):
                return None
            self._absorb(segment)
        self._cp = len(self._checkpoints)
        self._last_position = upto
        return self.finish()

    def _continues(self, segment: Segment) -> bool:
        """Whether each case's first row in the segment follows its history before it."""
        cases = self._cases
        for case_id, (version, prev_hash, content_ok) in segment.starts.items():
            prior = cases.get(case_id)
            if prior is None:
                if not (version == 1 and prev_hash is None):
                    return False
            elif not (
                prior.version >= 1
                and version == prior.version + 1
                and (prev_hash == prior.hash or not content_ok)
            ):
                return False
        # A gap in a case's versions that a row of the segment might fill.
        return not any(case_id in segment.cases for case_id, _ in self._missing_versions)

    def _absorb(self, segment: Segment) -> None:
        """Add a segment whose assumptions hold: what it found, and its cases' state (a case
        number learnt before the segment stays, as it would have in one pass)."""
        cases = self._cases
        for key, finding in segment.findings.items():
            if key in self._findings:
                continue  # a checkpoint's fault, found by every verifier
            prior = cases.get(finding.case_id) if finding.case_id else None
            if prior is not None and prior.number is not None:
                finding = dataclasses.replace(finding, case_number=prior.number)
            self._findings[key] = finding
        for case_id, case in segment.cases.items():
            prior = cases.get(case_id)
            if prior is not None and prior.number is not None:
                case.number = prior.number
            cases[case_id] = case
        self._missing_versions.update(segment.missing_versions)
        self._missing_leaves.update(segment.missing_leaves)
        self._extra_rows.update(segment.extra_rows)
        self._tail.update(segment.tail)
        self.events += segment.events
        self.covered += segment.covered

    # -- the end ------------------------------------------------------------------------

    def finish(self) -> Report:
        """Resolve what only the whole log can tell, and report."""
        while self._cp < len(self._checkpoints):
            self._close_checkpoint()
        numbers = {cid: c.number for cid, c in self._cases.items()}
        for event_id, leaf in self._missing_leaves.items():
            row = self._extra_rows.pop(event_id, None) or self._tail.get(event_id)
            case_case = self._cases.get(leaf.case_id)
            if row is not None:
                self._findings.pop(("inserted", row.position), None)
                self._add(
                    ("reordered", row.position),
                    Finding(
                        "reordered",
                        f"checkpoint {leaf.checkpoint} signed it at position {leaf.position}; "
                        f"it now stands at position {row.position}",
                        position=row.position,
                        event_id=event_id,
                        case_id=row.case_id,
                        case_number=numbers.get(row.case_id),
                        version=row.version,
                        checkpoint=leaf.checkpoint,
                    ),
                )
                continue
            version = None
            for (cid, missing), (before, after) in list(self._missing_versions.items()):
                if cid == leaf.case_id and before < leaf.position < after:
                    version = missing
                    del self._missing_versions[(cid, missing)]
                    break
            self._add(
                ("deleted", leaf.position),
                Finding(
                    "deleted",
                    f"checkpoint {leaf.checkpoint} signed this event at position "
                    f"{leaf.position}; it is gone",
                    position=leaf.position,
                    event_id=event_id,
                    case_id=leaf.case_id,
                    case_number=case_case.number if case_case else None,
                    version=version,
                    checkpoint=leaf.checkpoint,
                ),
            )
        for row in self._extra_rows.values():
            self._add(
                ("inserted", row.position),
                Finding(
                    "inserted",
                    f"position {row.position} lies in checkpoint {row.checkpoint}'s range, "
                    "which signed no event there",
                    position=row.position,
                    event_id=row.event_id,
                    case_id=row.case_id,
                    case_number=numbers.get(row.case_id),
                    version=row.version,
                    checkpoint=row.checkpoint,
                ),
            )
        for (case_id, version), (before, after) in self._missing_versions.items():
            self._add(
                ("deleted-version", case_id, version),
                Finding(
                    "deleted",
                    f"version {version} of the case is missing (between positions {before} "
                    f"and {after})",
                    case_id=case_id,
                    case_number=numbers.get(case_id),
                    version=version,
                ),
            )
        # A case whose events a checkpoint proves moved: its versions out of order follow
        # from those moves, and the chain can't tell which of two events moved.
        moved_cases = {f.case_id for k, f in self._findings.items() if k[0] == "reordered"}
        for key in [k for k, f in self._findings.items() if k[0] == "reordered-chain"]:
            if self._findings[key].case_id in moved_cases:
                del self._findings[key]
        findings = sorted(
            self._findings.values(),
            key=lambda f: (f.position or 0, KIND_ORDER[f.kind], f.checkpoint or 0),
        )
        return Report(
            events=self.events,
            cases=len(self._cases),
            checkpoints=self.checkpoint_count,
            valid_checkpoints=len(self._checkpoints),
            covered_events=self.covered,
            covered_upto=self.covered_upto,
            uncovered_events=self.events - self.covered,
            findings=tuple(findings),
        )


def verify(
    rows: Iterable[EventRow],
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    cases: Iterable[str] | None = None,
) -> Report:
    """Verify rows (in position order) against their hashes, chains and checkpoints."""
    verifier = Verifier(checkpoints, keys, cases=cases)
    verifier.feed(rows)
    return verifier.finish()
