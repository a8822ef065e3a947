"""The adapters' contract: abstract suites every database backend must pass.

A module here is not collected by itself (its name doesn't start with ``test_``); each
backend in ``tests/backends/<backend>/`` collects it by importing it, and gives its tests
the ``db_url`` fixture of that backend (``engine`` and ``log`` follow from it). A new
backend is a new folder there: a ``conftest.py`` with its ``db_url`` and one
``test_<suite>.py`` per suite.

- ``event_log``: appends, optimistic concurrency, the hash chain, tailing and cursors.
- ``delegations_store``: the delegation register kept from the log.
- ``idempotency_store``: request keys, their answers and their leases.
- ``timers``: the durable timer wheel (claims, fire-once, handover after a kill).
- ``projections``: read models folded from the log, live and rebuilt.
"""
