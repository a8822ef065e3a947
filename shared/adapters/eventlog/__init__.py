"""The append-only event log: the record of every case, and the outbox of the bus."""

from shared.adapters.eventlog.errors import ConcurrencyError, DuplicateEventError, EventLogError
from shared.adapters.eventlog.store import START, AppendResult, EventLog, LogCursor, append_in

__all__ = [
    "START",
    "AppendResult",
    "ConcurrencyError",
    "DuplicateEventError",
    "EventLog",
    "EventLogError",
    "LogCursor",
    "append_in",
]
