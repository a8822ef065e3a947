"""The idempotency store contract (``tests/contract/idempotency_store.py``) on SQLite."""

from tests.contract.idempotency_store import *  # noqa: F403
