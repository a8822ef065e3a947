"""Input that is what it claims, through the real apps on both backends: each bad input is a
422 problem naming the field (English with Chinese alongside) and leaves the log as it was.

ID numbers in full (division code, birth date, ASCII digits, check digit), mobile numbers
in ASCII, person names without control, direction or only invisible characters, free text
without control characters, duplicate JSON keys anywhere in any service's body, and a
``reception_id`` that must be a visit of the clerk's own station."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from shared.adapters.tables.eventlog import events
from shared.domain.identity import id_check_digit
from shared.web.http import PROBLEM_JSON
from tests.services import VALID_APPLICATION, build_app, staff_headers

CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")
LONGMEN_CLERK = staff_headers("chen.clerk", "window_clerk", "longmen_station")
HEAD = staff_headers("zhao.head", "station_head", "xuefeng_station")
REVIEWER = staff_headers("wang.reviewer", "reviewer", "xuefeng_station")


def with_check(first17: str) -> str:
    return first17 + id_check_digit(first17)


class Services:
    """The three apps in-process on one database, and the size of its log."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = apps
        self.http = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
            )
            for name, app in apps.items()
        }

    async def log_size(self) -> int:
        async with self.apps["intake"].state.runtime.engine.connect() as conn:
            count = select(func.count()).select_from(events)
            return int((await conn.execute(count)).scalar_one())

    async def post(
        self, service: str, path: str, body: Any, headers: dict[str, str] = CLERK, raw: bool = False
    ) -> httpx.Response:
        sent = {**headers, "Idempotency-Key": f"input-{uuid.uuid4()}"}
        if raw:
            sent["Content-Type"] = "application/json"
            return await self.http[service].post(path, content=body, headers=sent)
        return await self.http[service].post(path, json=body, headers=sent)

    async def refused(
        self, service: str, path: str, body: Any, field: str, says: str, **kwargs: Any
    ) -> dict[str, Any]:
        """POST, expect a 422 naming ``field`` whose message contains ``says``, and
        nothing recorded."""
        before = await self.log_size()
        response = await self.post(service, path, body, **kwargs)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        problem: dict[str, Any] = response.json()
        fields = {e["field"]: e["message"] for e in problem["errors"]}
        assert field in fields, problem
        assert says in fields[field], problem
        assert await self.log_size() == before
        return problem


@pytest.fixture
async def services(seeded_db_url: str) -> AsyncIterator[Services]:
    running = Services(
        {name: build_app(name, seeded_db_url) for name in ("intake", "processing", "notify")}
    )
    yield running
    for name, client in running.http.items():
        await client.aclose()
        await running.apps[name].state.runtime.engine.dispose()


def application(**applicant: str) -> dict[str, Any]:
    body = copy.deepcopy(VALID_APPLICATION)
    body["applicant"].update(applicant)
    return body


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


# ------------------------------------------------------------------------ ID and phone


@pytest.mark.parametrize(
    ("id_number", "says"),
    [
        (with_check("11010519491331002"), "not a date of birth"),  # month 13
        (with_check("11010519490230002"), "not a date of birth"),  # 30 February
        (with_check("11010520990101002"), "future"),
        (with_check("00000019491231002"), "administrative division"),
        (with_check("99999919491231002"), "administrative division"),
        (with_check("11010518000101002"), "years ago"),
        ("１１０１０５１９４９１２３１００２X", "18 characters"),  # full-width digits
        ("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", "18 characters"),  # Arabic-Indic digits
        ("110105194912310021", "check digit"),
    ],
)
async def test_id_numbers_that_are_not_real_are_refused(
    services: Services, id_number: str, says: str
) -> None:
    problem = await services.refused(
        "intake", "/cases", application(id_number=id_number), "applicant.id_number", says
    )
    assert has_chinese(problem["detail"])


@pytest.mark.parametrize("phone", ["１３８１２３４５６７８", "١٣٨١٢٣٤٥٦٧٨", "138１２３４５６７８"])
async def test_phone_numbers_in_other_digits_are_refused(services: Services, phone: str) -> None:
    problem = await services.refused(
        "intake", "/cases", application(phone=phone), "applicant.phone", "11-digit"
    )
    assert has_chinese(problem["detail"])


async def test_what_passes_is_stored_and_shown_masked(services: Services) -> None:
    id_number = with_check("44052419800101001")  # a county withdrawn in 1992
    response = await services.post("intake", "/cases", application(id_number=id_number))
    assert response.status_code == 201, response.text
    applicant = response.json()["applicant"]
    assert applicant["id_number"] == id_number[:6] + "********" + id_number[-4:]
    assert applicant["phone"] == "138****5678"


# ------------------------------------------------------------------------ names and text

