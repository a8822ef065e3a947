"""NATS header names used across caseflow."""

MSG_ID_HEADER = "Nats-Msg-Id"
CORRELATION_HEADER = "Caseflow-Correlation-Id"
DLQ_REASON_HEADER = "Caseflow-Dead-Letter-Reason"
DLQ_SUBJECT_HEADER = "Caseflow-Original-Subject"
DLQ_CONSUMER_HEADER = "Caseflow-Consumer"
