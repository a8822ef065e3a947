"""``python -m shared.cli``: the ``caseflow`` command."""

from shared.cli.main import app

app()
