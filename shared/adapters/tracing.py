"""One trace per case's request across the bus (issue 16), with OpenTelemetry's API.

A request's correlation id *is* its trace id when tracing is on (32 hex digits; see
``shared.web.tracing``), and it already travels everywhere the case's work goes: in every
event it causes, the ``Caseflow-Correlation-Id`` NATS header and notify's deliveries. So
the relay, the consumers and the dispatcher continue the request's trace from it, with no
new column and no change to the hashed events. Their spans hang under a remote parent
made from the event or delivery id (the request's own span ids are not kept), so a trace
viewer shows them in the trace, beside the request's spans.

Without the SDK configured (``OTLP_ENDPOINT`` unset) the tracer is OpenTelemetry's no-op:
these calls cost next to nothing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanContext, SpanKind, TraceFlags

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

tracer = trace.get_tracer("caseflow")


def _parent(correlation_id: str | None, seed: str) -> context.Context | None:
    """A context whose remote parent is in the trace ``correlation_id`` names, if it is
    one (32 hex digits, not all zero)."""
    if not correlation_id or not _TRACE_ID.match(correlation_id) or not int(correlation_id, 16):
        return None
    span_id = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") or 1
    parent = SpanContext(
        trace_id=int(correlation_id, 16),
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


@contextmanager
def continued(
    name: str,
    correlation_id: str | None,
    seed: str,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span]:
    """A span in the trace of ``correlation_id`` (else a trace of its own)."""
    with tracer.start_as_current_span(
        name, context=_parent(correlation_id, seed), kind=kind, attributes=attributes
    ) as span:
        yield span
