"""The domain: what the law and the station's work say, with no I/O.

Events and their catalogue, cases and their workflows (definitions, the fold, the engine,
clocks), delegations, the organisations' register, the working calendar, reference data,
personal-data rules, the audit's judges and the statistics' tally. Nothing here talks to a
database, the bus, HTTP or the terminal; ``make test`` enforces it (import-linter,
``[tool.importlinter]`` in pyproject.toml)."""
