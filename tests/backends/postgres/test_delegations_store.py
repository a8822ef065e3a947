"""The delegations store contract (``tests/contract/delegations_store.py``) on PostgreSQL."""

from tests.contract.delegations_store import *  # noqa: F403
