"""Who may do what on the bus: NATS users and their permissions, as data (no I/O).

Every client of caseflow's NATS authenticates with an NKEY (an Ed25519 key pair; the
server stores the public key, the client signs the server's nonce with its seed). Each
credential has a kind, and its permissions follow from the kind alone:

- a **service** (intake, processing, notify) declares the streams, pulls from and acks its
  own durable consumers (``shared.adapters.bus.durables``), sends and hears the relays' wake-up,
  dead-letters on ``caseflow.dlq.<its consumer>``; processing also publishes department requests and
  keeps one pull consumer per authority for the departments (``dept_<authority>``). Each
  service takes the redrive requests of its own consumers (``<consumer>-redrive``), reads
  the dead letter named and deletes it once handled; it writes dead letters of its own
  consumers only. No
  service may publish on ``caseflow.events.>``;
- the **relay** publishes ``caseflow.events.>`` and nothing else: it is the only writer of
  the event stream, and it runs on a connection of its own in each service process;
- the **operator** inspects streams and consumers, reads events and dead letters (for
  tools such as the ``nats`` CLI) and asks for dead letters to be handled again
  (``caseflow bus redrive``: a request naming a dead letter by its sequence on
  ``caseflow.redrive.<consumer>``); it can create, change or delete nothing;
- a **department** system pulls from its authority's consumer only (no consumer of its
  own: a consumer's request body could name any filter or a push subject), acks there,
  and answers on ``caseflow.dept.<authority>.answers.<its name>``, so the server
  vouches for which credential delivered an answer.

Everyone receives on its own inbox prefix only (``_INBOX.<name>``, nats-py's
``inbox_prefix``), so nobody reads another client's replies or pulled messages.
:func:`render_authorization` turns the credentials into nats-server's ``authorization``
block; revoked credentials are left out, and nats-server without a user for a key
refuses the connection.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.adapters.bus.durables import CONSUMERS
from shared.adapters.bus.streams import (
    DEPT_STREAM,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    REDRIVE_STREAM,
    WAKE_SUBJECT,
    WORKLISTS_CHANGED,
    answer_subject,
    dept_durable,
    dept_subject,
    dlq_subject,
    redrive_durable,
    redrive_subject,
)

SERVICES = ("intake", "processing", "notify")
RELAY = "relay"
OPERATOR = "operator"
RESERVED_NAMES = frozenset({*SERVICES, RELAY, OPERATOR, "caseflow", "system"})
"""Names a department credential can't take (they name caseflow's own users)."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A credential's name: one NATS subject token (it ends the answer subject and names the
inbox prefix), lower case."""
_NAME = re.compile(NAME_PATTERN)
PUBLIC_KEY_PATTERN = r"^U[A-Z2-7]{55}$"
"""An NKEY user's public key."""

STREAMS = (EVENTS_STREAM, DEPT_STREAM, DLQ_STREAM, REDRIVE_STREAM)
JS_ACK = "$JS.ACK"
JS_API = "$JS.API"


class Kind(StrEnum):
    """What a credential is for."""

    service = "service"
    relay = "relay"
    operator = "operator"
    department = "department"


