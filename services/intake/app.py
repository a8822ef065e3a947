"""Intake's composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.api import router
from services.intake.settings import IntakeSettings
from shared.runtime import Runtime, create_service_app
from shared.settings import load_settings


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    """The intake service: receives applications at the window."""
    settings = settings or load_settings(IntakeSettings)
    runtime = Runtime("intake", settings)
    return create_service_app(
        runtime,
        title="caseflow intake",
        description="Receives applications at the station's window (收件).",
        routers=[router],
    )
