"""Property-based fuzzing of the three HTTP APIs with schemathesis, from their own OpenAPI
documents: intake, processing and notify in-process on one database (with the packaged
delegation instruments published), signed in as staff of several roles.

Every operation gets generated requests, valid and invalid ones, from fixed seeds; each
answer is checked by schemathesis' default checks (no 5xx, status codes, content types
and bodies as documented, valid data accepted, invalid data refused, a missing token
refused, ...) and by :func:`problem_details`: every error a clerk may see is RFC 9457
``application/problem+json`` with a title and a detail in words.

The services run without their background work (no lifespan: no relay, consumers,
timers or dispatcher), as the other in-process API tests do: nothing reaches NATS, and no
webhook a fuzzed subscription names is ever called.

On both backends (``module_db_url``): PostgreSQL refuses what SQLite stores (NUL in
text), and the fuzz found 500s there that SQLite never showed. Schemathesis' coverage phase
(the boundary values of every parameter, tens of requests per operation and two thirds of
the file's time) runs on PostgreSQL; SQLite gets the examples and the generated requests.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
import structlog
from fastapi import FastAPI
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.python import asgi
from starlette.types import Receive, Scope, Send

from shared.web.http import PROBLEM_JSON
from tests.services import build_app, seed_delegations, staff_headers

SERVICES = ("intake", "processing", "notify")
"""Nothing listens there: the services never connect (and no background work runs)."""

MAX_EXAMPLES = int(os.environ.get("CASEFLOW_FUZZ_EXAMPLES", "8"))
"""Per operation, role and backend: the file runs in about 50 s on two cores. A longer
hunt: ``CASEFLOW_FUZZ_EXAMPLES=500 CASEFLOW_FUZZ_SEED=7 pytest tests/…/test_api_fuzz.py``."""
SEED = int(os.environ.get("CASEFLOW_FUZZ_SEED", "20261129"))

BUSINESS_RULES: dict[tuple[str, str], str] = {
    # A schema-valid request these operations refuse with 422 is documented behaviour:
    # the rule lives in reference data or across fields, where JSON Schema can't say it.
    # Everywhere else a schema-valid request refused with 422 fails the test.
    ("POST", "/cases"): "item and material codes from the catalogue, citizen-ID check "
    "digits, an email address when notices go by email, a date within the working calendar"
    " and not before the station opened",
    ("POST", "/reception"): "a visit dated within the working calendar, not before the"
    " station opened",
    (
        "POST",
        "/matters/mediation",
    ): "a date within the working calendar, not before the station opened",
    (
        "POST",
        "/matters/legal_publicity",
    ): "a date within the working calendar, not before the station opened",
    (
        "POST",
        "/matters/assistance",
    ): "a date within the working calendar, not before the station opened",
    (
        "POST",
        "/matters/police_assistance",
    ): "a date within the working calendar, not before the station opened",
    ("GET", "/cases/{case_id}/applicant"): "a reason to open personal data; optional in "
    "the schema so that its absence is answered in words, not as a bare missing field",
    ("POST", "/delegations"): "an instrument's rules across fields (dates in order, the "
    "document number's year, item codes listed once)",
    ("POST", "/delegations/{code}/amendments"): "the same rules as a new instrument",
    ("GET", "/reports/statistics"): "stations and towns of the reference data, a period "
    "that ends after it starts",
    ("GET", "/audit/cases/{case_ref}/timeline"): "basis only together with as_of",
    ("GET", "/audit/compliance"): "a station of the reference data, a period in order",
    ("POST", "/webhooks"): "event types of the AsyncAPI catalogue; a URL whose host resolves "
    "to public addresses only (DNS, and the operator's allowed networks)",
}

CONFIG: dict[str, Any] = {
    "seed": SEED,
    "base-url": "http://testserver",
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
        # Tokens come from the test (staff_headers); random ones would only test 401s,
        # which the ignored_auth check already does for every operation.
        "with-security-parameters": False,
    },
    "operations": [
        {
            # A stream that lasts while its page is open (server-sent events): schemathesis
            # would wait for its end. tests/integration/test_worklist_changes.py tests it.
            "include-path": "/worklist/changes",
            "enabled": False,
        },
        {
            # The probe's job is to answer 503 while NATS is unreachable, as it is here.
            "include-path": "/readyz",
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
        },
        *(
            {
                "include-method": method,
                "include-path": path,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": [
                            *PositiveDataAcceptanceConfig().expected_statuses,
                            "422",
                        ]
                    }
                },
            }
            for method, path in BUSINESS_RULES
        ),
    ],
}

STAFF: dict[str, dict[str, Any]] = {
    "clerk": {"user": "li.clerk", "role": "window_clerk", "org": "xuefeng_station"},
    "reviewer": {"user": "wang.reviewer", "role": "reviewer", "org": "xuefeng_station"},
    "head": {"user": "zhao.head", "role": "station_head", "org": "xuefeng_station"},
    "officer": {"user": "sun.officer", "role": "department_officer", "org": "hc_hrss"},
    "auditor": {"user": "qian.auditor", "role": "auditor", "org": "hc_audit"},
    "operator": {
        "user": "wu.operator",
        "role": "station_head",
        "org": "longmen_station",
        "permissions": frozenset({"operate"}),
    },
}
ROLES = {
    # The clerk passes intake's checks; the reviewer is refused at the window (recorded).
    "intake": ["clerk", "reviewer"],
    # The officer of the delegating body changes instruments, the auditor reads audits and
    # statistics, the station head reads its own statistics and cases.
    "processing": ["officer", "auditor", "head"],
    # The station head manages its own station's notices, the operator any station's.
    "notify": ["head", "operator"],
}


class Mounted:
    """The ASGI app schemathesis sends a service's requests to: the service the module
    fixture builds on the test's database, without its lifespan."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # ASGI: an app that raises here has no lifespan, and the server carries on.
            raise RuntimeError("no background work in this test")
        assert self.app is not None, "the `services` fixture mounts the app"
        await self.app(scope, receive, send)


