"""The case numbers contract (``tests/contract/numbers.py``) on PostgreSQL."""

from tests.contract.numbers import *  # noqa: F403
