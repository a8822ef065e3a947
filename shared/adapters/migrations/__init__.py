"""Alembic migrations for the caseflow database."""
