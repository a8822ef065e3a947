#!/usr/bin/env python3
"""A city department's system that answers the cases caseflow forwards to it, over NATS.

caseflow publishes each forwarded case on ``caseflow.dept.<authority>.requests`` (stream
``CASEFLOW_DEPT``). This program reads them with a durable pull consumer of its own,
decides, and publishes the decision to the request's ``answer_subject``
(``caseflow.dept.<authority>.answers``), which caseflow records as the department's
approval or rejection by the officer the answer names.

The rule here is deliberately simple: approve when every material given with
``--approve-if-materials`` was handed in, otherwise reject, naming what is missing. A
real department would look the case up in its own registers instead.

Delivery is at least once, decisions are recorded once:

- the answer carries a ``Nats-Msg-Id`` derived from the request's own id (the
  ``CaseForwarded`` event id), so answering the same request twice is harmless —
  JetStream drops a repeat within its duplicate window and caseflow records one
  decision per answer id ever after;
- a request is acked only after JetStream acknowledged the answer, so a crash in between
  means the request comes again and the same answer is sent again;
- a request that can't be read is terminated (not redelivered) and logged.

SIGTERM or Ctrl-C: stop fetching, finish the request in hand, drain the connection, exit 0.
The log names cases by id and number only: requests carry the applicant's name, phone
and ID number, which never reach the log.

Needs only Python 3.11 and nats-py (``pip install nats-py``)::

    python department_system.py --nats-url nats://127.0.0.1:4222 --authority hc_forestry \\
        --approve-if-materials forest_right_certificate,logging_design --officer liu.forestry
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

STREAM = "CASEFLOW_DEPT"
"""caseflow's stream of department requests and answers (``caseflow.dept.>``)."""
MSG_ID_HEADER = "Nats-Msg-Id"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

log = logging.getLogger("department_system")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the department system is told on its command line."""

    nats_url: str
    authority: str
    officer: str
    required: frozenset[str]
    durable: str
    decision_prefix: str
    batch: int = 10

    @property
    def requests_subject(self) -> str:
        """``caseflow.dept.<authority>.requests``."""
        return f"caseflow.dept.{self.authority}.requests"

    @property
    def answers_subject(self) -> str:
        """``caseflow.dept.<authority>.answers``: the only subject answers may go to."""
        return f"caseflow.dept.{self.authority}.answers"


class BadRequest(ValueError):
    """A request this department can't read or answer."""


@dataclasses.dataclass(frozen=True)
class Request:
    """The parts of caseflow's ``DepartmentRequest`` this department uses."""

    case_id: str
    case_number: str | None
    item_code: str | None
    authority: str
    materials: frozenset[str]
    answer_subject: str

    @classmethod
    def parse(cls, data: bytes) -> Request:
        """Read a request; :class:`BadRequest` if it isn't one."""
        try:
            body = json.loads(data)
        except ValueError as err:
            raise BadRequest(f"not JSON: {err}") from None
        if not isinstance(body, dict):
            raise BadRequest("not a JSON object")
        materials = body.get("materials")
        fields = (body.get("case_id"), body.get("authority"), body.get("answer_subject"))
        if not all(isinstance(value, str) and value for value in fields):
            raise BadRequest("case_id, authority and answer_subject must be strings")
        if not isinstance(materials, list) or not all(isinstance(m, str) for m in materials):
            raise BadRequest("materials must be a list of codes")
        number, item = body.get("case_number"), body.get("item_code")
        return cls(
            case_id=str(body["case_id"]),
            case_number=number if isinstance(number, str) else None,
            item_code=item if isinstance(item, str) else None,
            authority=str(body["authority"]),
            materials=frozenset(materials),
            answer_subject=str(body["answer_subject"]),
        )


def decide(request: Request, settings: Settings) -> dict[str, Any]:
    """The answer (caseflow's ``DepartmentAnswer``): approve if every required material
    was handed in, else reject with a reason per missing material."""
    missing = sorted(settings.required - request.materials)
    answer: dict[str, Any] = {"case_id": request.case_id, "officer": settings.officer}
    reference = request.case_number or request.case_id[:8]
    if missing:
        answer["outcome"] = "reject"
        answer["reasons"] = [f"缺少材料 / missing material: {code}" for code in missing]
    else:
        answer["outcome"] = "approve"
        answer["decision_number"] = f"{settings.decision_prefix}-{reference}"
        answer["opinion"] = "材料齐全，准予许可 / materials complete, approved"
    return answer


