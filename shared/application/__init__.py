"""Use cases over the event log: staff actions on cases, projections (read models) and their
rebuild, the audit's reading, export, signing and replay. It uses the adapters and the
domain; it knows nothing of HTTP or the terminal."""
