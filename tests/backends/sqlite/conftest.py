"""The contract suites on SQLite."""

from __future__ import annotations

import pytest


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """A fresh, migrated SQLite database file for one test."""
    return sqlite_url
