"""The audit's judgements: whether an act was within its delegation and its time limits, and
the timeline an auditor reads; pure functions of a case's events."""