def answer_id(settings: Settings, msg: Msg) -> str:
    """The answer's ``Nats-Msg-Id``: the same request always gives the same id."""
    request_id = (msg.headers or {}).get(MSG_ID_HEADER)
    if not request_id:
        request_id = f"seq-{msg.metadata.sequence.stream}"
    return f"{settings.authority}:answer:{request_id}"


async def handle(js: JetStreamContext, msg: Msg, settings: Settings) -> None:
    """Answer one request, then ack it (or term it, or nak it to try again later)."""
    try:
        request = Request.parse(msg.data)
        if request.authority != settings.authority:
            raise BadRequest(f"addressed to {request.authority}, not to us")
        if request.answer_subject != settings.answers_subject:
            raise BadRequest(f"answer subject must be {settings.answers_subject}")
    except BadRequest as err:
        log.warning("request dropped (seq %s): %s", msg.metadata.sequence.stream, err)
        await msg.term()
        return
    answer = decide(request, settings)
    try:
        # publish() returns once JetStream stored the answer (its PubAck).
        await js.publish(
            request.answer_subject,
            json.dumps(answer, ensure_ascii=False).encode(),
            headers={MSG_ID_HEADER: answer_id(settings, msg)},
        )
    except Exception as err:  # NATS away, stream gone: the request comes again
        log.warning("answer not sent for case %s, will retry: %r", request.case_id, err)
        await msg.nak(delay=2.0)
        return
    try:
        await msg.ack_sync()
    except Exception as err:  # the request comes again; the same answer id is sent again
        log.warning("ack lost for case %s: %r", request.case_id, err)
        return
    log.info(
        "answered case %s (%s, %s): %s",
        request.case_id,
        request.case_number,
        request.item_code,
        answer["outcome"],
    )


def consumer_config(settings: Settings) -> api.ConsumerConfig:
    """The department's durable pull consumer on caseflow's stream."""
    return api.ConsumerConfig(
        durable_name=settings.durable,
        filter_subject=settings.requests_subject,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=30,
        max_ack_pending=100,
    )


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Fetch and answer requests until ``stop`` is set."""
    nc: NATS = await nats.connect(
        settings.nats_url,
        name=f"department-{settings.authority}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )
    js = nc.jetstream()
    log.info("listening on %s as %s", settings.requests_subject, settings.durable)
    try:
        while not stop.is_set():
            try:
                # Idempotent; fails until caseflow has declared its stream.
                await js.add_consumer(STREAM, consumer_config(settings))
                sub = await js.pull_subscribe_bind(settings.durable, stream=STREAM)
            except Exception as err:
                log.warning("can't subscribe yet (%r); retrying", err)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                continue
            try:
                while not stop.is_set():
                    try:
                        msgs = await sub.fetch(settings.batch, timeout=1.0)
                    except nats.errors.TimeoutError:
                        continue
                    except Exception as err:  # e.g. a server restart: subscribe again
                        log.warning("fetch failed (%r); subscribing again", err)
                        break
                    for msg in msgs:  # a batch in hand is finished, even when stopping
                        try:
                            await handle(js, msg, settings)
                        except Exception as err:  # not acked: it comes again after ack_wait
                            log.error("request failed: %s", type(err).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        log.info("stopped")


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Answer the cases caseflow forwards to a department, over NATS."
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--authority", required=True, help="e.g. hc_forestry")
    parser.add_argument(
        "--approve-if-materials",
        action="append",
        default=[],
        metavar="CODE[,CODE…]",
        help="approve only if these materials were handed in (repeat or comma-separate); "
        "without it every request is approved",
    )
    parser.add_argument("--officer", default="department-system", help="the deciding officer's id")
    parser.add_argument("--durable", help="the consumer's name (default dept-<authority>)")
    parser.add_argument("--decision-prefix", help="decision numbers are <prefix>-<case number>")
    args = parser.parse_args(argv)
    if not _TOKEN.match(args.authority):
        parser.error("--authority must be a code such as hc_forestry")
    required = {code.strip() for given in args.approve_if_materials for code in given.split(",")}
    return Settings(
        nats_url=args.nats_url,
        authority=args.authority,
        officer=args.officer,
        required=frozenset(code for code in required if code),
        durable=args.durable or f"dept-{args.authority}",
        decision_prefix=args.decision_prefix or args.authority,
    )


async def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT."""
    settings = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