BAD_NAMES = [
    ("王\x1b[31m秀英", "U+001B"),
    ("王秀英\x07", "U+0007"),
    ("\u202e英秀王", "U+202E"),
    ("王\u2067秀英", "U+2067"),
    ("\u200d\u200d\u200d", "visible letters"),
    ("\u200b\u2060", "visible letters"),
    ("\ue000\ue001", "private-use"),  # private use: shows as something else everywhere
    ("\U000e0057\U000e0041\U000e004e\U000e0047", "visible letters"),  # tag characters
]


@pytest.mark.parametrize(("name", "says"), BAD_NAMES)
async def test_every_person_name_field_refuses_unreadable_names(
    services: Services, name: str, says: str
) -> None:
    await services.refused("intake", "/cases", application(name=name), "applicant.name", says)
    await services.refused(
        "intake", "/reception", {"visitor_name": name, "purpose": "enquiry"}, "visitor_name", says
    )
    mediation = {"title": "宅基地纠纷", "parties": ["张三", name], "summary": "邻里宅基地界线争议"}
    await services.refused("intake", "/matters/mediation", mediation, "parties.1", says)
    assistance = {"person_name": name, "need": "独居老人需要帮扶"}
    await services.refused("intake", "/matters/assistance", assistance, "person_name", says)


@pytest.mark.parametrize("text", ["争议\x1b[2J已清屏", "第一行\r第二行", "C1\x9b控制"])
async def test_free_text_refuses_control_characters_in_every_service(
    services: Services, text: str
) -> None:
    mediation = {"title": "宅基地纠纷", "parties": ["张三", "李四"], "summary": text}
    await services.refused("intake", "/matters/mediation", mediation, "summary", "control")
    visit = {"visitor_name": "张三", "purpose": "enquiry", "note": text}
    await services.refused("intake", "/reception", visit, "note", "control")
    case = await services.post("intake", "/cases", VALID_APPLICATION)
    path = f"/cases/{case.json()['case_id']}/actions/claim"
    await services.refused("processing", path, {"task": text}, "task", "control", headers=REVIEWER)
    webhook = {"url": "https://dept.example.gov.cn/hook", "event_types": ["*"], "description": text}
    await services.refused("notify", "/webhooks", webhook, "description", "control", headers=HEAD)


async def test_newlines_and_tabs_stay_in_free_text(services: Services) -> None:
    visit = {"visitor_name": "张三", "purpose": "enquiry", "note": "咨询养老保险\n\t已告知材料"}
    response = await services.post("intake", "/reception", visit)
    assert response.status_code == 201, response.text


