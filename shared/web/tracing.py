"""OpenTelemetry tracing of a service (issue 16), off unless ``OTLP_ENDPOINT`` is set.

On: spans go in batches to the OTLP/HTTP endpoint (an OpenTelemetry Collector, Jaeger,
Tempo…); FastAPI (incoming requests, W3C ``traceparent`` honoured), SQLAlchemy (every
statement) and httpx (webhooks, the SMS gateway) are instrumented, and the relay, the
consumers and notify's dispatcher continue each request's trace across the bus
(``shared.adapters.tracing``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

_configured: dict[str, TracerProvider] = {}


def configure_tracing(
    service: str, endpoint: str | None, app: FastAPI, engine: AsyncEngine
) -> bool:
    """Trace ``app`` and ``engine`` to ``endpoint`` (``http://collector:4318``); False
    (and nothing done) without one."""
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    provider = _configured.get(endpoint)
    if provider is None:  # one provider per process (tests build several apps)
        provider = TracerProvider(resource=Resource.create({"service.name": f"caseflow-{service}"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
        )
        trace.set_tracer_provider(provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        _configured[endpoint] = provider
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="livez,readyz,metrics"
    )
    # Its declared range stops below SQLAlchemy 2.1, which it traces all the same
    # (checked: tests/e2e/test_tracing.py wants the statements' spans in the trace).
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
    return True


def flush_tracing(timeout_millis: int = 5000) -> None:
    """Send what is buffered (at shutdown)."""
    for provider in _configured.values():
        provider.force_flush(timeout_millis)


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), if a span is being recorded."""
    span: Any = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid or not span.is_recording():
        return None
    return f"{context.trace_id:032x}"
