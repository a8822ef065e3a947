"""A bundle line that is JSON but not an event row (or not a checkpoint) is a clear error
naming its line, for verify and replay, not a traceback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from shared.application.audit.bundle import BundleError, open_bundle
from shared.cli.main import app
from tests.integration.test_audit_bundle import _prepare

runner = CliRunner()
Doc = dict[str, Any]


@pytest.fixture
def bundle(db_url: str, tmp_path: Path) -> Path:
    asyncio.run(_prepare(db_url, tmp_path))
    out = tmp_path / "bundle"
    key = tmp_path / "keys" / "audit-ed25519.pem"
    result = runner.invoke(
        app,
        ["audit", "export", "--out", str(out), "--database-url", db_url, "--key-file", str(key)],
    )
    assert result.exit_code == 0, result.output
    return out


def _edit_line(path: Path, index: int, edit: Callable[[Doc], Any]) -> None:
    lines = path.read_bytes().splitlines()
    lines[index] = orjson.dumps(edit(orjson.loads(lines[index])))
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _without(name: str) -> Callable[[Doc], Doc]:
    return lambda d: {k: v for k, v in d.items() if k != name}


def _with(**values: Any) -> Callable[[Doc], Doc]:
    return lambda d: {**d, **values}


Edit = tuple[Callable[[Doc], Any], str]
EVENT_LINES: list[Edit] = [
    (_without("case_id"), "field case_id missing"),
    (_without("position"), "field position missing"),
    (lambda d: [d], "an event must be a JSON object, not an array"),
    (lambda d: "text", "an event must be a JSON object, not a string"),
    (_with(extra=1), "unknown field extra"),
    (_with(position="7"), "position must be an integer, not a string"),
    (_with(version=None), "version must be an integer, not null"),
    (_with(payload=[1]), "payload must be an object, not an array"),
    (_with(hash="zz" * 32), "hash must be 64 hex digits"),
    (_with(event_id="not-a-uuid"), "event_id must be a UUID"),
]
CHANGED_FORMS: list[Edit] = [
    (_with(occurred_at="yesterday"), "occurred_at must be a UTC time"),
    (_with(prev_hash="abc"), "prev_hash must be 64 hex digits or null"),
]
"""Well typed, but of the wrong form where the verifier reads no form: verify reports the
changed content (quickly, without checking every row's forms); reading rows for a replay
names the line."""
CHECKPOINT_LINES: list[Edit] = [
    (_with(seq="1"), "seq must be an integer, not a string"),
    (_with(upto_position=2**63), "upto_position 9223372036854775808 is out of range"),
    (_with(event_count=-1), "event_count -1 is out of range"),
    (_with(prev_digest="xyz"), "prev_digest must be 64 hex digits or null"),
    (_with(digest=5), "digest must be a string, not an integer"),
    (_with(leaves="%%%"), "leaves is not base64"),
    (_without("signature"), "field signature missing"),
    (lambda d: 3, "a checkpoint must be a JSON object, not an integer"),
]


def test_a_malformed_line_is_named_by_verify_and_replay(bundle: Path, tmp_path: Path) -> None:
    cases: list[tuple[str, int, Callable[[Doc], Any], str]]
    cases = [("events.jsonl", 6, edit, message) for edit, message in EVENT_LINES]
    cases += [("checkpoints.jsonl", 1, edit, message) for edit, message in CHECKPOINT_LINES]
    for n, (name, index, edit, message) in enumerate(cases):
        copy = tmp_path / f"copy{n}"
        shutil.copytree(bundle, copy)
        _edit_line(copy / name, index, edit)
        expected = f"line {index + 1} of {name}: {message}"
        for command, code in (
            (["verify", "--bundle", str(copy)], 2),
            (["verify", "--bundle", str(copy), "--json"], 2),
            (
                ["replay", str(copy), "--database-url", f"sqlite+aiosqlite:///{copy / 't.db'}"],
                2,
            ),
        ):
            result = runner.invoke(app, ["audit", *command])
            assert result.exit_code == code, (expected, command, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                expected,
                result.exception,
            )
            assert expected in " ".join(result.output.split()), (expected, result.output)


def test_a_row_of_the_wrong_form_is_tampering_for_verify_and_named_when_read(
    bundle: Path, tmp_path: Path
) -> None:
    for n, (edit, message) in enumerate(CHANGED_FORMS):
        copy = tmp_path / f"form{n}"
        shutil.copytree(bundle, copy)
        _edit_line(copy / "events.jsonl", 6, edit)
        result = runner.invoke(app, ["audit", "verify", "--bundle", str(copy), "--json"])
        assert result.exit_code == 1, result.output
        report = orjson.loads(result.output.strip().splitlines()[-1])
        assert {f["kind"] for f in report["findings"]} == {"modified"}, report
        with pytest.raises(BundleError, match=f"line 7 of events.jsonl: {message}"):
            for _ in open_bundle(copy).rows():
                pass


def test_an_export_is_readable_by_its_operator_only(bundle: Path) -> None:
    """The bundle holds applicants in full: no group or other access, folder or files."""
    for path in [bundle, *bundle.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
