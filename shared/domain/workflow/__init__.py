"""The workflow engine: versioned definitions (data), the case fold, the engine (pure) and
clocks. The service that loads, checks and records actions is
``shared.application.workflow``."""
