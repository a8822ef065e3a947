"""Each role's main journey through the console, in Chromium, on the real stack (issue 15).

What is asserted is what the person sees: the page's words, the case's status as the
page shows it, the printable notice; and behind it, the case's history as the API keeps
it (who acted, under which authority)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from shared.devtools import httpcalls
from tests.browser.conftest import Console
from tests.services import token_for

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(300)]

ITEM = "城乡居民基本养老保险参保登记"
ALL_MATERIALS = ("id_card", "household_register", "application_form")
WITH_ORIGINALS = ("id_card", "household_register")


def sign_in(page: Page, console: Console, user: str) -> None:
    page.goto(f"{console.url}/sign-in")
    page.get_by_role("radio", name=re.compile(re.escape(user))).check()
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_test_id("who")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="退出登录").click()
    expect(page.get_by_text("已退出登录")).to_be_visible()


def receive(page: Page, console: Console, materials: tuple[str, ...]) -> str:
    """The window clerk's application for the pension item; the case number it got."""
    page.goto(f"{console.url}/applications/new")
    page.get_by_label("按名称搜索事项").fill("养老")  # filters as the clerk types
    page.get_by_role("link", name=ITEM).click()
    page.get_by_label("姓名").fill("薛秀英")
    page.get_by_label("公民身份号码").fill("61058119680312002X")
    page.get_by_label("联系电话").fill("13891234567")
    page.get_by_label("所在村").select_option(index=1)
    for code in materials:
        page.locator(f"#m_{code}").check()
        if code in WITH_ORIGINALS:
            page.locator(f"#o_{code}").check()
    page.get_by_role("button", name="收件").click()
    number = page.get_by_test_id("case-number").inner_text()
    assert re.fullmatch(r"XF-\d{4}-\d{6}", number), number
    return number


def open_case(page: Page, console: Console, number: str) -> None:
    page.goto(f"{console.url}/cases/find?number={number}")
    expect(page.get_by_test_id("case-number")).to_have_text(number)


def act(page: Page, action: str, **fields: str) -> None:
    form = page.locator(f"form[data-action={action}]")
    for name, value in fields.items():
        field = form.locator(f"[name={name}]")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    form.get_by_role("button").click()


def expect_status(page: Page, status: str) -> None:
    expect(page.get_by_test_id("status")).to_have_attribute("data-status", status)


def test_a_clerk_receives_an_incomplete_application_and_prints_the_one_time_notice(
    console: Console, page: Page
) -> None:
    sign_in(page, console, "li.clerk")
    receive(page, console, materials=("id_card",))
    expect(page.locator("#slip-title")).to_contain_text("一次性告知书")
    missing = page.get_by_test_id("missing").locator("li")
    expect(missing).to_have_count(2)  # every missing material, at once
    expect(missing.nth(0)).to_contain_text("居民户口簿")
    expect(missing.nth(1)).to_contain_text("申请表")
    # Printable on A4: the console's frame and buttons stay off the paper.
    page.emulate_media(media="print")
    expect(page.locator("header.bar")).to_be_hidden()
    expect(page.get_by_role("button", name="打印")).to_be_hidden()
    expect(page.locator("#slip-title")).to_be_visible()
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type/Page") >= 1


def test_a_complete_application_through_review_decision_and_delivery(
    console: Console, page: Page
) -> None:
    sign_in(page, console, "li.clerk")
    number = receive(page, console, materials=ALL_MATERIALS)
    expect(page.locator("#slip-title")).to_contain_text("受理通知书")
    sign_out(page)

    # The reviewer finds it in the worklist, claims it and reviews it.
    sign_in(page, console, "wang.reviewer")
    expect(page).to_have_url(re.compile(r"/worklist$"))
    row = page.get_by_test_id("worklist").locator("tr", has_text=number)
    row.get_by_role("button", name="认领").click()
    expect(page.get_by_test_id("done")).to_contain_text("认领")  # on the case's own page
    expect(page.locator("#main")).to_contain_text("wang.reviewer")  # the task is hers now
    act(page, "start_review")
    expect_status(page, "in_review")
    # A refusal is shown as the API words it, and nothing changes.
    act(page, "complete_review", recommendation="approve", opinion="好")
    expect(page.get_by_test_id("problem")).to_contain_text("422")
    expect_status(page, "in_review")
    act(page, "complete_review", recommendation="approve", opinion="材料齐全，符合条件")
    expect_status(page, "reviewed")
    sign_out(page)

    # The station head decides, with a decision number.
    sign_in(page, console, "zhao.head")
    open_case(page, console, number)
    expect(page.locator("form[data-action=start_review]")).to_have_count(0)  # not the head's
    act(page, "approve", decision_number="韩人社〔2026〕101号")
    expect_status(page, "approved")
    sign_out(page)

    # The clerk delivers it.
    sign_in(page, console, "li.clerk")
    open_case(page, console, number)
    act(page, "deliver", method="in_person")
    expect_status(page, "delivered")
    history = page.get_by_test_id("history")
    for who in ("li.clerk", "wang.reviewer", "zhao.head"):
        expect(history).to_contain_text(who)
    expect(history).to_contain_text("hrss-xuefeng-2021")  # the delegation each act was under

    # What the page showed is what the log holds.
    processing = console.stack["processing"].base_url
    head = {"Authorization": f"Bearer {token_for('zhao.head', 'station_head', 'xuefeng_station')}"}
    case = httpcalls.get(f"{processing}/cases/by-number/{number}", headers=head, timeout=10).json()
    assert case["status"] == "delivered"
    events = httpcalls.get(f"{processing}/cases/{case['case_id']}/events", headers=head, timeout=10)
    kinds = [
        e["event_type"] for e in events.json()["events"] if e["event_type"] != "NotificationSent"
    ]
    assert kinds[:2] == ["CaseReceived", "CaseAccepted"]
    assert "ReviewCompleted" in kinds and "CaseApproved" in kinds and kinds[-1] == "CaseDelivered"
