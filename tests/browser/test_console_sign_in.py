"""Production sign-in (issue 15): the console with OpenID Connect only, in front of a
provider that signs with the key the services trust. In Chromium, as a member signs in."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from shared.adapters.auth import Role, SignedInStaff, SigningKey
from tests.browser.conftest import Console, console_on
from tests.browser.oidc_provider import Provider
from tests.services import ServiceProcess, serve, session_keys

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    idp = Provider(
        key=SigningKey.load(session_keys().directory),
        client_id="caseflow-console",
        secret=secrets.token_urlsafe(16),
        users={
            "wang.reviewer": SignedInStaff(
                "wang.reviewer", Role.reviewer, "xuefeng_station", "王强"
            ),
        },
    )
    with serve(idp.app()) as url:
        idp.url = url
        yield idp


@pytest.fixture(scope="module")
def console(
    stack: dict[str, ServiceProcess], provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console-oidc")
    (folder / "secret").write_text(provider.secret)
    with console_on(
        stack,
        folder,
        oidc_issuer=provider.url,
        oidc_client_id=provider.client_id,
        oidc_client_secret_file=str(folder / "secret"),
        public_url="{self}",
    ) as process:
        yield Console(process.base_url, stack, process)


def test_a_member_signs_in_with_the_city_provider_and_out_again(
    console: Console, provider: Provider, page: Page
) -> None:
    page.goto(f"{console.url}/worklist")
    expect(page).to_have_url(f"{console.url}/sign-in")
    expect(page.get_by_text("li.clerk")).to_have_count(0)  # no demo staff in production
    page.get_by_role("link", name="使用统一身份认证登录").click()
    expect(page.get_by_role("heading", name="城市统一身份认证")).to_be_visible()
    page.get_by_role("button", name="王强 (wang.reviewer)").click()
    expect(page).to_have_url(f"{console.url}/worklist")
    expect(page.get_by_test_id("who")).to_have_text("王强")
    assert provider.refused == []
    page.get_by_role("button", name="退出登录").click()
    expect(page.get_by_text("已退出登录")).to_be_visible()
    page.goto(f"{console.url}/worklist")
    expect(page).to_have_url(f"{console.url}/sign-in")


def test_a_sign_in_not_started_in_this_browser_is_refused(console: Console, page: Page) -> None:
    page.goto(f"{console.url}/sign-in/callback?code=stolen&state=someone-elses")
    expect(page.get_by_test_id("problem")).to_contain_text("not started in this browser")
    page.goto(f"{console.url}/worklist")
    expect(page).to_have_url(f"{console.url}/sign-in")
