"""The event log contract (``tests/contract/event_log.py``) on SQLite."""

from tests.contract.event_log import *  # noqa: F403
