"""The idempotency store contract (``tests/contract/idempotency_store.py``) on PostgreSQL."""

from tests.contract.idempotency_store import *  # noqa: F403
