"""The case service: load a case, check an action against the engine and the delegation
register, and record it in one unit of work."""
