"""The append-only event log: the record of every case, and the outbox of the bus.

Its API: :class:`EventLog` (append, read, :meth:`EventLog.transaction`), the functions that
work inside a transaction one already holds (``append_in``, ``read_case_in``,
``read_cases_in``, ``insert_at_head``, ``row_to_event`` with ``COLUMNS``), and the
:class:`UnitOfWork` a handler gets."""

from shared.adapters.eventlog.errors import ConcurrencyError, DuplicateEventError, EventLogError
from shared.adapters.eventlog.store import (
    COLUMNS,
    START,
    AppendResult,
    EventLog,
    LogCursor,
    Transaction,
    append_in,
    insert_at_head,
    read_case_in,
    read_cases_in,
    row_to_event,
)
from shared.adapters.eventlog.unit import EventRef, UnitOfWork

__all__ = [
    "COLUMNS",
    "START",
    "AppendResult",
    "ConcurrencyError",
    "DuplicateEventError",
    "EventLog",
    "EventLogError",
    "EventRef",
    "LogCursor",
    "Transaction",
    "UnitOfWork",
    "append_in",
    "insert_at_head",
    "read_case_in",
    "read_cases_in",
    "row_to_event",
]
