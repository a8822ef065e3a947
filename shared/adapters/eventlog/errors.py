"""Errors the event log raises."""

from __future__ import annotations

import uuid


class EventLogError(Exception):
    """Base class of the log's errors."""


class ConcurrencyError(EventLogError):
    """The case moved on since the caller read it: its version is not the expected one."""

    def __init__(self, case_id: uuid.UUID, expected: int, actual: int) -> None:
        super().__init__(f"case {case_id} is at version {actual}, not the expected {expected}")
        self.case_id = case_id
        self.expected = expected
        self.actual = actual


class DuplicateEventError(EventLogError):
    """Some, but not all, of the appended event ids are stored already (or elsewhere)."""