class Credential(BaseModel):
    """One NATS user: its name, kind, public key and, for a department, its authority.

    The seed (the private half) is not part of it: caseflow keeps its own users' seeds in
    files of their own, and hands a department's to its integrator once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    kind: Kind
    public_key: str = Field(pattern=PUBLIC_KEY_PATTERN)
    authority: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    issued_at: datetime | None = None
    revoked_at: datetime | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> Credential:
        if self.kind is Kind.department:
            if self.authority is None:
                raise ValueError("a department credential needs its authority")
            if self.name in RESERVED_NAMES:
                raise ValueError(f"{self.name!r} is reserved for caseflow's own users")
            return self
        if self.authority is not None:
            raise ValueError(f"only department credentials have an authority, not {self.kind}")
        expected = {Kind.relay: (RELAY,), Kind.operator: (OPERATOR,), Kind.service: SERVICES}
        if self.name not in expected[self.kind]:
            names = " or ".join(expected[self.kind])
            raise ValueError(f"a {self.kind} credential is named {names}")
        return self

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


@dataclasses.dataclass(frozen=True)
class Permissions:
    """nats-server's publish and subscribe permissions of one user (deny wins)."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    def as_config(self) -> dict[str, dict[str, list[str]]]:
        """The ``permissions`` map of nats-server's configuration."""
        publish = {"allow": list(self.publish_allow)}
        subscribe = {"allow": list(self.subscribe_allow)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        if self.subscribe_deny:
            subscribe["deny"] = list(self.subscribe_deny)
        return {"publish": publish, "subscribe": subscribe}


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a credential."""
    return bool(_NAME.match(name))


def inbox_prefix(name: str) -> str:
    """``_INBOX.<name>``: the credential's replies and pulled messages arrive below it
    (pass it to nats-py as ``inbox_prefix``)."""
    if not valid_name(name):
        raise ValueError(f"{name!r} can't name a credential")
    return f"_INBOX.{name}"


def _consumer_api(stream: str, consumer: str) -> list[str]:
    """Create (or update), pull from and ack one durable pull consumer."""
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}.{consumer}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{consumer}.>",  # the form with the filter
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"{JS_ACK}.{stream}.{consumer}.>",
    ]


def _department_consumer(authority: str) -> list[str]:
    """Processing's consumer of one authority's requests: created with exactly that filter."""
    durable, requests = dept_durable(authority), dept_subject(authority, "requests")
    return [f"{JS_API}.CONSUMER.CREATE.{DEPT_STREAM}.{durable}.{requests}"]


def _service(name: str, authorities: Sequence[str]) -> Permissions:
    publish = [
        *(f"{JS_API}.STREAM.{verb}.{s}" for s in STREAMS for verb in ("CREATE", "UPDATE")),
        *(
            subject
            for consumer in CONSUMERS
            if consumer.service == name
            for subject in _consumer_api(consumer.stream, consumer.name)
        ),
        *(
            subject
            for consumer in CONSUMERS
            if consumer.service == name and consumer.redrive
            for subject in _consumer_api(REDRIVE_STREAM, redrive_durable(consumer.name))
        ),
        WAKE_SUBJECT,
        *(dlq_subject(c.name) for c in CONSUMERS if c.service == name),
        # The backlog gauges on /metrics: every consumer's pending messages (a stopped
        # service's too) and the dead letters per consumer — reading only.
        *(f"{JS_API}.CONSUMER.INFO.{c.stream}.{c.name}" for c in CONSUMERS),
        f"{JS_API}.STREAM.INFO.{DLQ_STREAM}",
        # A re-driven dead letter is read from the dead letters by its sequence, and
        # deleted there once handled.
        f"{JS_API}.STREAM.MSG.GET.{DLQ_STREAM}",
        f"{JS_API}.STREAM.MSG.DELETE.{DLQ_STREAM}",
    ]
    subscribe = [f"{inbox_prefix(name)}.>", WAKE_SUBJECT]
    if name == "processing":
        publish.append("caseflow.dept.*.requests")
        publish.append(WORKLISTS_CHANGED)
        subscribe.append(WORKLISTS_CHANGED)
        for authority in authorities:
            publish += _department_consumer(authority)
    return Permissions(
        publish_allow=tuple(publish),
        publish_deny=(EVENTS_SUBJECTS, "caseflow.dept.*.answers.>"),
        subscribe_allow=tuple(subscribe),
    )


def _relay() -> Permissions:
    return Permissions(
        publish_allow=(EVENTS_SUBJECTS,),
        subscribe_allow=(f"{inbox_prefix(RELAY)}.>",),
    )


def _operator() -> Permissions:
    reads = (
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.NAMES",
        f"{JS_API}.STREAM.LIST",
        f"{JS_API}.STREAM.INFO.*",
        f"{JS_API}.CONSUMER.NAMES.*",
        f"{JS_API}.CONSUMER.LIST.*",
        f"{JS_API}.CONSUMER.INFO.*.*",
        # Stored events and dead letters by sequence; not the department requests, which
        # carry the applicant's personal data.
        f"{JS_API}.STREAM.MSG.GET.{EVENTS_STREAM}",
        f"{JS_API}.STREAM.MSG.GET.{DLQ_STREAM}",
    )
    return Permissions(
        # Asking for dead letters to be handled again: a request names a dead letter by
        # its sequence; the consumer reads the letter itself, which only services write.
        publish_allow=(*reads, *(redrive_subject(c.name) for c in CONSUMERS if c.redrive)),
        publish_deny=(EVENTS_SUBJECTS,),
        subscribe_allow=(f"{inbox_prefix(OPERATOR)}.>", EVENTS_SUBJECTS, DLQ_SUBJECTS),
    )


def _department(name: str, authority: str) -> Permissions:
    durable = dept_durable(authority)
    return Permissions(
        publish_allow=(
            f"{JS_API}.CONSUMER.INFO.{DEPT_STREAM}.{durable}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{DEPT_STREAM}.{durable}",
            f"{JS_ACK}.{DEPT_STREAM}.{durable}.>",
            answer_subject(authority, name),
        ),
        publish_deny=(EVENTS_SUBJECTS,),
        subscribe_allow=(f"{inbox_prefix(name)}.>",),
    )


def permissions(credential: Credential, authorities: Sequence[str] = ()) -> Permissions:
    """What ``credential`` may publish and subscribe to. ``authorities``: every authority
    of the organisations registry (processing keeps a consumer for each)."""
    match credential.kind:
        case Kind.service:
            return _service(credential.name, authorities)
        case Kind.relay:
            return _relay()
        case Kind.operator:
            return _operator()
        case Kind.department:
            assert credential.authority is not None
            return _department(credential.name, credential.authority)


def _describe(credential: Credential) -> str:
    if credential.kind is Kind.department:
        return f"{credential.name}: department system of {credential.authority}"
    return f"{credential.name}: {credential.kind}"


def render_authorization(credentials: Iterable[Credential], authorities: Sequence[str]) -> str:
    """nats-server's ``authorization`` block for the active ``credentials`` (a config file
    of its own, or to include in one). Without a user for its key, a client is refused."""
    users = []
    for credential in sorted(
        (c for c in credentials if c.active), key=lambda c: (c.kind != Kind.service, c.name)
    ):
        allowed = json.dumps(permissions(credential, authorities).as_config())
        users.append(
            f"    # {_describe(credential)}\n"
            f'    {{nkey: "{credential.public_key}", permissions: {allowed}}}'
        )
    if not users:
        raise ValueError("no active credential: nats-server would accept nobody")
    return (
        "# caseflow's NATS users, written by `caseflow nats`: change them with that command\n"
        "# (`caseflow nats --help`), not here. Every client authenticates with an NKEY and\n"
        "# gets only the subjects it needs; there is no anonymous access.\n"
        "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )
