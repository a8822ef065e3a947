"""Notify's composition root: the planning consumer, the dispatcher and its channels."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI

from services.notify import api
from services.notify.backlog import sample_deliveries
from services.notify.channels import Channel
from services.notify.channels.email import EmailChannel
from services.notify.channels.sms import SmsChannel
from services.notify.channels.webhook import WebhookChannel
from services.notify.dispatcher import Dispatcher
from services.notify.planning import planning_consumer
from services.notify.rules import Planner
from services.notify.settings import NotifySettings
from shared.settings import load_settings
from shared.web.runtime import Runtime, create_service_app


def channels(settings: NotifySettings) -> dict[str, Channel]:
    """The configured channels (webhooks always are: subscriptions name their URL)."""
    found: dict[str, Channel] = {
        "webhook": WebhookChannel(
            timeout=settings.webhook_timeout_seconds, policy=settings.egress_policy()
        )
    }
    if settings.smtp is not None:
        # a connection kept for each email that may be in flight at once
        found["email"] = EmailChannel(
            settings.smtp, pool_size=settings.dispatch.limits("email").concurrency
        )
    if settings.sms is not None:
        found["sms"] = SmsChannel(settings.sms)
    return found


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    """The notify service: tells applicants and staff, and integrators' webhooks."""
    settings = settings or load_settings(NotifySettings)
    runtime = Runtime("notify", settings)
    configured = channels(settings)
    dispatcher = Dispatcher(runtime.log, configured, settings.dispatch)
    runtime.specs = (
        planning_consumer(
            Planner.load(settings.data_dir),
            wake=dispatcher.wake,
            max_age=timedelta(hours=settings.notice_max_age_hours),
        ),
    )

    async def dispatch(stop: asyncio.Event) -> None:
        await dispatcher.run(stop)

    async def close_channels() -> None:
        for channel in configured.values():
            await channel.aclose()

    runtime.background.append(dispatch)

    async def count_deliveries(stop: asyncio.Event) -> None:
        await sample_deliveries(runtime.engine, stop, settings.backlog_sample_seconds)

    runtime.background.append(count_deliveries)
    runtime.on_shutdown.append(close_channels)
    app = create_service_app(
        runtime,
        title="caseflow notify",
        description="Tells applicants, staff and integrators what happened to a case, over "
        "email, SMS and signed webhooks, and records each notice in the case (送达).",
        routers=[api.router],
    )
    app.state.dispatcher = dispatcher
    app.state.egress_policy = settings.egress_policy()
    return app
