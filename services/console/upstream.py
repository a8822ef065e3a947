"""Calls to intake, processing and notify with the signed-in member's token.

The console decides nothing itself: what a member may see and do is what the APIs answer
for their token. A refusal comes back as a :class:`Refused` carrying the API's own
problem details (RFC 9457), shown to the member as the API words it; an API that can't be
reached is :class:`Unavailable` (the page answers 503 with Retry-After)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from services.console.settings import ConsoleSettings

Api = Literal["intake", "processing", "notify"]


@dataclass
class Refused(Exception):
    """The API said no (4xx): its status, title and detail."""

    status: int
    title: str
    detail: str
    errors: list[dict[str, Any]]

    def __str__(self) -> str:
        return f"{self.status} {self.detail or self.title}"


class SignInAgain(Exception):
    """The API no longer takes the member's token (401): expired or revoked."""


class Unavailable(Exception):
    """The API did not answer, or answered 5xx."""


class Apis:
    """One HTTP client for the three APIs (kept connections)."""

    def __init__(
        self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.bases: dict[Api, str] = {
            "intake": settings.intake_url,
            "processing": settings.processing_url,
            "notify": settings.notify_url,
        }
        self._client = httpx.AsyncClient(
            timeout=settings.api_timeout_seconds,
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # no proxy from the environment between the console and its APIs
        )

    async def call(
        self,
        api: Api,
        method: str,
        path: str,
        token: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The API's JSON answer to one request (2xx), else :class:`Refused` or
        :class:`Unavailable`."""
        answer = await self._send(
            api, method, path, token, json=json, params=params,
            idempotency_key=idempotency_key, headers=headers,
        )  # fmt: skip
        try:
            return answer.json() if answer.content else None
        except ValueError:
            return None

    async def _send(
        self,
        api: Api,
        method: str,
        path: str,
        token: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request's answer if it is a 2xx, else :class:`Refused` (with the problem's
        words), :class:`SignInAgain` or :class:`Unavailable`."""
        sent = {"authorization": f"Bearer {token}", **(headers or {})}
        if idempotency_key is not None:
            sent["idempotency-key"] = idempotency_key
        try:
            answer = await self._client.request(
                method, self.bases[api] + path, json=json, params=params, headers=sent
            )
        except httpx.HTTPError as err:
            raise Unavailable(f"{api}: {type(err).__name__}") from None
        if answer.status_code >= 500:
            raise Unavailable(f"{api}: {answer.status_code}")
        body: Any
        try:
            body = answer.json() if answer.content else None
        except ValueError:
            body = None
        if answer.status_code == 401:
            raise SignInAgain()
        if answer.status_code >= 400:
            problem = body if isinstance(body, dict) else {}
            raise Refused(
                answer.status_code,
                str(problem.get("title") or answer.reason_phrase),
                str(problem.get("detail") or ""),
                list(problem.get("errors") or []),
            )
        return answer

    async def get(self, api: Api, path: str, token: str, **params: str) -> Any:
        return await self.call(api, "GET", path, token, params=params or None)

    async def download(self, api: Api, path: str, token: str, **params: str) -> tuple[bytes, str]:
        """A document the API renders (CSV, a printable page): its bytes and media type."""
        answer = await self._send(api, "GET", path, token, params=params or None)
        return answer.content, answer.headers.get("content-type", "application/octet-stream")

    async def stream(self, api: Api, path: str, token: str) -> AsyncIterator[bytes]:
        """The bytes of a long answer (server-sent events) as they come; ends when the
        API ends it or can't be reached (the browser's EventSource connects again)."""
        headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        timeout = httpx.Timeout(self._client.timeout.connect, read=60.0)
        try:
            async with self._client.stream(
                "GET", self.bases[api] + path, headers=headers, timeout=timeout
            ) as answer:
                if answer.status_code != 200:
                    return
                async for chunk in answer.aiter_raw():
                    yield chunk
        except httpx.HTTPError:
            return

    async def aclose(self) -> None:
        await self._client.aclose()


def new_key() -> str:
    """An Idempotency-Key for one form: a page's form carries it, so a form sent twice
    (a double click, a reload) is one request to the API."""
    return f"console-{uuid.uuid4().hex}"
