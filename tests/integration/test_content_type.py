"""The input guard and the route read a body as the same thing, through the real intake app
on both backends. Two ``Content-Type`` headers let a body past the guard: it went by the
last one (``text/plain``: not checked), Starlette by the first (``application/json``), so a
duplicate key hiding an invalid ID number was recorded. Now more than one is a 400
problem+json, and every body that parses as JSON is checked, whatever type it declares."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.adapters.tables.eventlog import events
from shared.domain.identity import id_check_digit
from shared.web.http import PROBLEM_JSON
from tests.services import NOT_LISTENING, VALID_APPLICATION, session_keys, staff_headers

CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")
JSON_TYPE = ("Content-Type", "application/json")
TEXT_TYPE = ("Content-Type", "text/plain")
APPLICANT: dict[str, Any] = VALID_APPLICATION["applicant"]


def hiding_a_bad_id_number() -> bytes:
    """An application whose applicant gives ``id_number`` twice: an invalid one (month 13),
    then the valid one, which a parser keeping the last key sees."""
    first17 = "11010519491331002"
    pairs = [("id_number", first17 + id_check_digit(first17)), *APPLICANT.items()]
    applicant = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    body = json.dumps({**VALID_APPLICATION, "applicant": "APPLICANT"})
    return body.replace('"APPLICANT"', applicant).encode()


class Intake:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async def log_size(self) -> int:
        async with self.app.state.runtime.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())

    async def post(self, body: bytes, types: list[tuple[str, str]], key: str) -> httpx.Response:
        headers = [*CLERK.items(), ("Idempotency-Key", key), *types]
        return await self.http.post("/cases", content=body, headers=headers)


@pytest.fixture
async def intake(seeded_db_url: str) -> AsyncIterator[Intake]:
    settings: dict[str, Any] = {
        "database_url": seeded_db_url,
        "jwt_public_key_file": session_keys().public_path,
        "nats_url": NOT_LISTENING,
    }
    running = Intake(create_intake(IntakeSettings(**settings)))
    yield running
    await running.http.aclose()
    await running.app.state.runtime.engine.dispose()


def test_the_body_hides_a_bad_id_number_behind_a_good_one() -> None:
    applicant = json.loads(hiding_a_bad_id_number(), object_pairs_hook=list)[1][1]
    ids = [v for k, v in applicant if k == "id_number"]
    assert len(ids) == 2 and ids[1] == APPLICANT["id_number"]


@pytest.mark.parametrize(
    "types",
    [[JSON_TYPE, TEXT_TYPE], [TEXT_TYPE, JSON_TYPE], [JSON_TYPE, JSON_TYPE]],
    ids=["json-then-text", "text-then-json", "json-twice"],
)
async def test_two_content_types_are_refused(intake: Intake, types: list[tuple[str, str]]) -> None:
    before = await intake.log_size()
    response = await intake.post(hiding_a_bad_id_number(), types, f"two-types-{types[0][1]}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["errors"][0]["field"] == "header Content-Type"
    assert "send it once" in problem["detail"] and "重复" in problem["detail"]
    assert await intake.log_size() == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/json"]
)
async def test_a_body_that_is_json_is_checked_whatever_its_type(
    intake: Intake, content_type: str
) -> None:
    before = await intake.log_size()
    body = hiding_a_bad_id_number()
    response = await intake.post(body, [("Content-Type", content_type)], "one-type-key")
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "applicant.id_number"
    assert "twice" in response.json()["detail"]
    assert await intake.log_size() == before


async def test_one_json_content_type_is_still_served(intake: Intake) -> None:
    body = json.dumps(VALID_APPLICATION).encode()
    response = await intake.post(body, [JSON_TYPE], "one-json-type")
    assert response.status_code == 201, response.text
