"""Request bodies are bounded at the edge: a body larger than the service's
``MAX_REQUEST_BODY_BYTES`` (1 MiB unless set) is a 413 problem+json, answered as soon as its
``Content-Length`` or the bytes so far say so and without reading the rest, in all three real
apps and over a real socket to uvicorn. (A 31 MB body grew a service to 2.4 GB while the
input guard buffered and parsed it before anyone signed in.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import Message

from services.intake.settings import IntakeSettings
from services.notify import sandbox
from shared.cli.supervisor import publish_seed_delegations
from shared.web.http import MAX_CONTAINERS, MAX_NESTING, PROBLEM_JSON, InputGuardMiddleware
from tests.services import VALID_APPLICATION, build_app, staff_headers

MiB = 1024 * 1024
CHUNK = 64 * 1024
CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")
HEAD = staff_headers("zhao.head", "station_head", "xuefeng_station")
# Where each service takes a body (the guard answers before routing, token or not).
BODIES = {"intake": "/reception", "processing": "/delegations", "notify": "/webhooks"}


@pytest.fixture
async def clients(sqlite_url: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    built = {name: build_app(name, sqlite_url) for name in BODIES}
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        for name, app in built.items()
    }
    yield clients
    for name, client in clients.items():
        await client.aclose()
        await built[name].state.runtime.engine.dispose()


def assert_too_large(response: httpx.Response, limit: str = "1 MiB") -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["connection"] == "close"
    problem = response.json()
    assert problem["errors"][0]["field"] == "body"
    assert f"at most {limit}" in problem["detail"] and "请求内容过大" in problem["detail"]


def test_the_default_is_one_mib() -> None:
    assert IntakeSettings().max_request_body_bytes == MiB


async def test_ten_megabytes_are_refused_by_every_service(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    body = json.dumps({"note": "x" * 10_000_000}).encode()
    for service, path in BODIES.items():
        headers = {**CLERK, "Content-Type": "application/json", "Idempotency-Key": "ten-megabytes"}
        assert_too_large(await clients[service].post(path, content=body, headers=headers))
        anonymous = await clients[service].post(path, content=body)  # before signing in
        assert_too_large(anonymous)


async def test_a_body_streamed_without_a_length_is_refused_past_the_limit(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"note": "'
        for _ in range(2 * MiB // CHUNK):
            yield b"x" * CHUNK
        yield b'"}'

    response = await clients["intake"].post("/reception", content=chunks(), headers=CLERK)
    assert "content-length" not in response.request.headers  # sent chunked
    assert_too_large(response)


async def test_a_body_just_under_the_limit_goes_on_to_the_route(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    head = b'{"visitor_name": "\\u5f20\\u4e09", "purpose": "enquiry", "note": "'
    body = head + b"x" * (MiB - len(head) - 2) + b'"}'
    assert len(body) == MiB
    headers = {
        **CLERK,
        "Content-Type": "application/json",
        "Idempotency-Key": "just-under-the-limit",
    }
    response = await clients["intake"].post("/reception", content=body, headers=headers)
    assert response.status_code == 422, response.text[:300]  # the route's own rule: note length
    assert response.json()["errors"][0]["field"] == "note"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 40 + b"]" * 40, "nested more than 32 deep"),
        (b"[" * 5000 + b"]" * 5000, "nested more than 32 deep"),  # deeper than json parses
        (b"[" * 100_000 + b"]" * 100_000, "more than 20,000 objects and arrays"),
        (b'{"note": [' + b"[]," * 30_000 + b"[]]}", "more than 20,000 objects and arrays"),
    ],
    ids=["40-deep", "5000-deep", "100000-deep", "30000-arrays"],
)
async def test_deep_or_crowded_json_is_refused_in_words(
    clients: dict[str, httpx.AsyncClient], body: bytes, says: str
) -> None:
    for service, path in BODIES.items():
        headers = {**CLERK, "Content-Type": "application/json", "Idempotency-Key": "deep-json"}
        response = await clients[service].post(path, content=body, headers=headers)
        assert response.status_code == 422, f"{service}: {response.text[:300]}"
        assert response.headers["content-type"] == PROBLEM_JSON
        (error,) = response.json()["errors"]
        assert error["field"] == "body" and says in error["message"], error


async def test_the_limit_is_a_setting(sqlite_url: str) -> None:
    await publish_seed_delegations(sqlite_url)
    app = build_app("intake", sqlite_url, max_request_body_bytes=4096)
    transport = httpx.ASGITransport(app=app)
    application = {**VALID_APPLICATION, "padding": " " * 4096}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        headers = {**CLERK, "Idempotency-Key": "limit-setting"}
        assert_too_large(await client.post("/cases", json=application, headers=headers), "4 KiB")
        fits = await client.post("/cases", json=VALID_APPLICATION, headers=headers)
        assert fits.status_code == 201, fits.text
    await app.state.runtime.engine.dispose()


# ------------------------------------------------------------------ the guard as ASGI


class Request:
    """One request handed to the guard message by message, counting what it read."""

    def __init__(self, headers: list[tuple[bytes, bytes]], chunks: Iterator[bytes]) -> None:
        self.headers = headers
        self.chunks = chunks
        self.pulled = 0
        self.reached_app = False
        self.sent: list[Message] = []

    async def run(self, limit: int) -> int:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            self.reached_app = True
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def receive() -> dict[str, Any]:
            self.pulled += 1
            chunk = next(self.chunks, None)
            if chunk is None:
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: Message) -> None:
            self.sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/reception",
            "query_string": b"",
            "headers": self.headers,
        }
        await InputGuardMiddleware(app, max_body_bytes=limit)(scope, receive, send)
        status: int = self.sent[0]["status"]
        return status


def endless() -> Iterator[bytes]:
    chunk = b"x" * CHUNK
    while True:
        yield chunk


@pytest.mark.parametrize("length", [b"%d" % (31 * MiB), b"9" * 5000], ids=["31MB", "5000-digits"])
async def test_a_declared_length_over_the_limit_is_refused_before_reading(length: bytes) -> None:
    request = Request([(b"content-length", length)], endless())
    assert await request.run(MiB) == 413
    assert request.pulled == 0 and not request.reached_app


async def test_a_stream_is_read_only_until_it_passes_the_limit() -> None:
    request = Request([], endless())  # chunked: no length declared
    assert await request.run(MiB) == 413
    assert request.pulled == MiB // CHUNK + 1 and not request.reached_app


async def test_the_limit_itself_is_allowed() -> None:
    request = Request([], iter([b"x" * CHUNK] * (MiB // CHUNK)))
    assert await request.run(MiB) == 204
    assert request.reached_app


def guarded(body: bytes) -> Request:
    return Request([(b"content-type", b"application/json")], iter([body]))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * MAX_NESTING + b"]" * MAX_NESTING, 204),
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), 422),
        (b"[" + b"[]," * (MAX_CONTAINERS - 2) + b"[]]", 204),
        (b"[" + b"[]," * (MAX_CONTAINERS - 1) + b"[]]", 422),
    ],
    ids=["nesting-at-the-limit", "nesting-past-it", "containers-at-the-limit", "past-it"],
)
async def test_json_shape_limits(body: bytes, status: int) -> None:
    assert await guarded(body).run(MiB) == status


async def test_a_large_body_is_checked_while_the_loop_serves_others() -> None:
    """A 1 MiB body of small values takes ~0.1 s to check; checked on the event loop, it
    held every other request (here a tiny one started just after) until it was done."""
    large = guarded(b"[" + b"0," * (MiB // 2 - 2) + b"0]")
    small = guarded(b'{"note": "a"}')
    finished: list[str] = []

    async def run(name: str, request: Request) -> None:
        assert await request.run(MiB) == 204
        finished.append(name)

    async with asyncio.TaskGroup() as group:
        group.create_task(run("large", large))
        group.create_task(run("small", small))
    assert finished == ["small", "large"]


# ------------------------------------------------------------------ over a real socket


async def exchange(base_url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and ``body`` and stop sending; what the server answers before it
    closes the connection (a server waiting for the rest answers nothing)."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()


@pytest.fixture
async def served(sqlite_url: str) -> AsyncIterator[str]:
    app = build_app("intake", sqlite_url)
    async with sandbox.serve_asgi(app) as base_url:
        yield base_url
    await app.state.runtime.engine.dispose()


def status_and_headers(answer: bytes) -> tuple[int, dict[str, str]]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in fields.items()}


async def test_uvicorn_answers_a_declared_31_mb_before_any_of_it_is_sent(served: str) -> None:
    head = (
        b"POST /reception HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (31 * MiB)
    )
    status, headers = status_and_headers(await exchange(served, head))
    assert status == 413
    assert headers["content-type"] == PROBLEM_JSON and headers["connection"] == "close"


async def test_uvicorn_answers_a_chunked_body_once_it_passes_the_limit(served: str) -> None:
    head = (
        b"POST /reception HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    # One byte past the limit and no end of the body: the server has read all that was sent
    # when it answers (closing with unread bytes would reset the connection).
    body = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK) * (MiB // CHUNK) + b"1\r\nx\r\n"
    status, headers = status_and_headers(await exchange(served, head, body))
    assert status == 413  # and the connection closed (read() ended) though the body never did
    assert headers["connection"] == "close"
