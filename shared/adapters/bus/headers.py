"""NATS header names used across caseflow."""

MSG_ID_HEADER = "Nats-Msg-Id"
CORRELATION_HEADER = "Caseflow-Correlation-Id"
DLQ_REASON_HEADER = "Caseflow-Dead-Letter-Reason"
DLQ_SUBJECT_HEADER = "Caseflow-Original-Subject"
DLQ_CONSUMER_HEADER = "Caseflow-Consumer"
PERSONAL_DATA_HEADER = "Caseflow-Personal-Data"
"""``masked`` on every event the relay publishes: the envelope's payload is a masked view
(its ``hash`` is the stored row's and does not verify against it)."""


def header_value(text: str, limit: int = 1000) -> str:
    """``text`` as a header may carry it: one line of printable ASCII, other characters
    escaped (``\\u202e``, ``\\x1b``), at most ``limit`` characters. A reason quoting what
    a sender wrote must neither break the header block nor hide what it quotes."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    printable = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in escaped)
    return printable[:limit]
