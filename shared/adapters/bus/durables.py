"""Every durable consumer caseflow's services run, as data.

The AsyncAPI document describes them (``x-caseflow-consumers``) and the NATS permissions of
each service are derived from them (``shared.adapters.bus.access``): a service may create, pull
from and ack only its own consumers. A test compares this list with the consumers the
services really run.
"""

from __future__ import annotations

import dataclasses

from shared.adapters.bus.streams import DEPT_STREAM, EVENTS_STREAM, dlq_subject


@dataclasses.dataclass(frozen=True)
class ConsumerDoc:
    """A durable consumer of caseflow's: what it reads, and where its dead letters go."""

    name: str
    service: str
    stream: str
    subjects: tuple[str, ...]
    summary: str
    redrive: bool = True
    """Whether its dead letters can be handled again (``caseflow bus redrive``)."""

    @property
    def dead_letters(self) -> str:
        """``caseflow.dlq.<name>``."""
        return dlq_subject(self.name)


_MATTER_KINDS = ("mediation", "legal_publicity", "assistance", "police_assistance")

CONSUMERS: tuple[ConsumerDoc, ...] = (
    ConsumerDoc(
        "processing-projection",
        "processing",
        EVENTS_STREAM,
        tuple(f"caseflow.events.{kind}.>" for kind in ("application", *_MATTER_KINDS, "reception")),
        "Schedules the timers each application needs (notice window, clock warnings, "
        "forwarding deadline); the case lists are a projection with its own checkpoint",
    ),
    ConsumerDoc(
        "processing-dept",
        "processing",
        EVENTS_STREAM,
        ("caseflow.events.application.CaseForwarded",),
        "Publishes each forwarded case to its department (caseflow.dept.<authority>.requests)",
    ),
    ConsumerDoc(
        "processing-dept-answers",
        "processing",
        DEPT_STREAM,
        ("caseflow.dept.*.answers.*",),
        "Records each department's answer as that authority's decision, checked against "
        "the credential that delivered it",
        # Its dead letters are answers refused for what they say (or who sent them): the
        # department answers again; outages are waited out, never dead-lettered.
        redrive=False,
    ),
    ConsumerDoc(
        "notify",
        "notify",
        EVENTS_STREAM,
        ("caseflow.events.>",),
        "Plans the notices an event calls for (applicant, staff, webhooks) into notify's outbox",
    ),
)
"""Every durable consumer caseflow's services run (tests compare them with the code)."""
