"""caseflow's common package: event log, bus, settings, logging and HTTP plumbing."""
