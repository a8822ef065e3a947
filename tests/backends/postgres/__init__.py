"""PostgreSQL, production's database (the embedded server from its wheel, or
``CASEFLOW_TEST_POSTGRES_URL``)."""
