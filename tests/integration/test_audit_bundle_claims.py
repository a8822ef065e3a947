"""A bundle's manifest is not signed: its claims (complete log or a selection, which cases,
how many events) are checked against the rows, and a verification says which it is."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from shared.cli.main import app
from tests.integration.test_audit_bundle import _prepare

runner = CliRunner()
Doc = dict[str, Any]


def caseflow(*args: str) -> Any:
    return runner.invoke(app, ["audit", *args], catch_exceptions=False)


def _lines(folder: Path) -> list[Doc]:
    return [orjson.loads(line) for line in (folder / "events.jsonl").read_bytes().splitlines()]


def _rewrite(folder: Path, rows: list[Doc], edit: Callable[[Doc], None]) -> None:
    """Write ``rows`` as the bundle's events and mend the manifest's file entry, as a
    careful forger would, then apply ``edit`` to the manifest."""
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    (folder / "events.jsonl").write_bytes(data)
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    manifest["files"]["events.jsonl"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "lines": len(rows),
    }
    edit(manifest)
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))


def _recount(manifest: Doc, rows: list[Doc]) -> None:
    manifest["events"] = {
        "count": len(rows),
        "first_position": rows[0]["position"],
        "last_position": rows[-1]["position"],
    }
    manifest["case_count"] = len({r["case_id"] for r in rows})


def _verify(folder: Path) -> tuple[int, Doc]:
    result = caseflow("verify", "--bundle", str(folder), "--json")
    return result.exit_code, orjson.loads(result.output.strip().splitlines()[-1])


def _details(report: Doc) -> str:
    return " | ".join(f["detail"] for f in report["findings"])


def test_a_forged_selection_in_the_manifest_is_a_finding(db_url: str, tmp_path: Path) -> None:
    cases = asyncio.run(_prepare(db_url, tmp_path))
    key_file = tmp_path / "keys" / "audit-ed25519.pem"
    full = tmp_path / "full"
    assert (
        caseflow(
            "export", "--out", str(full), "--database-url", db_url, "--key-file", str(key_file)
        ).exit_code
        == 0
    )
    station = tmp_path / "station"
    assert (
        caseflow(
            "export",
            "--out",
            str(station),
            "--database-url",
            db_url,
            "--key-file",
            str(key_file),
            "--station",
            "xuefeng_station",
        ).exit_code
        == 0
    )
    code, report = _verify(full)
    assert code == 0 and report["scope"]["complete_log"] is True
    code, report = _verify(station)
    assert code == 0 and report["scope"]["complete_log"] is False
    assert report["scope"]["station"] == "xuefeng_station"
    assert report["scope"]["cases"] == len(cases["xuefeng"]) + 1  # and the delegation
    assert "not checked" in report["scope"]["meaning"]

    rows = _lines(full)
    victim = str(cases["other"][0])
    last_of_victim = max((r for r in rows if r["case_id"] == victim), key=lambda r: r["position"])

    def no_cases(m: Doc) -> None:  # the reviewer's attack: everything ignored
        m["complete_log"] = False
        m["cases"] = []

    def listed(ids: set[str], station: str | None) -> Callable[[Doc], None]:
        def edit(m: Doc) -> None:
            m["complete_log"] = False
            m["cases"] = sorted(ids)
            m["selection"]["station"] = station

        return edit

    kept_tail = [r for r in rows if r["event_id"] != last_of_victim["event_id"]]
    kept_case = [r for r in rows if r["case_id"] != victim]
    all_ids = {r["case_id"] for r in rows}
    tamperings: list[tuple[str, Path, list[Doc], Callable[[Doc], None], str]] = [
        ("last event of a case gone, cases: []", full, kept_tail, no_cases, "not in its selection"),
        ("a whole case gone, cases: []", full, kept_case, no_cases, "not in its selection"),
        (
            "a whole case gone, the rest listed, no station or period",
            full,
            kept_case,
            listed(all_ids - {victim}, None),
            "names no station and no period",
        ),
        (
            "a whole case gone, the rest claimed as one station's",
            full,
            kept_case,
            listed(all_ids - {victim}, "xuefeng_station"),
            "do not belong to its selection",
        ),
        (
            "a case left out of the list, its rows kept",
            station,
            _lines(station),
            listed(
                {r["case_id"] for r in _lines(station)} - {str(cases["xuefeng"][0])},
                "xuefeng_station",
            ),
            "not in its selection",
        ),
        (
            "a listed case's rows gone, counts left",
            station,
            [r for r in _lines(station) if r["case_id"] != str(cases["xuefeng"][0])],
            lambda m: None,
            "have no event in the bundle",
        ),
        (
            "a selection called the complete log",
            station,
            _lines(station),
            lambda m: m.update(complete_log=True),
            "yet names a station",
        ),
        ("more events claimed", full, rows, lambda m: m["events"].update(count=999), "999"),
    ]
    for name, source, kept, edit, expected in tamperings:
        folder = tmp_path / name.replace(" ", "_").replace(",", "").replace(":", "")
        shutil.copytree(source, folder)

        def forge(m: Doc, kept: list[Doc] = kept, edit: Callable[[Doc], None] = edit) -> None:
            _recount(m, kept)
            edit(m)

        _rewrite(folder, kept, forge if "counts left" not in name else edit)
        code, report = _verify(folder)
        assert code == 1, (name, report)
        assert expected in _details(report), (name, _details(report))

        table = caseflow("verify", "--bundle", str(folder))
        assert table.exit_code == 1 and "no tampering found" not in table.output, name


def test_a_selection_says_so_in_verify_and_replay(sqlite_url: str, tmp_path: Path) -> None:
    asyncio.run(_prepare(sqlite_url, tmp_path))
    key_file = tmp_path / "keys" / "audit-ed25519.pem"
    out = tmp_path / "qiaotou"
    assert (
        caseflow(
            "export",
            "--out",
            str(out),
            "--database-url",
            sqlite_url,
            "--key-file",
            str(key_file),
            "--station",
            "qiaotou_station",
            "--from",
            "2020-01-01",
        ).exit_code
        == 0
    )
    table = caseflow("verify", "--bundle", str(out))
    text = " ".join(table.output.split())
    assert table.exit_code == 0, table.output
    assert "scope: a selection (station qiaotou_station, period 2020-01-01 to …, 4 cases)" in text
    assert "cases not in the selection are not checked" in text
    assert "no tampering found in the 4 selected cases" in text

    target = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    replayed = caseflow("replay", str(out), "--database-url", target)
    text = " ".join(replayed.output.split())
    assert replayed.exit_code == 0, replayed.output
    assert "scope: a selection (station qiaotou_station" in text
    assert "the read models hold these cases only" in text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("complete_log", "yes", "complete_log"),
        ("cases", ["not-a-uuid"], "cases.0"),
        ("events", {"count": "12"}, "events.count"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_refused(
    sqlite_url: str, tmp_path: Path, field: str, value: Any, message: str
) -> None:
    asyncio.run(_prepare(sqlite_url, tmp_path))
    out = tmp_path / "b"
    assert (
        caseflow(
            "export",
            "--out",
            str(out),
            "--database-url",
            sqlite_url,
            "--key-file",
            str(tmp_path / "keys" / "audit-ed25519.pem"),
        ).exit_code
        == 0
    )
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    manifest[field] = value
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    result = caseflow("verify", "--bundle", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.output and "damaged" in result.output
