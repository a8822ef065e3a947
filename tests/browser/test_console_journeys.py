"""Each role's main journey through the console, in Chromium, on the real stack (issue 15).

What is asserted is what the person sees: the page's words, the case's status as the
page shows it, the printable notice; and behind it, the case's history as the API keeps
it (who acted, under which authority)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from shared.devtools import httpcalls, waiting
from shared.domain.workcalendar import CHINA_TZ
from tests.browser.conftest import STATION_PC, Console
from tests.services import session_sandbox, token_for

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(300)]

ITEM = "城乡居民基本养老保险参保登记"
ALL_MATERIALS = ("id_card", "household_register", "application_form")
WITH_ORIGINALS = ("id_card", "household_register")


def sign_in(page: Page, console: Console, user: str, *, paper: bool = False) -> None:
    page.goto(f"{console.url}/sign-in")
    page.get_by_role("radio", name=re.compile(re.escape(user))).check()
    if paper:  # entering paper records: the token carries the permission backfill
        page.get_by_test_id("paper").check()
    page.locator("form.staff-pick").get_by_role("button").click()  # 登录 / Sign in
    expect(page.get_by_test_id("who")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="退出登录").click()
    expect(page.get_by_text("已退出登录")).to_be_visible()


def receive(
    page: Page, console: Console, materials: tuple[str, ...], occurred_at: str | None = None
) -> str:
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
    if occurred_at is not None:
        page.get_by_label("实际办理时间（补录）").fill(occurred_at)
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
    review = page.locator("form[data-action=complete_review]")
    expect(review.locator("textarea[name=opinion]")).to_have_value("好")  # nothing lost
    expect(review.locator("select[name=recommendation]")).to_have_value("approve")
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
    # Personal data in full only for a stated reason, which the case's history keeps.
    expect(page.locator("#main")).to_contain_text("610581********002X")
    page.get_by_label("查看理由").fill("申请人来电咨询")
    page.get_by_role("button", name="查看").click()
    expect(page.get_by_test_id("personal")).to_contain_text("61058119680312002X")
    expect(page.get_by_test_id("history")).to_contain_text("PersonalDataViewed")
    act(page, "rate", score="5", comment="在家门口就办了")  # the applicant's rating
    expect(page.get_by_test_id("done")).to_contain_text("评价")
    history = page.get_by_test_id("history")
    expect(history).to_contain_text("SatisfactionRated")
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
    assert "ReviewCompleted" in kinds and "CaseApproved" in kinds
    assert kinds[-3:] == ["CaseDelivered", "PersonalDataViewed", "SatisfactionRated"]


def test_a_forwarded_case_decided_by_the_department_seen_by_the_head_and_the_auditor(
    console: Console, page: Page
) -> None:
    # The window receives an application for an item the health bureau decides.
    sign_in(page, console, "li.clerk")
    page.goto(f"{console.url}/applications/new?q=出生")
    page.get_by_role("link", name="出生医学证明办理").click()
    page.get_by_label("姓名").fill("薛秀英")
    page.get_by_label("公民身份号码").fill("61058119680312002X")
    page.get_by_label("联系电话").fill("13891234567")
    page.get_by_label("所在村").select_option(index=1)
    for code in ("id_card", "delivery_record", "application_form"):
        page.locator(f"#m_{code}").check()
        if code != "application_form":
            page.locator(f"#o_{code}").check()
    page.get_by_role("button", name="收件").click()
    number = page.get_by_test_id("case-number").inner_text()
    sign_out(page)

    # The station reviews it and forwards it upstream.
    sign_in(page, console, "xue.reviewer")
    open_case(page, console, number)
    act(page, "claim")
    act(page, "start_review")
    act(page, "complete_review", recommendation="approve", opinion="材料齐全，转县卫健局")
    act(page, "forward")
    expect_status(page, "forwarded")
    sign_out(page)
    time.sleep(1.1)  # the auditor's moment: whole seconds after the forwarding…
    before_decision = datetime.now(CHINA_TZ).replace(microsecond=0)
    time.sleep(1.1)  # …and before the decision

    # The health bureau's officer finds it among the cases forwarded to them and decides.
    sign_in(page, console, "officer.hc_health")
    expect(page.get_by_role("heading", name="转来的案件")).to_be_visible()
    row = page.get_by_test_id("worklist").locator("tr", has_text=number)
    row.get_by_role("link", name=number).click()
    act(page, "approve", decision_number="卫健证〔2026〕7号")
    expect_status(page, "approved")
    expect(page.get_by_test_id("history")).to_contain_text("officer.hc_health")
    sign_out(page)

    # The station head sees it in the station's statistics (a read model: a moment behind).
    sign_in(page, console, "zhao.head")

    def approved_shown() -> bool:
        page.goto(f"{console.url}/statistics")
        cell = page.locator("tr[data-item=birth_certificate] td[data-figure=approved]")
        return cell.count() == 1 and cell.inner_text() == "1"

    waiting.wait_until(approved_shown, what="the decision in the head's statistics", timeout=60)
    expect(page.locator(".chart-row[data-item=birth_certificate] svg")).to_be_visible()
    # A forwarded item, in the forwarded group with its subtotal; decided upstream, so not
    # part of what the station completed; the report is the API's, downloadable as CSV.
    forwarded = page.locator("table[data-group=forwarded]")
    expect(forwarded.locator("tr[data-item=birth_certificate]")).to_be_visible()
    expect(forwarded.locator("tr[data-subtotal=forwarded] td[data-figure=approved]")).to_have_text(
        "1"
    )
    at_station = page.locator(
        "tr[data-subtotal=station] td[data-figure=completed_at_station]"
    ).inner_text()  # other tests' cases may be there too: the parts agree with the table
    expect(page.get_by_test_id("completed-parts")).to_contain_text(f"便民服务 {at_station}")
    with page.expect_download() as download:
        page.get_by_role("link", name="表格（CSV）").click()
    sheet = Path(download.value.path()).read_text(encoding="utf-8")
    assert "birth_certificate" in sheet and sheet.startswith("scope,from,to,section,group")
    sign_out(page)

    # The auditor reads its timeline as it stood before the decision, under the status of
    # the log's latest verification (processing verifies it shortly after it starts).
    sign_in(page, console, "gao.auditor")

    def verified() -> bool:
        page.goto(f"{console.url}/audit")
        return page.get_by_test_id("verification").get_attribute("data-status") == "verified"

    waiting.wait_until(verified, what="the log's verification on the audit page", timeout=60)
    page.get_by_label("受理编号").fill(number)
    page.get_by_label("截至时刻").fill(before_decision.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_role("button", name="查看").click()
    expect_status(page, "forwarded")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("CaseForwarded")
    expect(timeline).not_to_contain_text("CaseApproved")
    expect(page.get_by_test_id("not-counted")).to_contain_text("CaseApproved")
    # The station's use of its delegated powers over the period: all within.
    page.get_by_role("link", name="委托合规").click()
    expect(page.get_by_test_id("compliant")).to_have_attribute("data-compliant", "true")
    expect(page.get_by_test_id("counts")).to_contain_text("在委托权限内")
    page.go_back()
    # …and as it stands now.
    page.get_by_label("截至时刻").fill("")
    page.get_by_role("button", name="查看").click()
    expect_status(page, "approved")


def test_the_window_logs_a_visitor_and_opens_a_mediation(console: Console, page: Page) -> None:
    sign_in(page, console, "zhou.clerk")
    page.get_by_role("link", name="来访登记").click()
    page.get_by_label("来访人姓名").fill("薛老汉")
    page.get_by_label("来访事由").select_option("mediation")
    page.get_by_role("button", name="登记").click()
    expect(page.get_by_test_id("done")).to_be_visible()
    # A dispute with too few parties: the API's words, and what was typed is kept.
    page.get_by_role("link", name="矛盾纠纷调解").click()
    page.get_by_label("纠纷名称").fill("宅基地边界纠纷")
    page.get_by_label("当事人").fill("薛某甲")
    page.get_by_label("简要情况").fill("两户因宅基地边界发生争执")
    page.get_by_role("button", name="登记").click()
    expect(page.get_by_test_id("problem")).to_contain_text("parties")
    expect(page.get_by_label("纠纷名称")).to_have_value("宅基地边界纠纷")
    page.get_by_label("当事人").fill("薛某甲\n薛某乙")
    page.get_by_role("button", name="登记").click()
    expect_status(page, "registered")
    act(page, "conclude", outcome="agreement", summary="双方达成调解协议")
    expect_status(page, "concluded")


def test_the_head_subscribes_an_integrator_pauses_and_deletes_it(
    console: Console, page: Page
) -> None:
    allowed = session_sandbox()["WEBHOOK_ALLOW_NETWORKS"]  # the sandbox's receiver
    host, port = re.fullmatch(r"([\d.]+)/32:(\d+)", allowed).groups()  # type: ignore[union-attr]
    sign_in(page, console, "zhao.head")
    page.get_by_role("link", name="站务").click()
    expect(page.get_by_role("heading", name="预警案件（红灯在前）")).to_be_visible()
    # An address inside the network is refused, in the API's words.
    page.get_by_label("URL").fill("http://10.1.2.3/hook")
    page.get_by_role("button", name="添加订阅").click()
    expect(page.get_by_test_id("problem")).to_contain_text("只能推送到公网地址")
    page.get_by_label("URL").fill(f"http://{host}:{port}/caseflow")
    page.get_by_role("button", name="添加订阅").click()
    expect(page.get_by_test_id("secret")).to_contain_text("whsec_")  # shown this once
    status = page.get_by_test_id("webhooks").get_by_test_id("hook-status")
    expect(status).to_have_text("推送中")
    page.get_by_role("button", name="暂停").click()
    expect(status).to_have_text("已暂停")
    page.get_by_role("button", name="删除").click()
    expect(page.get_by_test_id("webhooks")).to_have_count(0)


def test_an_open_worklist_shows_a_new_case_without_a_reload(
    console: Console, page: Page, browser: Browser
) -> None:
    sign_in(page, console, "xue.reviewer")
    expect(page).to_have_url(re.compile(r"/worklist$"))
    page.evaluate("window.keptAcrossUpdates = true")  # gone if the page loaded again
    window = browser.new_context(viewport=STATION_PC, locale="zh-CN").new_page()
    try:
        sign_in(window, console, "li.clerk")
        number = receive(window, console, materials=ALL_MATERIALS)
    finally:
        window.context.close()
    expect(page.get_by_test_id("worklist")).to_contain_text(number, timeout=30_000)
    expect(page.locator("#live")).to_contain_text("列表已更新")
    assert page.evaluate("window.keptAcrossUpdates") is True


def test_paper_records_are_entered_with_the_moments_they_happened(
    console: Console, page: Page
) -> None:
    """Signed in to enter paper records (补录), the clerk hands in a form of 6 December 2021
    and the reviewer starts its review at the hour it happened; a moment before the hand-in
    is refused in the API's words. The history shows both times. Signed in as usual, no
    form asks for a moment."""
    sign_in(page, console, "li.clerk", paper=True)
    number = receive(page, console, ALL_MATERIALS, occurred_at="2021-12-06T09:00")
    sign_out(page)
    sign_in(page, console, "wang.reviewer", paper=True)
    open_case(page, console, number)
    act(page, "start_review", occurred_at="2021-12-05T16:00")
    expect(page.get_by_role("alert")).to_contain_text("补录时间不能早于上一办理环节")
    expect_status(page, "accepted")
    act(page, "start_review", occurred_at="2021-12-06T10:00")
    expect_status(page, "in_review")
    history = page.get_by_test_id("history")
    expect(history).to_contain_text("2021-12-06 09:00:00")
    expect(history).to_contain_text("2021-12-06 10:00:00")
    expect(history.get_by_test_id("entered-later").first).to_contain_text("补录于")
    sign_out(page)
    sign_in(page, console, "wang.reviewer")
    open_case(page, console, number)
    expect(page.locator("form[data-action=complete_review]")).to_be_visible()
    expect(page.locator("input[name=occurred_at]")).to_have_count(0)
