"""Notify's HTTP API: webhook subscriptions for integrators, dead letters for operators,
and who was told what about a case.

A station head manages their own station's subscriptions and dead letters; staff with
the ``operate`` permission (``caseflow token --permission operate``) manage every
station's.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.notify import outbox, subscriptions
from services.notify.channels.webhook import generate_secret
from services.notify.egress import (
    AddressRefused,
    EgressPolicy,
    Resolver,
    TargetInvalid,
    check_url,
    parse_target,
    system_resolver,
)
from shared.adapters.auth import Role, SignedInStaff
from shared.adapters.idempotency import KeyedRequest, KeyReused
from shared.domain.event_catalogue import event_payloads
from shared.domain.orgs import OrgKind
from shared.web.auth import StaffDep, get_organisations
from shared.web.runtime import EventLogDep

OPERATE = "operate"

router = APIRouter(tags=["notifications"])

_REFUSED: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not the station's head (nor staff with the operate permission)"}
}
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    **_REFUSED,
    404: {"description": "No such subscription (or not one of your station's)"},
}

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key per request (e.g. a UUID), yours alone: your retry with "
        "the same key and body answers with the subscription it made (without the secret); "
        "the same key with another request is a 409",
    ),
]
SubscriptionId = Annotated[uuid.UUID, Path(description="the subscription's id")]
DeliveryId = Annotated[uuid.UUID, Path(description="the delivery's id")]


class SubscriptionIn(BaseModel):
    """A new webhook subscription."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2000,
        description="Where to POST: https://…, or http:// on a trusted network. The host "
        "must be, or resolve to, public internet addresses only (or a network the operator "
        "allows); no user name or password in the URL",
        examples=["https://dept.example.gov.cn/caseflow/webhook"],
    )
    event_types: list[str] = Field(
        min_length=1,
        max_length=100,
        description='Event types to receive, or ["*"] for all',
        examples=[["CaseAccepted", "CaseApproved", "CaseRejected"]],
    )
    station: str | None = Field(
        default=None, max_length=64, description="Whose cases; your own station when unset"
    )
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be a web address starting with https:// (or http://)")
        try:
            parse_target(value)
        except TargetInvalid as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        if value == [subscriptions.ALL_EVENTS]:
            return value
        known = event_payloads()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(unknown)}; see /asyncapi.json for the list"
            )
        return sorted(set(value))


class StatusIn(BaseModel):
    """Pause or resume a subscription."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "paused"]


class RedriveIn(BaseModel):
    """Which dead letters to send again."""

    model_config = ConfigDict(extra="forbid")

    delivery_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)


def _url_refused(url: str, reason: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "url"), "msg": reason, "input": url}]
    )


async def _check_webhook_url(request: Request, url: str) -> None:
    """Refuse (422, naming ``url``) a URL whose host is, or resolves to, an address
    webhooks may not reach; the dispatcher checks again at every delivery."""
    policy: EgressPolicy = getattr(request.app.state, "egress_policy", EgressPolicy())
    resolver: Resolver = getattr(request.app.state, "egress_resolver", system_resolver)
    try:
        await check_url(url, policy, resolver)
    except AddressRefused as err:
        raise _url_refused(url, err.reason) from None
    except TargetInvalid as err:
        raise _url_refused(url, str(err)) from None


def _operator(staff: SignedInStaff) -> bool:
    return OPERATE in staff.permissions


def _station_for(staff: SignedInStaff, station: str | None) -> str:
    """The station ``staff`` may manage: their own as station head, any as operator."""
    if _operator(staff):
        if station is None and staff.role is not Role.station_head:
            raise HTTPException(422, "say which station: give 'station'")
        return station or staff.org
    if staff.role is not Role.station_head:
        raise HTTPException(
            403, "only a station head (or staff with the operate permission) can do this"
        )
    if station is not None and station != staff.org:
        raise HTTPException(403, f"you manage {staff.org}'s notifications, not {station}'s")
    return staff.org


def _known_station(request: Request, station: str) -> None:
    """An operator subscribes for a station of the registry, not for a code made up."""
    organisations = get_organisations(request)
    if station not in organisations or organisations.get(station).kind is not OrgKind.station:
        raise HTTPException(
            422, f"no station {station!r} in the registry of organisations (服务站不存在)"
        )


def _may_send_away(request: Request, staff: SignedInStaff, station: str) -> None:
    """A subscription sends a station's case events to an address of the subscriber's
    choosing: only for a station of the subscriber's own organisation (the station itself,
    or one under the town). The ``operate`` permission manages every station's
    subscriptions and dead letters, but is no way to read another organisation's cases."""
    if station == staff.org or get_organisations(request).get(station).parent == staff.org:
        return
    raise HTTPException(
        403,
        f"{staff.org} can't subscribe to {station}'s events: a subscription sends that "
        f"station's cases away; ask {station}'s head (只能订阅本单位所属服务站的事件)",
    )


