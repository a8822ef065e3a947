"""Every page of the console passes axe-core's checks (labels, names, contrast, landmarks,
language) in Chromium, in both languages, as each role sees it (issue 15)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from shared.devtools import httpcalls
from tests.browser.conftest import Console
from tests.browser.test_console_journeys import sign_in
from tests.services import CLERK, VALID_APPLICATION

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(300)]

PAGES = {
    "li.clerk": [
        "/applications/new",
        "/applications/new?item=pension_enrolment",
        "/reception",
        "/matters/mediation",
        "/cases/{case}",
        "/cases/find",
    ],
    "wang.reviewer": ["/worklist", "/cases/{case}"],
    "zhao.head": ["/statistics", "/station"],
    "gao.auditor": ["/audit?case={number}", "/audit/compliance"],
}


def violations(page: Page) -> list[dict[str, Any]]:
    found = Axe().run(page).response["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in found
    ]


ENGLISH = {  # the same pages in the other language: a few, where the words change most
    "li.clerk": ["/applications/new?item=pension_enrolment", "/cases/{case}"],
    "zhao.head": ["/statistics"],
}


@pytest.mark.parametrize(("lang", "pages"), [("zh", PAGES), ("en", ENGLISH)])
def test_every_page_passes_axe(
    console: Console, page: Page, lang: str, pages: dict[str, list[str]]
) -> None:
    answer = httpcalls.post(
        f"{console.stack['intake'].base_url}/cases",
        json=VALID_APPLICATION,
        headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    case, number = answer.json()["case_id"], answer.json()["case_number"]
    page.goto(f"{console.url}/lang/{lang}")
    found: dict[str, Any] = {}
    page.goto(f"{console.url}/sign-in")
    found["/sign-in"] = violations(page)
    for user, paths in pages.items():
        sign_in(page, console, user)
        for path in paths:
            page.goto(console.url + path.format(case=case, number=number))
            expect(page.locator("main h1")).to_be_visible()
            found[f"{user} {path}"] = violations(page)
        page.get_by_role("button", name="退出登录" if lang == "zh" else "Sign out").click()
        expect(page).to_have_url(f"{console.url}/sign-in?ended=out")
    assert {where: v for where, v in found.items() if v} == {}
