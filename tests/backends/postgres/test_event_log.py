"""The event log contract (``tests/contract/event_log.py``) on PostgreSQL."""

from tests.contract.event_log import *  # noqa: F403
