"""Intake's composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.api import router
from services.intake.settings import IntakeSettings
from shared.application.workflow.wiring import case_service
from shared.domain.workflow.reference import load_reference
from shared.settings import load_settings
from shared.web.runtime import Runtime, create_service_app
from shared.web.workflow import http as workflow_http
from shared.web.workflow.routes import reads


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    """The intake service: the station's window."""
    settings = settings or load_settings(IntakeSettings)
    reference = load_reference(settings.data_dir)
    runtime = Runtime("intake", settings)
    app = create_service_app(
        runtime,
        title="caseflow intake",
        description="The station's window: visitors, applications (收件、受理、一次性告知) "
        "and the station's other matters (mediation, legal publicity, assistance).",
        routers=[router, reads],
        organisations=reference.organisations,
    )
    workflow_http.install(app, case_service(runtime.log, reference))
    return app
