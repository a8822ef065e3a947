"""JetStream streams and subjects, declared idempotently at start-up."""

from __future__ import annotations

import dataclasses
import re

import structlog
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

log = structlog.get_logger("caseflow.bus")

EVENTS_STREAM = "CASEFLOW_EVENTS"
EVENTS_SUBJECTS = "caseflow.events.>"
DLQ_STREAM = "CASEFLOW_DLQ"
DLQ_SUBJECTS = "caseflow.dlq.>"
REDRIVE_STREAM = "CASEFLOW_REDRIVE"
REDRIVE_SUBJECTS = "caseflow.redrive.>"
"""Requests to handle a dead letter again (``caseflow bus redrive``): each names a dead
letter by its sequence in ``CASEFLOW_DLQ``, on ``caseflow.redrive.<consumer>``; the
consumer reads the dead letter itself from there (a work queue: a request handled is gone)."""
DEPT_STREAM = "CASEFLOW_DEPT"
DEPT_SUBJECTS = "caseflow.dept.>"
"""Forwarded cases to departments (``caseflow.dept.<authority>.requests``) and their
answers (``caseflow.dept.<authority>.answers.<credential>``), for integrators on the bus."""
REDRIVE_MAX_AGE_SECONDS = 7 * 24 * 3600.0
"""A redrive request not taken within a week is dropped (its dead letter stays)."""
WAKE_SUBJECT = "caseflow.internal.relay.wake"
"""Core NATS (no stream): a process that committed events wakes the leading relay."""
WORKLISTS_CHANGED = "caseflow.internal.worklists.changed"
"""Core NATS (no stream, no content): the read models behind the worklists moved on; each
processing replica tells the pages it streams to (``GET /worklist/changes``)."""
LEASE_RELEASED = b"lease-released"
"""The body of a wake-up sent by a relay that stopped cleanly and gave its lease back: the
stand-bys take it over at once."""
DUPLICATE_WINDOW_SECONDS = 600.0
"""How long JetStream remembers a Nats-Msg-Id. A relay re-publishes at most the batch it
had in flight when it stopped, seconds old, so ten minutes leaves a wide margin."""

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def event_subject(case_kind: str, event_type: str) -> str:
    """``caseflow.events.<case_kind>.<event_type>``."""
    for token in (case_kind, event_type):
        if not _TOKEN.match(token):
            raise ValueError(f"{token!r} can't be a NATS subject token")
    return f"caseflow.events.{case_kind}.{event_type}"


def dept_subject(authority: str, kind: str) -> str:
    """``caseflow.dept.<authority>.requests``, or ``.answers``: the prefix of the
    authority's answer subjects (see :func:`answer_subject`)."""
    if not _TOKEN.match(authority) or kind not in ("requests", "answers"):
        raise ValueError(f"no department subject for {authority!r} {kind!r}")
    return f"caseflow.dept.{authority}.{kind}"


def answer_subject(authority: str, credential: str) -> str:
    """``caseflow.dept.<authority>.answers.<credential>``: where the department system
    holding ``credential`` answers; only that credential may publish on it, so the
    subject names who delivered an answer."""
    if not _TOKEN.match(credential):
        raise ValueError(f"{credential!r} can't be a NATS subject token")
    return f"{dept_subject(authority, 'answers')}.{credential}"


def dept_durable(authority: str) -> str:
    """``dept_<authority>``: the pull consumer processing keeps on the department stream
    for each authority, filtered on its requests; the only one its systems may read."""
    if not _TOKEN.match(authority):
        raise ValueError(f"{authority!r} can't be a NATS subject token")
    return f"dept_{authority}"


def dlq_subject(consumer: str) -> str:
    """``caseflow.dlq.<consumer>``."""
    return f"caseflow.dlq.{consumer}"


def redrive_subject(consumer: str) -> str:
    """``caseflow.redrive.<consumer>``: where requests to handle its dead letters again go."""
    if not _TOKEN.match(consumer):
        raise ValueError(f"{consumer!r} can't be a NATS subject token")
    return f"caseflow.redrive.{consumer}"


def redrive_durable(consumer: str) -> str:
    """``<consumer>-redrive``: the durable that takes the consumer's redrive requests."""
    return f"{consumer}-redrive"


async def _ensure(js: JetStreamContext, config: api.StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as err:
        # 10058: a stream of that name exists with another configuration: bring it up to date.
        if err.err_code != 10058:
            raise
        assert config.name is not None
        kept = (await js.stream_info(config.name)).config.num_replicas or 1
        wanted = config.num_replicas or 1
        if kept > wanted:
            # One replica started with the default (1) must not strip a cluster's streams
            # of their copies: scaling down is the operator's act (`nats stream edit`).
            log.warning(
                "stream keeps more replicas than this service asks for",
                stream=config.name,
                replicas=kept,
                asked=wanted,
            )
            config = dataclasses.replace(config, num_replicas=kept)
        await js.update_stream(config)


async def declare_streams(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create or update the event, department, dead-letter and redrive streams (file
    storage), each kept in ``replicas`` copies on a NATS cluster (JetStream's
    ``num_replicas``: 3 on a three-node cluster survives the loss of any one node; 1 on a
    single server). The durable consumers on them take the stream's replicas."""
    limits, work_queue = api.RetentionPolicy.LIMITS, api.RetentionPolicy.WORK_QUEUE
    for name, subjects, window, retention in (
        (EVENTS_STREAM, EVENTS_SUBJECTS, DUPLICATE_WINDOW_SECONDS, limits),
        (DEPT_STREAM, DEPT_SUBJECTS, DUPLICATE_WINDOW_SECONDS, limits),
        (DLQ_STREAM, DLQ_SUBJECTS, 0.0, limits),  # 0: the server's default window
        (REDRIVE_STREAM, REDRIVE_SUBJECTS, DUPLICATE_WINDOW_SECONDS, work_queue),
    ):
        await _ensure(
            js,
            api.StreamConfig(
                name=name,
                subjects=[subjects],
                storage=api.StorageType.FILE,
                retention=retention,
                duplicate_window=window,
                num_replicas=replicas,
                # A redrive request nobody takes (its consumer gone) does not stay forever.
                max_age=REDRIVE_MAX_AGE_SECONDS if name == REDRIVE_STREAM else None,
            ),
        )
