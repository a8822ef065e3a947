"""The contract suites on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture
def db_url(postgres_url: str) -> str:
    """A fresh, migrated PostgreSQL database for one test."""
    return postgres_url
