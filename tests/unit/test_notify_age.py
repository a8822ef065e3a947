"""Which events notify plans notices for by their age: none recorded more than
``notice_max_age_hours`` ago, unless the event is being re-driven from the dead letters
(``shared.adapters.bus.consumer.REDRIVEN``): then whatever its age."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from services.notify.planning import worth_notifying
from shared.adapters.bus.consumer import REDRIVEN
from tests.unit.test_notify_rules import START, stored

MAX_AGE = timedelta(hours=72)


@pytest.fixture
def redriven() -> Iterator[None]:
    token = REDRIVEN.set(True)
    yield
    REDRIVEN.reset(token)


def test_an_old_event_is_not_notified() -> None:
    event = stored(uuid.uuid4(), 1, "CaseAccepted", {})
    assert worth_notifying(event, MAX_AGE, now=event.recorded_at + timedelta(hours=71))
    assert not worth_notifying(event, MAX_AGE, now=event.recorded_at + timedelta(hours=73))


@pytest.mark.usefixtures("redriven")
def test_a_redriven_event_is_notified_whatever_its_age() -> None:
    event = stored(uuid.uuid4(), 1, "CaseAccepted", {})
    assert worth_notifying(event, MAX_AGE, now=START + timedelta(days=400))


@pytest.mark.usefixtures("redriven")
def test_a_redriven_record_of_notify_itself_is_still_not_notified() -> None:
    event = stored(uuid.uuid4(), 2, "NotificationSent", {})
    assert not worth_notifying(event, MAX_AGE, now=event.recorded_at)


def test_the_flag_is_off_outside_a_redrive() -> None:
    assert REDRIVEN.get() is False
