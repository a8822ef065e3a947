"""Plain HTTP calls for the tests, the benchmarks and ``caseflow up``'s readiness checks,
through one client made once.

``httpx.get()`` and its siblings build a client per call, and each client loads the
certificate authorities (certifi's bundle) into a new SSL context: about 30 ms of CPU per
call, even for ``http://``. The end-to-end tests poll the services that way; before this
module, that was half of what a test process spent. The client here keeps no connection
open between requests (each request opens its own, as ``httpx.get`` does), so a service
restarted or killed between two requests leaves nothing stale behind; it is safe to share
between threads. Same defaults as ``httpx.get``: a 5-second timeout, no redirects followed,
no cookies kept.
"""

from __future__ import annotations

import functools
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx


@functools.cache
def client() -> httpx.Client:
    """The shared client (made on first use). It keeps no cookie: a call carries only
    what it is given, as with ``httpx.get``."""
    return httpx.Client(
        limits=httpx.Limits(max_keepalive_connections=0),
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def request(method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
    """``httpx.request`` through the shared client."""
    return client().request(method, url, **kwargs)


def get(url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
    """``httpx.get`` through the shared client."""
    return client().get(url, **kwargs)


def post(url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
    """``httpx.post`` through the shared client."""
    return client().post(url, **kwargs)


def patch(url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
    """``httpx.patch`` through the shared client."""
    return client().patch(url, **kwargs)


def delete(url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
    """``httpx.delete`` through the shared client."""
    return client().delete(url, **kwargs)