def _check_owner(staff: SignedInStaff, station: str | None) -> None:
    if _operator(staff):
        return
    _station_for(staff, station)


async def _subscription(
    event_log: EventLogDep, staff: SignedInStaff, subscription_id: uuid.UUID
) -> subscriptions.Subscription:
    sub = await subscriptions.get(event_log, subscription_id)
    if sub is None or not (_operator(staff) or sub.station == staff.org):
        raise HTTPException(404, "no such webhook subscription")
    _check_owner(staff, sub.station)
    return sub


@router.post(
    "/webhooks",
    status_code=201,
    summary="Subscribe a web address to a station's events",
    responses={
        **_REFUSED,
        200: {"description": "Your same request again: the subscription, without the secret"},
        409: {"description": "Your Idempotency-Key was used for a different request"},
        422: {
            "description": "Invalid; a URL whose host is or resolves to an internal address "
            "(loopback, private, link-local, …) or does not resolve; or an operator named "
            "no station"
        },
    },
)
async def create_webhook(
    body: SubscriptionIn,
    staff: StaffDep,
    event_log: EventLogDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> dict[str, Any]:
    """Every matching event of the station's cases is POSTed to ``url``, signed as
    Standard Webhooks do (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``:
    HMAC-SHA256 over ``id.timestamp.body`` with the secret answered here, once).

    The URL must lead to the public internet (or a network the operator allows with
    ``CASEFLOW_NOTIFY_WEBHOOK_ALLOW_NETWORKS``); it is checked again at every delivery,
    redirects are not followed, and a 410 Gone answer pauses the subscription.

    Your retry (same Idempotency-Key and body) answers 200 with the subscription as it is
    now, without the secret: it is shown once, when the subscription is made."""
    station = _station_for(staff, body.station)
    _known_station(request, station)
    _may_send_away(request, staff, station)
    await _check_webhook_url(request, body.url)
    keyed = KeyedRequest.of(
        organisation=staff.org,
        user=staff.user,
        key=idempotency_key,
        operation="POST /webhooks",
        body=body,
    )
    try:
        sub, created = await subscriptions.create(
            event_log,
            station=station,
            event_types=body.event_types,
            url=body.url,
            secret=generate_secret(),
            created_by=staff.user,
            description=body.description,
            request=keyed,
        )
    except KeyReused as err:
        raise HTTPException(409, str(err)) from None
    if sub is None or not (_operator(staff) or sub.station == staff.org):
        raise HTTPException(404, "no such webhook subscription (deleted since)")
    response.headers["Location"] = f"/webhooks/{sub.subscription_id}"
    if not created:
        response.status_code = 200
        return sub.public()
    return {**sub.public(), "secret": sub.secret}


@router.get("/webhooks", summary="Webhook subscriptions", responses=_REFUSED)
async def list_webhooks(
    staff: StaffDep,
    event_log: EventLogDep,
    station: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Your station's subscriptions (an operator: every station's, or one's)."""
    if _operator(staff):
        found = await subscriptions.listed(event_log, station)
    else:
        found = await subscriptions.listed(event_log, _station_for(staff, station))
    return {"subscriptions": [s.public() for s in found]}


@router.get("/webhooks/{subscription_id}", summary="One webhook subscription", responses=_UNKNOWN)
async def get_webhook(
    subscription_id: SubscriptionId, staff: StaffDep, event_log: EventLogDep
) -> dict[str, Any]:
    """The subscription (without its secret)."""
    return (await _subscription(event_log, staff, subscription_id)).public()


@router.patch(
    "/webhooks/{subscription_id}", summary="Pause or resume a subscription", responses=_UNKNOWN
)
async def patch_webhook(
    subscription_id: SubscriptionId,
    body: StatusIn,
    staff: StaffDep,
    event_log: EventLogDep,
    request: Request,
) -> dict[str, Any]:
    """While paused, no new deliveries are planned and those waiting are held. Resuming
    clears ``status_reason`` (why notify paused it, e.g. the receiver answered 410)."""
    await _subscription(event_log, staff, subscription_id)
    sub = await subscriptions.set_status(event_log, subscription_id, body.status)
    if sub is None:
        raise HTTPException(404, "no such webhook subscription")
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if body.status == subscriptions.ACTIVE and dispatcher is not None:
        dispatcher.wake()  # its held deliveries are due now
    return sub.public()


@router.delete("/webhooks/{subscription_id}", summary="Delete a subscription", responses=_UNKNOWN)
async def delete_webhook(
    subscription_id: SubscriptionId, staff: StaffDep, event_log: EventLogDep
) -> dict[str, Any]:
    """Deletes it and cancels its deliveries still waiting."""
    await _subscription(event_log, staff, subscription_id)
    cancelled = await subscriptions.delete(event_log, subscription_id)
    if cancelled is None:
        raise HTTPException(404, "no such webhook subscription")
    return {"deleted": str(subscription_id), "cancelled_deliveries": cancelled}


@router.get("/dead-letters", summary="Notices given up on", responses=_REFUSED)
async def list_dead_letters(
    staff: StaffDep,
    event_log: EventLogDep,
    station: Annotated[str | None, Query(max_length=64)] = None,
    channel: Annotated[Literal["email", "sms", "webhook"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Deliveries that failed after every retry, newest first, with the reason."""
    scope = station if _operator(staff) else _station_for(staff, station)
    found = await outbox.find(
        event_log, status=outbox.FAILED, station=scope, channel=channel, limit=limit
    )
    return {"dead_letters": [d.public() for d in found]}


@router.post("/dead-letters/redrive", summary="Send dead letters again", responses=_REFUSED)
async def redrive_dead_letters(
    body: RedriveIn, staff: StaffDep, event_log: EventLogDep
) -> dict[str, Any]:
    """Each named dead letter is sent again with a fresh set of attempts, under the same
    idempotency key; ids that are not (or no longer) dead letters are listed apart."""
    scope = None if _operator(staff) else _station_for(staff, None)
    taken = await outbox.redrive(event_log, body.delivery_ids, station=scope)
    skipped = [str(i) for i in body.delivery_ids if i not in set(taken)]
    return {"redriven": [str(i) for i in taken], "not_dead_letters": skipped}


@router.get("/cases/{case_id}/deliveries", summary="Who was told what about a case")
async def case_deliveries(
    case_id: Annotated[uuid.UUID, Path()], staff: StaffDep, event_log: EventLogDep
) -> dict[str, Any]:
    """Every planned notice of the case, its status and attempts (recipients masked)."""
    found = await outbox.find(event_log, case_id=case_id, limit=1000)
    if not _operator(staff) and staff.role is not Role.auditor:
        found = [d for d in found if d.station == staff.org]
    return {"deliveries": [d.public() for d in found]}
