"""Processing's composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.processing.delegations_api import router as delegations_router
from services.processing.handlers import CONSUMERS
from services.processing.settings import ProcessingSettings
from shared.runtime import Runtime, create_service_app
from shared.settings import load_settings


def create_app(settings: ProcessingSettings | None = None) -> FastAPI:
    """The processing service: runs each case's workflow."""
    settings = settings or load_settings(ProcessingSettings)
    runtime = Runtime("processing", settings, CONSUMERS)
    return create_service_app(
        runtime,
        title="caseflow processing",
        description="Checks received applications and runs each case's workflow (受理、审查).",
        routers=[delegations_router],
    )
