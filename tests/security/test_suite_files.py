"""The security suite's list of files stays true."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SECURITY_SUITE


def test_every_file_of_the_security_suite_exists() -> None:
    # A renamed or moved file would silently leave the suite (``pytest -m security``).
    root = Path(__file__).resolve().parents[2]
    assert sorted(f for f in SECURITY_SUITE if not (root / f).is_file()) == []
    assert all(f.startswith("tests/") and f.endswith(".py") for f in SECURITY_SUITE)
