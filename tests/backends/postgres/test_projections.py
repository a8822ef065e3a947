"""The projections contract (``tests/contract/projections.py``) on PostgreSQL."""

from tests.contract.projections import *  # noqa: F403
