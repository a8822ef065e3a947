"""Staff acting on a case, on both backends: an action appends after the head it read
without reading it again, so the one that loses a race is checked again on the new state
(here: refused, the review has begun) and the log stays a gap-free chain; and it judges
the delegation on a read made in the transaction that records it."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.adapters.delegations import publish_seed
from shared.adapters.eventlog import EventLog
from shared.adapters.idempotency import SenderKey
from shared.application.workflow.service import CaseService
from shared.application.workflow.wiring import case_service
from shared.domain.workflow import engine
from tests.integration.test_idempotency_replays import (
    APPLICATION,
    REFERENCE,
    XF_CLERK,
    XF_REVIEWER,
    open_for,
)
from tests.keys import sent

OTHER_REVIEWER = engine.Staff(user="zhao.reviewer", role="reviewer", org="xuefeng_station")


@pytest.fixture
async def service(log: EventLog) -> CaseService:
    await publish_seed(log)
    return case_service(log, REFERENCE)


async def _start(service: CaseService, case_id: uuid.UUID, staff: engine.Staff) -> object:
    """``start_review`` by ``staff``: the outcome, or the error it raised."""
    key = f"start-{case_id}-{staff.user}"
    try:
        return await service.act(
            case_id,
            "start_review",
            {},
            staff,
            idempotency_key=key,
            sender=SenderKey(staff.org, staff.user, key, "POST /actions"),
        )
    except Exception as err:
        return err


async def test_two_reviewers_starting_the_same_review_at_once(
    service: CaseService, log: EventLog
) -> None:
    for round_ in range(5):
        opened = await open_for(service, XF_CLERK, sent(XF_CLERK, f"w-{round_}", APPLICATION))
        case_id = opened.state.case_id
        answers = await asyncio.gather(
            _start(service, case_id, XF_REVIEWER), _start(service, case_id, OTHER_REVIEWER)
        )
        history = await log.read_case(case_id)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        for before, after in itertools.pairwise(history):
            assert after.prev_hash == before.hash
        assert [e.event_type for e in history].count("ReviewStarted") == 1, answers
        assert sum(not isinstance(a, Exception) for a in answers) == 1, answers


async def test_a_staff_action_judges_the_delegation_in_its_own_transaction(
    service: CaseService,
) -> None:
    """The register is read on the connection of the transaction that records the act:
    a revocation committed before that read is seen (before this change, the read came
    before the transaction, and one committed in between went unseen)."""
    head = engine.Staff(user="zhao.head", role="station_head", org="xuefeng_station")
    opened = await open_for(service, XF_CLERK, sent(XF_CLERK, "w-deleg", APPLICATION))
    case_id = opened.state.case_id
    for action, staff in (("start_review", XF_REVIEWER), ("complete_review", XF_REVIEWER)):
        key = f"{action}-deleg"
        body = (
            {"recommendation": "approve", "opinion": "材料齐全，符合条件 (complete, eligible)"}
            if action == "complete_review"
            else {}
        )
        await service.act(
            case_id,
            action,
            body,
            staff,
            idempotency_key=key,
            sender=SenderKey(staff.org, staff.user, key, "POST /actions"),
        )
    seen: list[bool] = []
    read = service.delegations.for_delegate

    async def spy(org: str, *, conn: AsyncConnection | None = None) -> list[Any]:
        seen.append(conn is not None and conn.in_transaction())
        return await read(org, conn=conn)

    service.delegations.for_delegate = spy  # type: ignore[method-assign]
    outcome = await service.act(
        case_id,
        "approve",
        {},
        head,
        idempotency_key="approve-deleg",
        sender=SenderKey(head.org, head.user, "approve-deleg", "POST /actions"),
    )
    assert outcome.events[0].event_type == "CaseApproved"
    assert outcome.events[0].delegation_id is not None, "decided under a delegation"
    assert seen == [True], seen
