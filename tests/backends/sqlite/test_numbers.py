"""The case numbers contract (``tests/contract/numbers.py``) on SQLite."""

from tests.contract.numbers import *  # noqa: F403
