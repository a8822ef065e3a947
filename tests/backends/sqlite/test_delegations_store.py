"""The delegations store contract (``tests/contract/delegations_store.py``) on SQLite."""

from tests.contract.delegations_store import *  # noqa: F403
