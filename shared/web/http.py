"""HTTP plumbing every service shares: problem details (RFC 9457) and their place in the
OpenAPI document, correlation ids, Prometheus metrics, and the ``/livez`` and ``/readyz``
probes."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import anyio.to_thread
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.adapters.eventlog import ConcurrencyError
from shared.adapters.outages import unavailable_dependency
from shared.domain.identity import text_problem
from shared.settings import DEFAULT_MAX_REQUEST_BODY_BYTES
from shared.web.metrics import metrics
from shared.web.tracing import current_trace_id

log = structlog.get_logger("caseflow.http")
access_log = structlog.get_logger("caseflow.access")
QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics"})
"""Polled by health checks and Prometheus every few seconds: kept out of the access log."""

PROBLEM_JSON = "application/problem+json"
CORRELATION_HEADER = "X-Correlation-ID"
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

REQUESTS = Counter("caseflow_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("caseflow_http_request_seconds", "HTTP request latency", ["method", "route"])

_TITLES = {
    400: "Bad request",
    401: "Sign-in needed",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    422: "The request is not valid",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(status: int, detail: str, *, title: str | None = None, **extra: Any) -> JSONResponse:
    """An ``application/problem+json`` response."""
    body = {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    if loc and loc[0] == "header":
        return f"header {parts[1]}" if len(parts) > 1 else "header"
    return ".".join(parts) or "body"


def _error(error: dict[str, Any]) -> dict[str, str]:
    if error["type"] == "json_invalid":  # located at ("body", character): say what it is
        why = error.get("ctx", {}).get("error") or "it can't be parsed"
        return {
            "field": "body",
            "message": f"not valid JSON ({why}, at character {error['loc'][-1]})",
        }
    return {
        "field": _field(tuple(error["loc"])),
        "message": str(error["msg"]).removeprefix("Value error, "),
    }


def _validation_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_error(e) for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, detail, errors=errors)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path. The router's 405 names only
    the methods of the first route it matched; RFC 9110 wants all of the resource's."""
    routes = request.app.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


def _http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        response.headers["Allow"] = allowed
    return response


def _conflict_problem(_: Request, exc: Exception) -> JSONResponse:
    return problem(409, f"{exc}; reload the case and try again", title="The case changed meanwhile")


def _unexpected_problem(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "Something went wrong on our side; nothing was saved. Please try again.")


