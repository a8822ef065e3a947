"""The timers contract (``tests/contract/timers.py``) on PostgreSQL."""

from tests.contract.timers import *  # noqa: F403
