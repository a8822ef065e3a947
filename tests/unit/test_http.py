"""The HTTP plumbing every service shares (``shared.web.http``) and what the services' OpenAPI
documents say: each case here is one that the schemathesis fuzz
(``tests/integration/test_api_fuzz.py``) found answered or documented wrongly."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
import structlog
import structlog.testing
from fastapi import APIRouter, FastAPI, Header, Query
from pydantic import BaseModel

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.notify.app import create_app as create_notify
from services.notify.settings import NotifySettings
from services.processing.app import create_app as create_processing
from services.processing.settings import ProcessingSettings
from shared.web import http
from shared.web.auth import StaffDep

JSON = {"Content-Type": "application/json"}
PROBLEM = {http.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


class Note(BaseModel):
    text: str


def make_app() -> FastAPI:
    """Two routers sharing a path (as the services' routers do), a body, a token, and
    optional parameters."""
    app = FastAPI()
    http.install(app)
    reads, writes = APIRouter(), APIRouter()

    @reads.get("/notes")
    async def notes(
        staff: StaffDep,
        tag: Annotated[str | None, Query(max_length=10)] = None,
        key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=8)] = None,
    ) -> dict[str, str | None]:
        return {"tag": tag}

    @writes.post("/notes")
    async def add_note(note: Note) -> dict[str, str]:
        return {"text": note.text}

    app.include_router(reads)
    app.include_router(writes)
    return app


def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app())
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_errors_are_documented_as_the_problem_details_they_are() -> None:
    document = make_app().openapi()
    read = document["paths"]["/notes"]["get"]
    write = document["paths"]["/notes"]["post"]
    # FastAPI documents its own 422 body; the handlers answer problem details instead.
    assert read["responses"]["422"] == {
        "description": "The request is not valid",
        "content": PROBLEM,
    }
    assert write["responses"]["422"]["content"] == PROBLEM
    assert write["responses"]["400"]["content"] == PROBLEM  # a body that isn't JSON
    assert write["responses"]["413"]["content"] == PROBLEM  # a body that is too large
    assert "413" not in read["responses"]
    assert read["responses"]["401"]["content"] == PROBLEM  # the staff token
    assert "401" not in write["responses"]  # no token needed there
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["Problem"]["required"] == ["type", "title", "status", "detail"]
    # An optional parameter is left out, never sent as null (a header "null" was refused).
    tag, key = read["parameters"]
    assert tag["schema"] == {"type": "string", "maxLength": 10, "title": "Tag"}
    assert key["schema"] == {"type": "string", "minLength": 8, "title": "Idempotency-Key"}
    assert make_app().openapi() == make_app().openapi()  # built the same every time


async def test_a_405_names_every_method_of_the_address() -> None:
    async with client() as http_client:
        answer = await http_client.request("OPTIONS", "/notes")
    assert answer.status_code == 405
    assert answer.headers["content-type"] == http.PROBLEM_JSON
    # The router alone named only the first matching route's method (GET).
    assert answer.headers["allow"] == "GET, POST"


async def test_a_body_that_is_not_json_is_explained_in_words() -> None:
    async with client() as http_client:
        answer = await http_client.post(
            "/notes", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["field"] == "body"
    assert error["message"].startswith("not valid JSON (")  # was "0: JSON decode error"


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/notes?tag=a%00b", None, "query"),
        ("/notes/%00", None, "path"),
        ("/notes", b'{"text": "a\\u0000b"}', "body"),
        ("/notes", b'{"text": "\\\\\\u0000"}', "body"),  # a backslash, then NUL
        ("/notes", b'{"text": "a\x00b"}', "body"),
    ],
)
async def test_nul_is_refused_before_anything_stores_it(
    path: str, body: bytes | None, where: str
) -> None:
    async with client() as http_client:
        answer = await http_client.request("POST" if body else "GET", path, content=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == http.PROBLEM_JSON
    problem = answer.json()
    assert problem["errors"] == [
        {"field": where, "message": "text can't contain the NUL character (\\u0000); remove it"}
    ]


async def test_an_escaped_backslash_before_u0000_is_plain_text() -> None:
    async with client() as http_client:
        answer = await http_client.post("/notes", content=b'{"text": "C:\\\\u0000"}', headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"text": "C:\\u0000"}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    url = "sqlite+aiosqlite:///never-opened.db"
    return {
        "intake": create_intake(IntakeSettings(database_url=url)).openapi(),
        "processing": create_processing(ProcessingSettings(database_url=url)).openapi(),
        "notify": create_notify(NotifySettings(database_url=url)).openapi(),
    }


def test_the_services_document_what_they_answer(documents: dict[str, dict[str, Any]]) -> None:
    for document in documents.values():
        probes = document["paths"]
        assert set(probes["/readyz"]["get"]["responses"]) == {"200", "503"}
        assert list(probes["/asyncapi.yaml"]["get"]["responses"]["200"]["content"]) == [
            "application/yaml"
        ]
        for item in document["paths"].values():
            for operation in item.values():
                for code, response in operation["responses"].items():
                    assert int(code) < 400 or response["content"] == PROBLEM, operation
    intake = documents["intake"]["paths"]
    for path in ("/cases", "/reception", "/matters/mediation"):
        assert "200" in intake[path]["post"]["responses"]  # the same key again: the first answer
    statistics = documents["processing"]["paths"]["/reports/statistics"]["get"]
    assert set(statistics["responses"]["200"]["content"]) == {
        "application/json",
        "text/csv",
        "text/html",
    }
    webhook = documents["notify"]["paths"]["/webhooks/{subscription_id}"]
    for method in ("get", "patch", "delete"):
        assert {"403", "404"} <= set(webhook[method]["responses"])


def test_each_kind_of_matter_documents_its_body(documents: dict[str, dict[str, Any]]) -> None:
    paths = documents["intake"]["paths"]
    schemas = documents["intake"]["components"]["schemas"]
    bodies = {
        kind: paths[f"/matters/{kind}"]["post"]["requestBody"]["content"]["application/json"]
        for kind in ("mediation", "legal_publicity", "assistance", "police_assistance")
    }
    assert {kind: body["schema"]["$ref"].rsplit("/", 1)[1] for kind, body in bodies.items()} == {
        "mediation": "MediationIn",
        "legal_publicity": "PublicityIn",
        "assistance": "AssistanceIn",
        "police_assistance": "PoliceAssistanceIn",
    }
    assert "parties" in schemas["MediationIn"]["required"]


def failing_app(error: Exception) -> httpx.AsyncClient:
    """An app whose one route fails with ``error`` (no runtime: nothing to ping)."""
    app = FastAPI()
    http.install(app)

    @app.get("/fails")
    async def fails() -> None:
        raise error

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def _operational() -> Exception:
    import sqlite3

    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, sqlite3.OperationalError("unable to open database file")
    )


def _nats_down() -> Exception:
    import nats.errors

    return nats.errors.NoServersError()


def _refused_in_a_group() -> Exception:
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    except ConnectionRefusedError as err:
        return ExceptionGroup("task group", [err])


@pytest.mark.parametrize(
    ("make_error", "dependency"),
    [(_operational, "database"), (_nats_down, "NATS"), (_refused_in_a_group, "database")],
)
async def test_an_unreachable_dependency_is_a_503_with_retry_after_and_one_log_line(
    make_error: Any, dependency: str
) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with failing_app(make_error()) as http_client:
            response = await http_client.get("/fails")
    assert response.status_code == 503
    assert response.headers["content-type"] == http.PROBLEM_JSON
    assert response.headers["retry-after"] == str(http.RETRY_AFTER_SECONDS)
    assert response.json()["unavailable"] == dependency
    assert "nothing was saved" in response.json()["detail"]
    outage = [e["event"] for e in logs if e["event"] != "request"]  # besides the access log
    assert outage == ["dependency unavailable: answered 503"]
    assert logs[0]["dependency"] == dependency and "exc_info" not in logs[0]


async def test_a_bug_is_still_a_500() -> None:
    async with failing_app(FileNotFoundError("templates/x.j2")) as http_client:
        response = await http_client.get("/fails")
    assert response.status_code == 500
    assert "retry-after" not in response.headers


async def test_an_unexpected_error_is_answered_500_and_logged_once() -> None:
    """Not raised on to the server after the 500 answer (uvicorn would log it again), with
    the default transport that raises whatever the app raises (issue 16)."""
    app = FastAPI()
    http.install(app)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app)  # raise_app_exceptions: on
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/fails")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["event"] for e in logs if e.get("log_level") in ("error", "critical")] == [
        "unhandled error"
    ]


async def test_each_request_is_one_access_log_line_without_its_query() -> None:
    app = FastAPI()
    http.install(app)

    @app.get("/cases/{case_id}")
    async def case(case_id: str) -> dict[str, str]:
        return {"case_id": case_id}

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    transport = httpx.ASGITransport(app=app)
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/cases/abc", params={"reason": "申请人来电 13891234567"})
            await client.get("/livez")
    lines = [e for e in logs if e["event"] == "request" and e["log_level"] == "info"]
    assert len(lines) == 1, logs
    (line,) = lines
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/cases/abc",
        "/cases/{case_id}",
        200,
    )
    assert line["ms"] >= 0 and "13891234567" not in str(logs)
    assert [e["path"] for e in logs if e["event"] == "request" and e["log_level"] == "debug"] == [
        "/livez"
    ]
