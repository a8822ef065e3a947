"""HTTP plumbing for the workflow: the case service on the app, the signed-in staff
member as the engine sees them, Idempotency-Key (the sender's, see
:mod:`shared.adapters.idempotency`), and problem details for the engine's errors (404, 409, 422
and the recorded 403)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared.adapters.idempotency import KeyedRequest, KeyReused, SenderKey
from shared.application.workflow.service import (
    ActionRefusedError,
    BodyInvalid,
    CaseService,
    FieldInvalid,
    NotFound,
)
from shared.domain.catalogue import DraftItem, UnknownItem
from shared.domain.workflow import engine
from shared.web.auth import StaffDep
from shared.web.http import problem

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key per request (e.g. a UUID), yours alone: your retry with "
        "the same key and request answers with what the first one made and records nothing "
        "twice; the same key with another request is a 409",
    ),
]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {"application/problem+json": {}}, "description": text}
    for code, text in (
        (401, "Not signed in, or the token is not valid"),
        (403, "Refused: wrong role or outside the delegation (the attempt is recorded)"),
        (404, "No such case (or not one of your organisation's)"),
        (409, "Not allowed in the case's state, or the case changed meanwhile"),
        (422, "The request is not valid"),
    )
}


async def get_service(request: Request) -> CaseService:
    """The process's case service (async, as every dependency: no worker thread)."""
    service: CaseService = request.app.state.case_service
    return service


ServiceDep = Annotated[CaseService, Depends(get_service)]


async def acting(staff: StaffDep) -> engine.Staff:
    """The signed-in member of staff, as the engine sees them."""
    return engine.Staff(
        user=staff.user,
        role=str(staff.role),
        org=staff.org,
        permissions=staff.permissions,
    )


ActingDep = Annotated[engine.Staff, Depends(acting)]


def sender_key(request: Request, staff: engine.Staff, key: str) -> SenderKey:
    """Whose key it is and the route it was sent to (``POST /cases/{case_id}/actions/…``)."""
    route = request.scope.get("route")
    operation = f"{request.method} {getattr(route, 'path', request.url.path)}"
    return SenderKey(organisation=staff.org, user=staff.user, key=key, operation=operation)


def keyed(
    request: Request, staff: engine.Staff, key: str, body: BaseModel | None, **path: object
) -> KeyedRequest:
    """The request as its sender's key records it: who sent it, the route, and a
    fingerprint of its validated body and path parameters."""
    return sender_key(request, staff, key).keyed(body, path)


def _refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ActionRefusedError)
    return problem(
        403,
        f"{exc.refusal.message} — this attempt was recorded",
        title="Refused",
        reason=exc.refusal.reason,
    )


def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return problem(404, str(exc))


def _not_allowed(_: Request, exc: Exception) -> JSONResponse:
    return problem(409, str(exc), title="Not allowed now")


def _key_reused(_: Request, exc: Exception) -> JSONResponse:
    return problem(409, str(exc), title="Idempotency-Key already used")


def _invalid(_: Request, exc: Exception) -> JSONResponse:
    return problem(422, str(exc))


def _body_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyInvalid | FieldInvalid)
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "body",
            "message": str(e["msg"]).removeprefix("Value error, "),
        }
        for e in exc.errors
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, detail, errors=errors)


def _lookup(_: Request, exc: Exception) -> JSONResponse:
    return problem(422, str(exc))


def install(app: FastAPI, service: CaseService) -> None:
    """Keep ``service`` on the app and answer the engine's errors as problem details."""
    app.state.case_service = service
    app.add_exception_handler(ActionRefusedError, _refused)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(engine.NotAllowed, _not_allowed)
    app.add_exception_handler(KeyReused, _key_reused)
    app.add_exception_handler(engine.Invalid, _invalid)
    app.add_exception_handler(BodyInvalid, _body_invalid)
    app.add_exception_handler(FieldInvalid, _body_invalid)
    app.add_exception_handler(UnknownItem, _lookup)
    app.add_exception_handler(DraftItem, _lookup)