_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""``\\u0000`` in JSON text: the NUL character (an escaped backslash before it doesn't count)."""
_NUL_WHY = "text can't contain the NUL character (\\u0000); remove it"
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_REFUSED_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""Every character :func:`_string_problem` refuses, found in one search."""
MAX_NESTING = 32
"""How deep objects and arrays may nest in a body (the services' bodies nest three deep)."""
MAX_CONTAINERS = 20_000
"""How many objects and arrays a body may hold, counted as its ``[`` and ``{`` before it is
parsed (a bracket in a text counts too; the services' bodies hold a few dozen, and their
texts a few thousand characters at most). Parsing 350,000 empty arrays (1 MiB) took
0.3-0.4 s in a service process, nearly all of it the garbage collector; 20,000 take ~5 ms."""
CHECK_IN_A_THREAD = 64 * 1024
"""A body larger than this is checked in a worker thread, so that the event loop serves
other requests meanwhile (a 1 MiB body of small values takes ~0.1 s to check)."""


class _Refused(Exception):
    """A request the guard answers itself: ``status`` (422 unless said), the field at fault
    and why."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def answer(self) -> JSONResponse:
        error = {"field": self.field, "message": self.message}
        response = problem(self.status, f"{self.field}: {self.message}", errors=[error])
        if self.status == 413:  # the rest of the body stays unread: don't wait for it
            response.headers["Connection"] = "close"
        return response


def _size(limit: int) -> str:
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if limit >= unit and limit % unit == 0:
            return f"{limit // unit} {name}"
    return f"{limit} bytes"


def _too_large(limit: int) -> _Refused:
    return _Refused(
        "body",
        f"the request is larger than this service accepts (at most {_size(limit)}); send "
        "less (请求内容过大)",
        413,
    )


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The largest ``Content-Length`` the request declares (0 if none or not a number: the
    server refuses those, and the body is counted as it comes anyway)."""
    lengths = [v.strip() for k, v in headers if k == b"content-length"]
    # Python won't read over 4,300 digits as a number (a ValueError); 19 already say "huge".
    return max((int(v.lstrip(b"0")[:19] or b"0") for v in lengths if v.isdigit()), default=0)


async def _read_body(receive: Receive, limit: int) -> list[Message]:
    """The request's messages up to the end of its body; :class:`_Refused` (413) as soon as
    the body passes ``limit``, with the rest left unread."""
    received: list[Message] = []
    size = 0
    more = True
    while more:
        message = await receive()
        received.append(message)
        size += len(message.get("body", b""))
        if size > limit:
            raise _too_large(limit)
        more = message["type"] == "http.request" and message.get("more_body", False)
    return received


def _string_problem(value: str) -> str | None:
    if found := _LONE_SURROGATE.search(value):
        return f"is not valid Unicode text (a lone surrogate \\u{ord(found.group()):04x})"
    return text_problem(value)


def _too_deep() -> _Refused:
    return _Refused(
        "body", f"objects and arrays are nested more than {MAX_NESTING} deep (嵌套层数过多)"
    )


def _check_json(body: bytes) -> None:
    """Raise :class:`_Refused` for a key given twice in one object, a string with a control
    character (other than newline and tab) or a lone surrogate anywhere in the document,
    nesting deeper than :data:`MAX_NESTING` or more than :data:`MAX_CONTAINERS` objects and
    arrays. A body that is not JSON at all is left to FastAPI's own answer.

    It costs little more than parsing: objects are parsed into tuples of their pairs (every
    key kept, built in C), each string is searched once, and the path of a field is only put
    together for a refusal."""
    if body.count(b"[") + body.count(b"{") > MAX_CONTAINERS:
        raise _Refused(
            "body",
            f"holds more than {MAX_CONTAINERS:,} objects and arrays (counting each [ and {{, "
            "also in texts) (对象和数组过多)",
        )
    try:
        document = json.loads(body, object_pairs_hook=tuple)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # not JSON: FastAPI says so, or the route takes none
        return
    # Depth first by hand, an iterator of (key, value) per open object or array; keys[i] is
    # where frames[i + 1] stands in its parent.
    frames: list[Iterator[tuple[str | int, Any]]] = [iter((("", document),))]
    keys: list[str | int] = []
    while frames:
        step = next(frames[-1], None)
        if step is None:
            frames.pop()
            if keys:
                keys.pop()
            continue
        key, value = step
        kind = type(value)
        if kind is tuple:  # an object
            _check_keys(value, keys, key)
            frames.append(iter(value))
        elif kind is list:
            frames.append(enumerate(value))
        elif kind is str and _REFUSED_IN_TEXT.search(value):
            raise _Refused(_where(keys, key), _string_problem(value) or "is not valid text")
        else:
            continue
        keys.append(key)
        if len(keys) > MAX_NESTING:
            raise _too_deep()


def _where(keys: list[str | int], key: str | int) -> str:
    """The field's path, ``applicant.id_number`` or ``materials.0.code``; ``body`` for the
    document itself."""
    return ".".join(str(k) for k in [*keys[1:], key]) if keys else "body"


def _check_keys(pairs: tuple[tuple[str, Any], ...], keys: list[str | int], key: str | int) -> None:
    """Refuse a name given twice in the object ``pairs`` (at ``key`` below ``keys``), or a
    name with a character a string may not hold."""
    names = [name for name, _ in pairs]
    if len(set(names)) < len(names):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise _Refused(
                    _where([*keys, key], name),
                    f"the key {name!r} is given twice in one object; send it once (键名重复)",
                )
            seen.add(name)
    for name in names:
        if _REFUSED_IN_TEXT.search(name):
            raise _Refused(_where([*keys, key], name), f"the key {_string_problem(name)}")


def _check_body(body: bytes) -> None:
    """Raise :class:`_Refused` for NUL in the body, or what :func:`_check_json` refuses
    (whatever type the body declares: what parses as JSON is checked as JSON)."""
    if b"\x00" in body or (b"\\u0000" in body and _NUL_ESCAPE.search(body)):
        raise _Refused("body", _NUL_WHY)
    if body:
        _check_json(body)


def _check_query(query: str) -> None:
    for name, value in parse_qsl(query, keep_blank_values=True):
        if problem := _string_problem(value):
            raise _Refused(f"query.{name}", problem)


class InputGuardMiddleware:
    """Refuses a body larger than ``max_body_bytes`` with a 413 problem, as soon as its
    ``Content-Length`` or the bytes so far say so, without reading the rest; more than one
    ``Content-Type`` header with a 400 (Starlette reads the first, a dict of the headers
    keeps the last: a body could pass as one type and be read as another); and, with a
    422 problem naming the field, before anything reads the request:

    - the NUL character (U+0000) in the address or the body: PostgreSQL stores it in
      neither text nor JSONB (the request would end in a 500), and no clerk means to type it;
    - a key given twice in one JSON object, at any depth: JSON parsers keep the last one,
      so ``{"id_number": "<bad>", "id_number": "<good>"}`` would hide what was sent;
    - a control character other than newline and tab (ANSI escapes, carriage returns,
      C1 controls) or a lone surrogate in any string of the body or value of the query,
      for every free-text field of every service at once;
    - nesting deeper than :data:`MAX_NESTING`, or more than :data:`MAX_CONTAINERS` objects
      and arrays, which would hold the event loop while being parsed.

    Every body that parses as JSON is checked as JSON, whatever type it declares; one over
    :data:`CHECK_IN_A_THREAD` bytes in a worker thread.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            received = await self._check(scope, receive)
        except _Refused as refused:
            await refused.answer()(scope, receive, send)
            return

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _check(self, scope: Scope, receive: Receive) -> list[Message]:
        """The request's body messages, read and found fine; else :class:`_Refused`."""
        if _declared_length(scope["headers"]) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)  # before reading a byte of it
        types = sum(1 for name, _ in scope["headers"] if name == b"content-type")
        if types > 1:  # one reader would go by the first, another by the last
            raise _Refused(
                "header Content-Type",
                f"is given {types} times; send it once (请求头 Content-Type 重复)",
                400,
            )
        query = scope["query_string"].decode("latin-1")
        if "\x00" in scope["path"]:
            raise _Refused("path", _NUL_WHY)
        if "\x00" in unquote_plus(query):
            raise _Refused("query", _NUL_WHY)
        _check_query(query)
        received = await _read_body(receive, self.max_body_bytes)
        body = b"".join(m.get("body", b"") for m in received)
        if len(body) > CHECK_IN_A_THREAD:
            await anyio.to_thread.run_sync(_check_body, body)
        else:
            _check_body(body)
        return received


RETRY_AFTER_SECONDS = 5
"""What a 503 asks the client to wait before trying again."""


async def _database_down(scope: Scope) -> bool:
    """Whether the service's database answers no ping right now (an app without a runtime
    can't tell: no)."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    if runtime is None:
        return False
    checks: dict[str, str] = await runtime.readiness()
    return checks.get("database", "ok") != "ok"


class UnavailableMiddleware:
    """A request that fails because the database (or NATS) can't be reached answers 503
    problem+json with ``Retry-After``, and the log gets one line, not a traceback: an
    outage is not a bug, and nothing was saved (the transaction never committed).

    Known connection failures are recognised by type; any other failure is taken for an
    outage when the database answers no ping right now (a Unix socket that vanished with a
    stopped PostgreSQL raises a bare ``FileNotFoundError``). Everything else goes on to the
    500 handler, traceback and all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            found = unavailable_dependency(exc)
            if found is None and await _database_down(scope):
                found = "database", exc
            if found is None:
                raise
            dependency, cause = found
            first_line = (str(cause).splitlines() or [""])[0][:200]
            log.warning(
                "dependency unavailable: answered 503",
                dependency=dependency,
                error=f"{type(cause).__name__}: {first_line}",
                method=scope["method"],
                path=scope["path"],
            )
            zh = "数据库" if dependency == "database" else "消息总线"
            refused = problem(
                503,
                f"the {dependency} can't be reached right now; nothing was saved. Please try "
                f"again in a moment (暂时无法连接{zh}，未保存任何内容，请稍后重试)",
                unavailable=dependency,
            )
            refused.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            await refused(scope, receive, send)


class LoggedOnce:
    """The outermost layer: an error the 500 handler has logged and answered is not raised
    on to the server, which would log it a second time (Starlette raises it again after the
    answer, for servers and test clients). An error before any answer still propagates."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = False

        async def watched(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if scope["type"] != "http" or not answered:
                raise


class CorrelationMiddleware:
    """Carries ``X-Correlation-ID`` (or a new one) into logs, events and the response,
    and records request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (
            dict(scope["headers"]).get(CORRELATION_HEADER.lower().encode(), b"").decode("latin-1")
        )
        # Given, it is carried as given; else, when tracing, the request's trace id (so
        # that the case's work on the bus continues the trace), else a random one.
        correlation_id = (
            given if _CORRELATION.match(given) else current_trace_id() or uuid.uuid4().hex
        )
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        started = time.perf_counter()

        async def send_with_header(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(
                    (CORRELATION_HEADER.encode(), correlation_id.encode())
                )
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            try:
                await self.app(scope, receive, send_with_header)
            finally:
                method, route = _metric_labels(scope)
                seconds = time.perf_counter() - started
                REQUESTS.labels(method, route, str(status)).inc()
                LATENCY.labels(method, route).observe(seconds)
                # The access log: one line per request, without its query string (a reason
                # to open personal data travels there); probes and scrapes only at debug.
                write = log.debug if route in QUIET_ROUTES else access_log.info
                write(
                    "request",
                    method=method,
                    path=scope["path"][:200],
                    route=route,
                    status=status,
                    ms=round(seconds * 1000, 1),
                )


def _metric_labels(scope: Scope) -> tuple[str, str]:
    """The request's ``method`` and ``route`` labels: a method outside HTTP's standard ones
    is ``other`` and the route is the matched template (``/cases/{case_id}``), else
    ``unmatched``, so made-up methods and addresses can't grow the number of series."""
    method = scope["method"] if scope["method"] in _METHODS else "other"
    return method, getattr(scope.get("route"), "path", "unmatched")


def correlation_id(request: Request) -> str:
    """The request's correlation id (set by :class:`CorrelationMiddleware`)."""
    return str(request.state.correlation_id)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "Problem details (RFC 9457): what went wrong, in words",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "description": "For a request that is not valid: each field at fault",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_PROBLEM_REF = "#/components/schemas/Problem"
_FASTAPI_DEFAULTS = ("HTTPValidationError", "ValidationError")


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make ``schema`` (an OpenAPI document) say what the handlers above answer: every
    error is ``application/problem+json`` (FastAPI documents its own 422 shape, which
    nobody receives); a body that can't be read is a 400, one too large a 413, a missing or
    bad token a 401, claims the registry doesn't bear out a 403, an unreachable database a
    503.

    Parameters travel as text, so none is ``null``: FastAPI's ``anyOf [..., null]`` for
    an optional one becomes the plain type (leaving it out is how to give none)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "The body is not readable JSON"})
                responses.setdefault(
                    "413", {"description": "The body is larger than the service accepts"}
                )
            if operation.get("security"):
                responses.setdefault("401", {"description": "Not signed in, or a bad token"})
                responses.setdefault(
                    "403",
                    {
                        "description": "The token's role doesn't suit its organisation, or it "
                        "carries a special permission not granted to that role"
                    },
                )
                responses.setdefault(
                    "503",
                    {
                        "description": "The database can't be reached right now; nothing was "
                        "saved (see Retry-After)"
                    },
                )
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": _PROBLEM_REF}}}
                    if response.get("description") == "Validation Error":
                        response["description"] = _TITLES[422]
            for parameter in operation.get("parameters", []):
                _not_null(parameter["schema"])
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in _FASTAPI_DEFAULTS:
        components.pop(name, None)
    return schema


def _not_null(parameter: dict[str, Any]) -> None:
    variants = parameter.get("anyOf")
    if variants is None:
        return
    kept = [v for v in variants if v != {"type": "null"}]
    if len(kept) == 1:
        del parameter["anyOf"]
        parameter.update(kept[0])
    else:
        parameter["anyOf"] = kept


def install(app: FastAPI, *, max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES) -> None:
    """Problem-details handlers and their OpenAPI documentation, the input guard (bodies up
    to ``max_body_bytes``), correlation middleware and ``/metrics`` (for the holder of the
    metrics token)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return document_problems(build())

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend it
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    app.add_exception_handler(ConcurrencyError, _conflict_problem)
    app.add_exception_handler(Exception, _unexpected_problem)
    app.add_middleware(UnavailableMiddleware)
    app.add_middleware(InputGuardMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(CorrelationMiddleware)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return LoggedOnce(build_stack())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