MOUNTED = {service: Mounted() for service in SERVICES}

NO_COVERAGE_PHASE = {"coverage": {"enabled": False}}

HEADERS: dict[str, dict[str, str]] = {}
"""Each role's token, signed once per backend (by ``services``)."""


Case = schemathesis.Case[Any]
Test = Callable[[Case, str], None]


@functools.cache
def openapi(service: str) -> dict[str, Any]:
    """The service's OpenAPI document, as its app serves it."""
    return build_app(service, "sqlite+aiosqlite:///never-opened.db").openapi()


def load(service: str, backend: str) -> Callable[[Test], Test]:
    """A test per operation of the service's OpenAPI document (read at collection) on
    ``backend``, sending to :data:`MOUNTED`; the coverage phase on PostgreSQL only."""
    config = CONFIG if backend == "postgres" else {**CONFIG, "phases": NO_COVERAGE_PHASE}
    schema = schemathesis.openapi.from_dict(
        openapi(service), config=schemathesis.Config.from_dict(config)
    )
    schema.app = MOUNTED[service]
    parametrize: Callable[[Test], Test] = schema.parametrize()
    on_backend = pytest.mark.parametrize("module_db_url", [backend], indirect=True)
    return lambda test: parametrize(on_backend(test))


@pytest.fixture(scope="module", autouse=True)
def services(module_db_url: str) -> Iterator[None]:
    """The three services on one fresh database of each backend, seeded as ``caseflow up``
    seeds it."""
    logging = structlog.get_config()
    # Plain JSON lines: the default console renderer takes seconds per logged 500.
    structlog.configure(
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    seed_delegations(module_db_url)
    for service, mounted in MOUNTED.items():
        mounted.app = build_app(service, module_db_url)
    # Valid for a day: a long hunt (CASEFLOW_FUZZ_EXAMPLES=500) must not go on with 401s.
    HEADERS.update(
        {who: staff_headers(**staff, ttl=timedelta(days=1)) for who, staff in STAFF.items()}
    )
    yield
    for mounted in MOUNTED.values():
        mounted.app = None
    asgi.shutdown_lifespans()
    structlog.configure(**logging)


def problem_details(_ctx: Any, response: schemathesis.Response, case: Case) -> bool:
    """Every error answer is RFC 9457 problem details a clerk can read."""
    if response.status_code < 400:
        return True
    media = ",".join(response.headers.get("content-type", []))
    assert media == PROBLEM_JSON, f"{case.operation.label}: {response.status_code} as {media!r}"
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("status") == response.status_code, body
    for key in ("title", "detail"):
        assert isinstance(body.get(key), str) and body[key].strip(), f"no {key}: {body}"
    return True


def call(case: Case, who: str) -> None:
    case.call_and_validate(headers=HEADERS[who], additional_checks=[problem_details])


@load("intake", "postgres")
@pytest.mark.parametrize("who", ROLES["intake"])
def test_intake_on_postgres(case: Case, who: str) -> None:
    call(case, who)


@load("intake", "sqlite")
@pytest.mark.parametrize("who", ROLES["intake"])
def test_intake_on_sqlite(case: Case, who: str) -> None:
    call(case, who)


@load("processing", "postgres")
@pytest.mark.parametrize("who", ROLES["processing"])
def test_processing_on_postgres(case: Case, who: str) -> None:
    call(case, who)


@load("processing", "sqlite")
@pytest.mark.parametrize("who", ROLES["processing"])
def test_processing_on_sqlite(case: Case, who: str) -> None:
    call(case, who)


@load("notify", "postgres")
@pytest.mark.parametrize("who", ROLES["notify"])
def test_notify_on_postgres(case: Case, who: str) -> None:
    call(case, who)


@load("notify", "sqlite")
@pytest.mark.parametrize("who", ROLES["notify"])
def test_notify_on_sqlite(case: Case, who: str) -> None:
    call(case, who)