async def test_a_reason_in_the_address_refuses_control_characters(services: Services) -> None:
    case = await services.post("intake", "/cases", VALID_APPLICATION)
    before = await services.log_size()
    response = await services.http["intake"].get(
        f"/cases/{case.json()['case_id']}/applicant",
        params={"reason": "来电\x1b[8m咨询"},
        headers=CLERK,
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "query.reason"
    assert await services.log_size() == before


# ------------------------------------------------------------------------ duplicate keys


async def test_a_duplicate_key_at_the_top_is_refused(services: Services) -> None:
    body = json.dumps(VALID_APPLICATION)[:-1] + ', "item_code": "pension_enrolment"}'
    problem = await services.refused("intake", "/cases", body, "item_code", "twice", raw=True)
    assert has_chinese(problem["detail"])


async def test_a_duplicate_key_hiding_a_bad_id_number_is_refused(services: Services) -> None:
    bad = with_check("11010519491331002")
    applicant = (
        f'{{"name": "王秀英", "phone": "13812345678", "id_number": "{bad}", '
        '"id_number": "11010519491231002X"}'
    )
    body = json.dumps({**VALID_APPLICATION, "applicant": "APPLICANT"}).replace(
        '"APPLICANT"', applicant
    )
    await services.refused("intake", "/cases", body, "applicant.id_number", "twice", raw=True)


async def test_a_duplicate_key_in_a_list_item_is_refused(services: Services) -> None:
    body = json.dumps({**VALID_APPLICATION, "materials": ["MATERIAL"]}).replace(
        '"MATERIAL"', '{"code": "id_card", "original_checked": false, "original_checked": true}'
    )
    await services.refused(
        "intake", "/cases", body, "materials.0.original_checked", "twice", raw=True
    )


async def test_duplicate_keys_are_refused_by_processing_and_notify(services: Services) -> None:
    case = await services.post("intake", "/cases", VALID_APPLICATION)
    path = f"/cases/{case.json()['case_id']}/actions/claim"
    body = '{"task": "review", "task": "review"}'
    await services.refused("processing", path, body, "task", "twice", raw=True, headers=REVIEWER)
    hook = (
        '{"url": "https://a.example.cn/h", "event_types": ["*"], "url": "https://b.example.cn/h"}'
    )
    await services.refused("notify", "/webhooks", hook, "url", "twice", raw=True, headers=HEAD)


async def test_the_same_key_in_different_objects_is_fine(services: Services) -> None:
    body = json.dumps({**VALID_APPLICATION, "materials": [{"code": "id_card"}, {"code": "x"}]})
    response = await services.post("intake", "/cases", body, raw=True)
    assert response.status_code == 422  # x is no material of the item: the catalogue says so
    assert response.json()["errors"][0]["field"] == "materials"


# ------------------------------------------------------------------------ reception_id


async def test_reception_id_of_a_visit_of_the_same_station_is_kept(services: Services) -> None:
    visit = await services.post(
        "intake", "/reception", {"visitor_name": "张三", "purpose": "application"}
    )
    visit_id = visit.json()["visit_id"]
    response = await services.post(
        "intake", "/cases", {**VALID_APPLICATION, "reception_id": visit_id}
    )
    assert response.status_code == 201, response.text


async def test_reception_id_of_another_stations_visit_is_refused(services: Services) -> None:
    visit = await services.post(
        "intake", "/reception", {"visitor_name": "陈五", "purpose": "application"}, LONGMEN_CLERK
    )
    assert visit.status_code == 201, visit.text
    body = {**VALID_APPLICATION, "reception_id": visit.json()["visit_id"]}
    problem = await services.refused("intake", "/cases", body, "reception_id", "no visit")
    assert has_chinese(problem["detail"])


async def test_reception_id_of_no_visit_is_refused(services: Services) -> None:
    body = {**VALID_APPLICATION, "reception_id": str(uuid.uuid4())}
    await services.refused("intake", "/cases", body, "reception_id", "no visit")


async def test_reception_id_of_a_case_that_is_not_a_visit_is_refused(services: Services) -> None:
    case = await services.post("intake", "/cases", VALID_APPLICATION)
    body = {**VALID_APPLICATION, "reception_id": case.json()["case_id"]}
    await services.refused("intake", "/cases", body, "reception_id", "no visit")


# ------------------------------------------------------------------------ villages and dates


@pytest.mark.parametrize("village", ["atlantis", "nowhere_village", "GONGYU"])
async def test_a_village_that_no_station_serves_is_refused(
    services: Services, village: str
) -> None:
    problem = await services.refused(
        "intake", "/cases", application(village=village), "applicant.village", "no village"
    )
    assert has_chinese(problem["detail"])
    visit = {"visitor_name": "张三", "purpose": "enquiry", "village": village}
    await services.refused("intake", "/reception", visit, "village", "no village")
    mediation = {
        "title": "宅基地纠纷",
        "parties": ["张三", "李四"],
        "summary": "邻里宅基地界线争议",
        "village": village,
    }
    await services.refused("intake", "/matters/mediation", mediation, "village", "no village")


async def test_a_village_of_the_registry_is_kept(services: Services) -> None:
    response = await services.post("intake", "/cases", application(village="gongyu"))
    assert response.status_code == 201, response.text
    visit = {"visitor_name": "张三", "purpose": "enquiry", "village": "xiangshan"}
    assert (await services.post("intake", "/reception", visit)).status_code == 201


@pytest.mark.parametrize("planned_on", ["0001-01-01", "9999-12-31", "1900-06-01"])
async def test_a_publicity_session_planned_outside_the_calendar_is_refused(
    services: Services, planned_on: str
) -> None:
    body = {"topic": "反诈宣传进村", "planned_on": planned_on}
    await services.refused("intake", "/matters/legal_publicity", body, "planned_on", "calendar")


@pytest.mark.parametrize(("held_on", "says"), [("9999-12-31", "future"), ("0001-01-01", "2000")])
async def test_a_session_held_in_the_future_or_in_antiquity_is_refused(
    services: Services, held_on: str, says: str
) -> None:
    opened = await services.post(
        "intake", "/matters/legal_publicity", {"topic": "反诈宣传进村", "planned_on": "2026-12-10"}
    )
    assert opened.status_code == 201, opened.text
    path = f"/cases/{opened.json()['case_id']}/actions/hold"
    body = {"attendees": 30, "held_on": held_on}
    await services.refused("processing", path, body, "held_on", says, headers=HEAD)


@pytest.mark.parametrize(
    "reason", ["\u200b", ".", "\u202egnikcehc", "\u200e\ufeff", "\u3164", "——"]
)
async def test_a_reason_to_open_personal_data_must_be_readable_words(
    services: Services, reason: str
) -> None:
    case = await services.post("intake", "/cases", VALID_APPLICATION)
    before = await services.log_size()
    response = await services.http["intake"].get(
        f"/cases/{case.json()['case_id']}/applicant", params={"reason": reason}, headers=CLERK
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "reason"
    assert await services.log_size() == before
    opened = await services.http["intake"].get(
        f"/cases/{case.json()['case_id']}/applicant",
        params={"reason": "申请人来电查询"},
        headers=CLERK,
    )
    assert opened.status_code == 200, opened.text
    assert opened.headers["cache-control"] == "no-store"
