"""The ``caseflow`` command (``shared.cli.main``), the process supervisor of ``caseflow up``
and the demo. The only part of ``shared`` that may import ``services``."""
