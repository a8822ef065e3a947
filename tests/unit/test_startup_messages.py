"""Operator-grade start-up messages (issue 16): one line that names the setting or the
database, and never a secret."""

from __future__ import annotations

import pytest

from services.notify.settings import NotifySettings
from services.processing.settings import ProcessingSettings
from shared.adapters.db import database_problem
from shared.domain.privacy import hide_url_passwords
from shared.settings import load_settings


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "postgresql+asyncpg://caseflow:s3cret@db:5432/caseflow",
            "postgresql+asyncpg://caseflow:***@db:5432/caseflow",
        ),
        (
            "'postgresql+asyncpg://u:p@ss@host:x/db' is broken",
            "'postgresql+asyncpg://u:***@host:x/db' is broken",
        ),
        ("nats://a:b@h:4222,nats://c:d@h", "nats://a:***@h:4222,nats://c:***@h"),
        ("sqlite+aiosqlite:///var/caseflow.db", "sqlite+aiosqlite:///var/caseflow.db"),
        ("https://idp.example/keys", "https://idp.example/keys"),
    ],
)
def test_url_passwords_are_hidden(text: str, shown: str) -> None:
    assert hide_url_passwords(text) == shown


def test_a_bad_database_url_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASEFLOW_PROCESSING_DATABASE_URL", "mysql://caseflow:s3cret@db/caseflow")
    with pytest.raises(SystemExit) as stopped:
        load_settings(ProcessingSettings)
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert "CASEFLOW_PROCESSING_DATABASE_URL" in said and "mysql://caseflow:***@db" in said
    assert "s3cret" not in said


def test_a_bad_secret_is_named_but_not_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASEFLOW_NOTIFY_SMS__SECRET_KEY", "x" * 5000)  # too long to be one
    monkeypatch.setenv("CASEFLOW_NOTIFY_SMS__SECRET_ID", "AKIDsecretid")
    monkeypatch.setenv("CASEFLOW_NOTIFY_SMS__SDK_APP_ID", "not-a-number")
    try:
        load_settings(NotifySettings)
    except SystemExit:
        said = capsys.readouterr().err
        assert "x" * 20 not in said and "AKIDsecretid" not in said, said
    else:  # the values were taken: then nothing was printed at all
        assert capsys.readouterr().err == ""


def test_every_service_takes_the_shared_database_url_unless_it_has_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CASEFLOW_DATABASE_URL", "postgresql+asyncpg://c@db/shared")
    assert load_settings(ProcessingSettings).database_url == "postgresql+asyncpg://c@db/shared"
    monkeypatch.setenv("CASEFLOW_PROCESSING_DATABASE_URL", "postgresql+asyncpg://c@db/own")
    assert load_settings(ProcessingSettings).database_url == "postgresql+asyncpg://c@db/own"


def test_a_database_problem_is_one_line_without_the_secret() -> None:
    url = "postgresql+asyncpg://caseflow:s3cret@nohost.invalid/caseflow"
    try:
        raise RuntimeError("connection failed") from OSError(-2, "Name or service not known")
    except RuntimeError as err:
        said = database_problem(url, err)
    assert said == (
        "can't use the database at postgresql+asyncpg://caseflow:***@nohost.invalid/caseflow:"
        " [Errno -2] Name or service not known (OSError)"
    )
