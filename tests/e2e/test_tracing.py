"""One trace from POST /cases to the sent notice (issue 16): the services export spans over
OTLP/HTTP to a collector (here a real HTTP server of the test's, decoding what the SDK
sends); the request's W3C trace is continued by the relay, the consumers and notify's
dispatcher on the other side of the bus."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared.devtools import httpcalls, waiting
from tests.services import CLERK, VALID_APPLICATION, running_stack

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


@dataclass(frozen=True)
class Seen:
    service: str
    name: str
    trace_id: str
    kind: int


class Collector:
    """An OTLP/HTTP trace receiver: every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Seen] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                found = []
                for resource in request.resource_spans:
                    attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            found.append(
                                Seen(
                                    attributes.get("service.name", ""),
                                    span.name,
                                    span.trace_id.hex(),
                                    span.kind,
                                )
                            )
                with outer.lock:
                    outer.spans.extend(found)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, trace_id: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    yield receiver
    receiver.server.shutdown()


def test_one_trace_follows_a_case_from_the_window_to_the_sent_notice(
    db_url: str, nats_url: str, tmp_path: Path, collector: Collector
) -> None:
    with running_stack(db_url, nats_url, tmp_path, OTLP_ENDPOINT=collector.url) as stack:
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        answer = httpcalls.post(
            f"{stack['intake'].base_url}/cases",
            json=VALID_APPLICATION,
            headers={
                **CLERK,
                "Idempotency-Key": uuid.uuid4().hex,
                "traceparent": f"00-{trace_id}-{parent}-01",
            },
            timeout=10,
        )
        assert answer.status_code == 201, answer.text

        def whole() -> list[Seen] | None:
            spans = collector.of(trace_id)
            services = {s.service for s in spans}
            names = " ".join(s.name for s in spans)
            wanted = {"caseflow-intake", "caseflow-processing", "caseflow-notify"} <= services
            return (
                spans
                if wanted
                and "POST /cases" in names
                and "send " in names
                and "publish CaseAccepted" in names
                else None
            )

        spans = waiting.wait_until(
            whole,
            what="the case's spans at the collector",
            timeout=90,
            detail=lambda: sorted({(s.service, s.name) for s in collector.of(trace_id)}),
        )
    names = {(s.service, s.name) for s in spans}
    shown = sorted(names)
    # intake took the request (with its statements), processing's consumer and notify's
    # planning handled its events, notify's dispatcher sent the notice: one trace.
    assert any(s == "caseflow-intake" and n.startswith("POST /cases") for s, n in names), shown
    assert ("caseflow-processing", "processing-projection CaseAccepted") in names, shown
    assert any(s == "caseflow-notify" and n.startswith("send ") for s, n in names), shown
    statements = [n for _, n in names if n.split(" ")[0] in ("INSERT", "SELECT", "UPDATE")]
    assert statements, shown
