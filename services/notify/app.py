"""Notify's composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.notify.handlers import CONSUMERS
from services.notify.settings import NotifySettings
from shared.runtime import Runtime, create_service_app
from shared.settings import load_settings


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    """The notify service: tells applicants what happened to their case."""
    settings = settings or load_settings(NotifySettings)
    runtime = Runtime("notify", settings, CONSUMERS)
    return create_service_app(
        runtime,
        title="caseflow notify",
        description="Tells applicants about their case and records what was sent (送达).",
    )
