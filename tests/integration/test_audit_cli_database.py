"""``caseflow audit verify/export/checkpoint`` on a database that isn't a caseflow log, or a
SQLite file that isn't there: a message and a non-zero exit, no traceback, no new file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from shared.application.audit.keys import ensure_audit_key
from shared.cli.main import app
from tests.conftest import _admin

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgres"])
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that exists but holds no caseflow schema."""
    if request.param == "sqlite":
        (tmp_path / "empty.db").touch()
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
    yield make_url(server).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _commands(url: str, tmp_path: Path) -> list[list[str]]:
    key = tmp_path / "keys" / "audit.pem"
    ensure_audit_key(key)
    common = ["--database-url", url, "--key-file", str(key)]
    return [
        ["verify", *common],
        ["verify", *common, "--json"],
        ["export", "--out", str(tmp_path / "bundle"), *common],
        ["checkpoint", *common],
    ]


def test_a_database_without_the_schema_is_a_message(unmigrated_url: str, tmp_path: Path) -> None:
    for args in _commands(unmigrated_url, tmp_path):
        result = runner.invoke(app, ["audit", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "no caseflow schema yet" in result.output, (args, result.output)
        assert "caseflow migrate" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert "Traceback" not in result.output
    assert not (tmp_path / "bundle").exists()  # export made no folder for nothing


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "log.db"
    for args in _commands(f"sqlite+aiosqlite:///{missing}", tmp_path):
        result = runner.invoke(app, ["audit", *args])
        assert result.exit_code == 2, (args, result.output)
        assert f"no database at {missing}" in " ".join(result.output.split()), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert not missing.exists() and not missing.parent.exists(), args
    assert not (tmp_path / "bundle").exists()
