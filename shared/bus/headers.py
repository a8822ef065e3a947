"""NATS header names used across caseflow."""

MSG_ID_HEADER = "Nats-Msg-Id"
CORRELATION_HEADER = "Caseflow-Correlation-Id"
DLQ_REASON_HEADER = "Caseflow-Dead-Letter-Reason"
DLQ_SUBJECT_HEADER = "Caseflow-Original-Subject"
DLQ_CONSUMER_HEADER = "Caseflow-Consumer"
PERSONAL_DATA_HEADER = "Caseflow-Personal-Data"
"""``masked`` on every event the relay publishes: the envelope's payload is a masked view
(its ``hash`` is the stored row's and does not verify against it)."""
