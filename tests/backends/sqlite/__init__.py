"""SQLite, the embedded default (``caseflow up``): one file, several processes."""
