"""The backlog an operator watches, on ``/metrics`` (issue 16): with processing stopped,
the cases intake takes in wait on processing's durable consumer and ahead of the
projections, and intake's /metrics says how many; once processing is back they drain to
zero."""

from __future__ import annotations

import re
import signal
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.devtools import httpcalls, waiting
from shared.devtools import servers as devservers
from tests.services import (
    CLERK,
    VALID_APPLICATION,
    metrics_headers,
    running_stack,
    service_env,
    start_process,
    wait_ready,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


Gauges = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def gauges(base_url: str) -> Gauges:
    text = httpcalls.get(f"{base_url}/metrics", headers=metrics_headers(), timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("caseflow_")
        and re.search(r"pending|lag|unpublished|due|dead_letters|sampled", sample.name)
    }


def test_a_stopped_consumers_backlog_shows_and_drains(
    db_url: str, nats_url: str, tmp_path: Path
) -> None:
    fast = {"BACKLOG_SAMPLE_SECONDS": "0.5"}
    with running_stack(db_url, nats_url, tmp_path, **fast) as stack:
        intake = stack["intake"].base_url
        waiting.wait_until(
            lambda: (
                ("caseflow_consumer_pending_messages", (("consumer", "processing-projection"),))
                in gauges(intake)
            ),
            what="the bus's gauges on intake's /metrics",
            timeout=30,
        )
        processing = stack["processing"]
        assert processing.terminate() in (0, -signal.SIGTERM)  # uvicorn re-raises it
        for _ in range(3):
            answer = httpcalls.post(
                f"{intake}/cases",
                json=VALID_APPLICATION,
                headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
            assert answer.status_code == 201, answer.text

        def waiting_on_processing() -> Gauges | None:
            seen = gauges(intake)
            pending = seen[
                ("caseflow_consumer_pending_messages", (("consumer", "processing-projection"),))
            ]
            lag = [
                v for (name, labels), v in seen.items() if name == "caseflow_projection_lag_events"
            ]
            return seen if pending >= 6 and lag and min(lag) >= 6 else None

        seen = waiting.wait_until(waiting_on_processing, what="processing's backlog", timeout=60)
        assert seen[("caseflow_events_unpublished", ())] >= 0
        assert ("caseflow_dead_letters", (("consumer", "notify"),)) in seen
        assert ("caseflow_timers_due", ()) in seen

        # Processing back: everything drains.
        port = devservers.free_port()
        again = start_process(
            "processing-again",
            [sys.executable, "-m", "shared.cli.main", "serve", "processing"],
            service_env("processing", db_url, nats_url, port, **fast),
            port,
            tmp_path,
        )
        try:
            wait_ready(again)

            def drained() -> bool:
                seen = gauges(intake)
                backlog = [
                    v
                    for (name, _), v in seen.items()
                    if name
                    in (
                        "caseflow_consumer_pending_messages",
                        "caseflow_projection_lag_events",
                        "caseflow_events_unpublished",
                    )
                ]
                return bool(backlog) and max(backlog) == 0

            waiting.wait_until(drained, what="the backlog to drain", timeout=90)
        finally:
            again.terminate()
