"""Database URLs as caseflow prints them: never with the password."""

from shared.adapters.db import shown_url


def test_a_printed_database_url_hides_its_password() -> None:
    url = "postgresql+asyncpg://caseflow:S3cret%2FPW@db.example:5432/caseflow"
    shown = shown_url(url)
    assert "S3cret" not in shown and "caseflow:***@db.example:5432/caseflow" in shown
    assert (
        shown_url("sqlite+aiosqlite:////var/caseflow.db") == "sqlite+aiosqlite:////var/caseflow.db"
    )
