"""The tests' one HTTP client (shared/devtools/httpcalls.py): made once, and like
``httpx.get`` it carries no cookie from one call to the next."""

from __future__ import annotations

import httpx

from shared.devtools import httpcalls


def _answer_setting_a_cookie() -> httpx.Response:
    request = httpx.Request("GET", "http://127.0.0.1/signed-in")
    return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"}, request=request)


def test_one_client_for_every_call() -> None:
    assert httpcalls.client() is httpcalls.client()


def test_no_cookie_is_kept_between_calls() -> None:
    kept_by_default = httpx.Client()
    kept_by_default.cookies.extract_cookies(_answer_setting_a_cookie())
    assert [c.name for c in kept_by_default.cookies.jar] == ["session"]  # what we avoid
    httpcalls.client().cookies.extract_cookies(_answer_setting_a_cookie())
    assert list(httpcalls.client().cookies.jar) == []
