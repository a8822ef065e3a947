"""The database backends, each running the adapters' contract (``tests/contract``)."""
