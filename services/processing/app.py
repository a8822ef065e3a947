"""Processing's composition root."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI
from nats.aio.client import Client as NATS

from services.processing import api, live, verification
from services.processing.audit_api import router as audit_router
from services.processing.deadlines import Deadlines
from services.processing.delegations_api import router as delegations_router
from services.processing.dept import (
    AnswerListener,
    keep_department_consumers,
    request_publisher,
)
from services.processing.live import WorklistChanges
from services.processing.scheduling import TimerScheduler
from services.processing.settings import ProcessingSettings
from services.processing.statistics_api import router as statistics_router
from services.processing.verification import LogVerification
from shared.adapters.bus.consumer import ConsumerSpec
from shared.adapters.timers import TimerWheel
from shared.application.audit.writer import Checkpointer
from shared.application.projections.cases import CASE_KINDS
from shared.application.projections.registry import projections
from shared.application.projections.runner import ProjectionRunner
from shared.application.workflow.wiring import case_service
from shared.domain.workflow.reference import load_reference
from shared.domain.workflow.state import NOT_WORK
from shared.settings import load_settings
from shared.web.runtime import Runtime, create_service_app
from shared.web.workflow import http as workflow_http
from shared.web.workflow.routes import reads


def create_app(settings: ProcessingSettings | None = None) -> FastAPI:
    """The processing service: runs each case's workflow, tasks, clocks and forwarding."""
    settings = settings or load_settings(ProcessingSettings)
    reference = load_reference(settings.data_dir)
    runtime = Runtime("processing", settings)
    service = case_service(runtime.log, reference)
    scheduler = TimerScheduler(
        reference, paper_file_grace=timedelta(seconds=settings.paper_file_grace_seconds)
    )
    runtime.specs = (
        ConsumerSpec(
            name="processing-projection",
            subjects=tuple(f"caseflow.events.{kind}.>" for kind in (*CASE_KINDS, "reception")),
            handler=scheduler.handle,
            # a notice, a reading or a refused attempt moves no clock: no timer to see to
            ignores=NOT_WORK,
        ),
        ConsumerSpec(
            name="processing-dept",
            subjects=("caseflow.events.application.CaseForwarded",),
            handler=request_publisher(service, lambda: runtime.nc),
        ),
    )
    runtime.timers = TimerWheel(runtime.log, Deadlines(service).specs())
    # the read models, each from its checkpoint, all in one round per batch
    runner = ProjectionRunner(runtime.log, projections(reference))
    runtime.background.append(runner.run)
    runtime.on_wake.append(runner.wake)
    changes = WorklistChanges()  # open worklists read again after each batch
    runner.on_applied.append(changes.mark)
    runtime.workers.append(changes.share)

    authorities = [org.code for org in reference.organisations if org.is_authority]

    async def answers(nc: NATS, stop: asyncio.Event) -> None:
        await asyncio.gather(
            keep_department_consumers(nc.jetstream(), authorities, stop),
            AnswerListener(service, nc).run(stop),
        )

    runtime.workers.append(answers)
    checker: LogVerification | None = None
    if settings.audit_checkpoints:
        checkpointer = Checkpointer(
            runtime.engine, settings.audit_key_file, settings.audit_checkpoint_interval_seconds
        )
        runtime.background.append(checkpointer.run)
        checker = LogVerification(
            settings.database_url,
            settings.audit_key_file,
            settings.audit_verify_interval_seconds,
        )
        runtime.background.append(checker.run)
    app = create_service_app(
        runtime,
        title="caseflow processing",
        description="Runs each case's workflow: worklists, reviews, decisions, delegation "
        "checks, working-day clocks, timers and forwarding (受理、审查、决定、送达).",
        routers=[
            reads,
            api.router,
            live.router,
            delegations_router,
            statistics_router,
            audit_router,
            verification.router,
        ],
        organisations=reference.organisations,
    )
    workflow_http.install(app, service)
    app.state.reference = reference  # the audit API reads the log against it
    app.state.worklist_changes = changes
    app.state.log_verification = checker
    return app
