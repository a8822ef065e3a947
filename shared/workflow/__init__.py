"""The workflow engine: versioned definitions (data), the case fold, the engine (pure),
clocks, and the service that loads, checks and records actions."""
