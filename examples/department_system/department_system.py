#!/usr/bin/env python3
"""A city department's system that answers the cases caseflow forwards to it, over NATS.

caseflow publishes each forwarded case on ``caseflow.dept.<authority>.requests`` (stream
``CASEFLOW_DEPT``). This program reads them from the pull consumer caseflow keeps for the
authority (``dept_<authority>``), decides, and publishes the decision on its credential's
answer subject (``caseflow.dept.<authority>.answers.<credential>``), which caseflow
records as the department's approval or rejection by the officer the answer names, noting
the credential that delivered it.

Everything it needs to connect comes from the credential file caseflow's operator issued
(``caseflow nats credentials --department <authority>``): the server, the NKEY seed, the
inbox prefix its permissions allow, the stream, the consumer and the answer subject. The
server lets this credential do nothing else: read another authority's requests, answer
for another authority or under another name, create consumers, publish events.

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

Needs only Python 3.11, nats-py and nkeys (``pip install nats-py nkeys``)::

    python department_system.py --credentials hc_forestry-system.json \\
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
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

MSG_ID_HEADER = "Nats-Msg-Id"
CREDENTIAL_FILE_VERSION = 1
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

log = logging.getLogger("department_system")


@dataclasses.dataclass(frozen=True)
class Credential:
    """The credential file caseflow's operator issued for this system."""

    name: str
    authority: str
    seed: str
    servers: tuple[str, ...]
    inbox_prefix: str
    stream: str
    durable: str
    requests_subject: str
    answer_subject: str

    @classmethod
    def load(cls, path: str) -> Credential:
        """Read the file; ValueError saying what is wrong with it."""
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
        if body.get("caseflow_nats_credential") != CREDENTIAL_FILE_VERSION:
            raise ValueError(f"{path} is not a caseflow NATS credential file (version 1)")
        try:
            credential = cls(
                name=str(body["name"]),
                authority=str(body["authority"]),
                seed=str(body["seed"]),
                servers=tuple(str(url) for url in body["servers"]),
                inbox_prefix=str(body["inbox_prefix"]),
                stream=str(body["stream"]),
                durable=str(body["durable"]),
                requests_subject=str(body["requests_subject"]),
                answer_subject=str(body["answer_subject"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} lacks {err}") from None
        if not _TOKEN.match(credential.authority) or not credential.servers:
            raise ValueError(f"{path}: authority or servers missing")
        return credential


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the department system is told: its credential and its command line."""

    credential: Credential
    servers: tuple[str, ...]
    officer: str
    required: frozenset[str]
    decision_prefix: str
    batch: int = 10

    @property
    def authority(self) -> str:
        return self.credential.authority


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
    answer_subject = settings.credential.answer_subject
    try:
        request = Request.parse(msg.data)
        if request.authority != settings.authority:
            raise BadRequest(f"addressed to {request.authority}, not to us")
        if not answer_subject.startswith(request.answer_subject + "."):
            raise BadRequest(f"answers go to {request.answer_subject}.<credential>, not ours")
    except BadRequest as err:
        log.warning("request dropped (seq %s): %s", msg.metadata.sequence.stream, err)
        await msg.term()
        return
    answer = decide(request, settings)
    try:
        # publish() returns once JetStream stored the answer (its PubAck).
        await js.publish(
            answer_subject,
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


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Fetch and answer requests until ``stop`` is set."""
    credential = settings.credential
    nc: NATS = await nats.connect(
        list(settings.servers),
        name=f"department-{credential.name}",
        nkeys_seed_str=credential.seed,  # the server knows only the public key
        inbox_prefix=credential.inbox_prefix,  # the only inboxes it may subscribe to
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )
    js = nc.jetstream()
    log.info(
        "listening on %s (consumer %s) as %s",
        credential.requests_subject,
        credential.durable,
        credential.name,
    )
    try:
        while not stop.is_set():
            try:
                # caseflow's processing creates the consumer; this system only reads it.
                await js.consumer_info(credential.stream, credential.durable)
                sub = await js.pull_subscribe_bind(credential.durable, stream=credential.stream)
            except Exception as err:
                log.warning("can't subscribe yet (%r); retrying", err)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                continue
            try:
                while not stop.is_set():
                    try:
                        msgs = await sub.fetch(settings.batch, timeout=1.0)
                    except TimeoutError:  # nats-py's and asyncio's: nothing to answer now
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
    parser.add_argument(
        "--credentials",
        required=True,
        metavar="FILE",
        help="the credential file caseflow's operator issued (caseflow nats credentials)",
    )
    parser.add_argument("--nats-url", help="the server (default: the one the file names)")
    parser.add_argument(
        "--approve-if-materials",
        action="append",
        default=[],
        metavar="CODE[,CODE…]",
        help="approve only if these materials were handed in (repeat or comma-separate); "
        "without it every request is approved",
    )
    parser.add_argument(
        "--officer",
        default="department-system",
        help="the deciding officer's id (user, or user@<authority>)",
    )
    parser.add_argument("--decision-prefix", help="decision numbers are <prefix>-<case number>")
    args = parser.parse_args(argv)
    try:
        credential = Credential.load(args.credentials)
    except (OSError, ValueError) as err:
        parser.error(f"--credentials: {err}")
    required = {code.strip() for given in args.approve_if_materials for code in given.split(",")}
    return Settings(
        credential=credential,
        servers=(args.nats_url,) if args.nats_url else credential.servers,
        officer=args.officer,
        required=frozenset(code for code in required if code),
        decision_prefix=args.decision_prefix or credential.authority,
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
