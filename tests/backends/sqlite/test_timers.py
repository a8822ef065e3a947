"""The timers contract (``tests/contract/timers.py``) on SQLite."""

from tests.contract.timers import *  # noqa: F403
