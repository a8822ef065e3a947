"""The projections contract (``tests/contract/projections.py``) on SQLite."""

from tests.contract.projections import *  # noqa: F403
