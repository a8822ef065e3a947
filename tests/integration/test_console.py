"""The console's own trust boundary, in process (issue 15): who is signed in, for how long,
and which posts it takes. Its APIs point at a closed port: a request refused here never
reaches them, and one that would have shows as 503."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.console.app import create_app
from services.console.forms import actions_for, body_from, fields_of
from services.console.pages import entered_later
from services.console.sessions import COOKIE, Sessions
from services.console.settings import ConsoleSettings
from shared.adapters.auth import KeyPair
from shared.devtools import servers as devservers
from shared.domain.workflow.definitions import load_workflows


def settings(keys: Path | None) -> ConsoleSettings:
    closed = f"http://127.0.0.1:{devservers.free_port()}"  # nothing listens there
    return ConsoleSettings(
        intake_url=closed,
        processing_url=closed,
        notify_url=closed,
        local_sign_in_key_dir=keys,
        api_timeout_seconds=2,
    )


@pytest.fixture
async def client(auth_keys: KeyPair) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(auth_keys.directory))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.local") as c:
        yield c


async def signed_in(client: httpx.AsyncClient, user: str = "li.clerk") -> str:
    answer = await client.post("/sign-in", data={"user": user})
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie, cookie
    return str(client.cookies[COOKIE])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no form token on the page"
    return found.group(1)


async def test_every_page_wants_a_session(client: httpx.AsyncClient) -> None:
    pages = ("/", "/worklist", "/applications/new", "/cases/find", "/cases/0193/x")
    for path in (*pages, "/statistics/download?format=csv"):
        answer = await client.get(path)
        assert answer.status_code in (303, 404, 422), (path, answer.status_code)
        if answer.status_code == 303:
            assert answer.headers["location"].startswith("/sign-in"), path
    answer = await client.post(
        "/cases/01a243ab-7980-7a3a-98f5-3c01d470ffbd/actions/approve", data={"csrf": "x"}
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/sign-in")


async def test_a_signed_in_clerk_sees_her_name_and_the_items(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    page = await client.get("/applications/new", params={"q": "养老"})
    assert page.status_code == 200
    assert "李娜" in page.text and "城乡居民基本养老保险参保登记" in page.text
    assert "医疗" not in page.text  # the search kept to pension items
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["cache-control"] == "no-store"
    english = await client.get("/lang/en", params={"back": "/applications/new"})
    assert english.headers["location"] == "/applications/new"
    page = await client.get("/applications/new")
    assert "Enrolment in the urban and rural residents" in page.text


async def test_a_post_without_the_sessions_form_token_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await signed_in(client)
    case = "/cases/01a243ab-7980-7a3a-98f5-3c01d470ffbd/actions/approve"
    for token in ("", "guessed"):
        answer = await client.post(case, data={"csrf": token, "decision_number": "1"})
        assert answer.status_code == 403, answer.text  # refused here: no call reached the API
        assert "表单已失效" in answer.text


async def test_a_form_posted_from_another_site_is_refused(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    page = await client.get("/applications/new", params={"item": "pension_enrolment"})
    answer = await client.post(
        "/applications",
        data={"csrf": csrf_of(page.text), "item_code": "pension_enrolment", "name": "x"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status_code == 403


async def test_an_api_out_of_reach_is_a_503_with_retry_after(client: httpx.AsyncClient) -> None:
    await signed_in(client, "wang.reviewer")
    answer = await client.get("/worklist")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert "没有任何数据丢失" in answer.text


async def test_sign_out_ends_the_session_on_the_server(client: httpx.AsyncClient) -> None:
    session = await signed_in(client)
    page = await client.get("/applications/new")
    answer = await client.post("/sign-out", data={"csrf": csrf_of(page.text)})
    assert answer.headers["location"] == "/sign-in?ended=out"
    client.cookies.set(COOKIE, session)  # the old cookie, kept by someone
    again = await client.get("/applications/new")
    assert again.status_code == 303 and again.headers["location"].startswith("/sign-in")


async def test_no_local_sign_in_where_it_is_not_configured() -> None:
    app = create_app(settings(None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.local") as c:
        page = await c.get("/sign-in")
        assert "li.clerk" not in page.text and "OpenID Connect" in page.text
        answer = await c.post("/sign-in", data={"user": "li.clerk"})
        assert answer.status_code == 404 and COOKIE not in c.cookies


async def test_unknown_staff_and_outside_redirects_go_nowhere(client: httpx.AsyncClient) -> None:
    answer = await client.post("/sign-in", data={"user": "mallory"})
    assert answer.headers["location"] == "/sign-in" and COOKIE not in client.cookies
    for back in ("//evil.example/", "https://evil.example/", "evil"):
        answer = await client.get("/lang/zh", params={"back": back})
        assert answer.headers["location"] == "/", back


def test_a_session_ends_after_its_lifetime_or_when_idle() -> None:
    start = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    sessions = Sessions(lifetime=timedelta(hours=8), idle=timedelta(minutes=30))

    def new() -> str:
        return sessions.start(
            token="t",
            user="u",
            role="window_clerk",
            org="o",
            name=None,
            token_expires=start + timedelta(hours=1),
            now=start,
        ).id

    kept = new()
    for minutes in range(0, 60, 20):  # busy all hour: idle never ran out
        assert sessions.get(kept, now=start + timedelta(minutes=minutes)) is not None
    assert sessions.get(kept, now=start + timedelta(hours=1)) is None  # its token expired
    idle = new()
    assert sessions.get(idle, now=start + timedelta(minutes=29)) is not None
    assert sessions.get(idle, now=start + timedelta(minutes=59)) is None  # 30 min untouched
    assert sessions.get("made-up") is None and sessions.get(None) is None


def test_action_forms_follow_the_api_body_models() -> None:
    approve = {f.name: f for f in fields_of("approve")}
    assert set(approve) == {"decision_number", "opinion"}
    assert not approve["decision_number"].required
    review = {f.name: f for f in fields_of("complete_review")}
    assert review["recommendation"].choices == ("approve", "reject")
    assert review["opinion"].required and review["opinion"].kind == "textarea"
    rate = {f.name: f for f in fields_of("rate")}
    assert (rate["score"].minimum, rate["score"].maximum) == (1, 5)
    assert body_from("rate", {"score": "5", "comment": " "}) == {"score": 5}
    assert body_from("reject", {"reasons": "不符合条件\n\n材料不实\n"}) == {
        "reasons": ["不符合条件", "材料不实"]
    }
    assert body_from("provide", {"description": "送医", "case_solved": "1"}) == {
        "description": "送医",
        "case_solved": True,
    }


def test_only_the_members_own_actions_are_offered() -> None:
    workflows = load_workflows()
    case = {
        "workflow": {"name": "station_item", "version": 1},
        "status": "accepted",
        "actions": ["start_review", "withdraw", "claim", "release"],
        "tasks": [{"kind": "review", "role": "reviewer", "org": "xuefeng_station"}],
    }
    reviewer = actions_for(workflows, case, "reviewer", "xuefeng_station")
    assert "start_review" in reviewer and "claim" in reviewer
    clerk = actions_for(workflows, case, "window_clerk", "xuefeng_station")
    assert "start_review" not in clerk and "claim" not in clerk
    other_station = actions_for(workflows, case, "reviewer", "longmen_station")
    assert "claim" not in other_station


def test_the_history_says_when_an_act_from_paper_was_entered() -> None:
    """An act dated in the past (补录) shows when it was recorded too; one recorded as it
    happened (a moment's delay) does not."""
    late = {"occurred_at": "2021-12-06T01:00:00+00:00", "recorded_at": "2026-12-05T03:00:00+00:00"}
    assert entered_later(late) == "2026-12-05 11:00:00"
    now = {"occurred_at": "2026-12-05T03:00:00+00:00", "recorded_at": "2026-12-05T03:00:01+00:00"}
    assert entered_later(now) == ""
    assert entered_later({"occurred_at": None}) == ""
