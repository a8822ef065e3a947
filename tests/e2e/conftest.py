"""The end-to-end tests' backends.

The stack's processes reach the database only through the adapters, whose contract suites
(``tests/contract``, run from ``tests/backends/<backend>``) and API tests
(``tests/integration``) run on both backends. End to end, each test runs on
``E2E_BACKENDS``: by default PostgreSQL, production's database, where replicas, the
cluster and the operator's commands run. The embedded default, SQLite as ``caseflow up``
runs it, has end-to-end tests of its own: ``test_operations`` (``caseflow up``, Ctrl-C),
``test_demo``, ``test_relay_credential``, ``test_department_answers`` and the webhooks of
``test_notifications``; ``test_idempotency_keys`` (security suite) runs on both.

``CASEFLOW_TEST_E2E_BACKENDS=sqlite,postgres`` runs every end-to-end test, and the whole
cross-station matrix, on both (minutes more on two cores), e.g. before a release or after a
change to the adapters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import fresh_postgres_db, fresh_sqlite_db

BACKENDS = ("sqlite", "postgres")

E2E_BACKENDS = tuple(
    name.strip()
    for name in os.environ.get("CASEFLOW_TEST_E2E_BACKENDS", "postgres").split(",")
    if name.strip()
)
if not E2E_BACKENDS or set(E2E_BACKENDS) - set(BACKENDS):
    raise pytest.UsageError(
        f"CASEFLOW_TEST_E2E_BACKENDS={os.environ.get('CASEFLOW_TEST_E2E_BACKENDS')!r}: "
        f"name one or more of {', '.join(BACKENDS)}, separated by commas"
    )


@pytest.fixture(params=E2E_BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each of ``E2E_BACKENDS``."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="module", params=E2E_BACKENDS)
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database on each of ``E2E_BACKENDS`` shared by a module's tests (for
    slow-to-start stacks); a module may name its own (``indirect`` parametrisation)."""
    if request.param == "sqlite":
        yield fresh_sqlite_db(tmp_path_factory.mktemp("sqlite"))
    else:
        with fresh_postgres_db(request.getfixturevalue("postgres_server")) as url:
            yield url
