"""The one wait helper (shared/devtools/waiting.py): the first truthy value is returned, a
timeout says what was awaited, how long and what was last seen, every timeout is scaled by
CASEFLOW_TEST_TIME_SCALE, and a wait gives up at once when told to."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator

import pytest

from shared.devtools import waiting
from shared.devtools.servers import free_port
from shared.devtools.waiting import (
    INTERVAL,
    MAX_INTERVAL,
    TIME_SCALE_VARIABLE,
    WaitAbandoned,
    WaitTimedOut,
    eventually,
    exited,
    scaled,
    time_scale,
    wait_ready,
    wait_until,
)


@pytest.fixture(autouse=True)
def unscaled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIME_SCALE_VARIABLE, raising=False)


def counter(answers: list[object]) -> Iterator[object]:
    yield from answers
    while True:
        yield answers[-1]


def test_returns_the_first_truthy_value() -> None:
    answers = counter([None, 0, [], {"ready": True}])
    assert wait_until(lambda: next(answers), what="readiness", interval=0.001) == {"ready": True}


def test_a_timeout_says_what_how_long_and_the_last_value() -> None:
    answers = counter([1, 2, 0])
    next(answers), next(answers)
    with pytest.raises(WaitTimedOut) as raised:
        wait_until(lambda: next(answers) or [], what="the red warning", timeout=0.2, interval=0.01)
    message = str(raised.value)
    assert "waiting for the red warning" in message
    assert re.search(r"timed out after [0-9.]+ s \(0.2 s, [0-9]+ tries\)", message), message
    assert "last seen: []" in message
    assert raised.value.what == "the red warning"
    assert raised.value.last == []
    assert 0.2 <= raised.value.waited < 2
    # an assertion to pytest, a timeout to code that catches TimeoutError
    assert isinstance(raised.value, AssertionError)
    assert isinstance(raised.value, TimeoutError)


def test_pauses_grow_to_a_cap_unless_the_wait_gives_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    clock = types.SimpleNamespace(monotonic=time.monotonic, sleep=slept.append)
    monkeypatch.setattr(waiting, "time", clock)  # waiting's own sleep, nobody else's
    answers = counter([*[False] * 12, True])
    assert wait_until(lambda: next(answers), what="a slow answer", timeout=60)
    assert slept[0] == INTERVAL
    assert slept[:5] == sorted(set(slept[:5])), slept  # growing
    assert max(slept) == MAX_INTERVAL == slept[-1], slept
    slept.clear()
    answers = counter([*[False] * 12, True])
    assert wait_until(lambda: next(answers), what="a steady poll", timeout=60, interval=0.02)
    assert slept == [0.02] * 12


async def test_async_pauses_grow_too(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(waiting, "asyncio", types.SimpleNamespace(sleep=sleep))
    answers = counter([*[False] * 12, True])
    assert await eventually(lambda: next(answers), what="a slow answer", timeout=60)
    assert slept[0] == INTERVAL and max(slept) == MAX_INTERVAL, slept


def test_checks_once_more_at_the_deadline() -> None:
    started = time.monotonic()

    def late() -> bool:
        return time.monotonic() - started >= 0.3

    assert wait_until(late, what="the deadline itself", timeout=0.3, interval=10)


def test_timeouts_are_scaled_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert time_scale() == 1
    monkeypatch.setenv(TIME_SCALE_VARIABLE, "3")
    assert time_scale() == 3
    assert scaled(20) == 60
    started = time.monotonic()
    with pytest.raises(WaitTimedOut, match=rf"0.1 s × {TIME_SCALE_VARIABLE}=3"):
        wait_until(lambda: False, what="nothing", timeout=0.1, interval=0.01)
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("value", ["fast", "0", "-2", "inf", "nan"])
def test_a_scale_that_is_no_positive_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(TIME_SCALE_VARIABLE, value)
    with pytest.raises(ValueError, match=TIME_SCALE_VARIABLE):
        time_scale()


def test_ignored_errors_count_as_no_and_others_propagate() -> None:
    tries = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def check() -> object:
        answer = next(tries)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(check, what="a port", ignoring=(ConnectionError,), interval=0.001) == "up"
    with pytest.raises(WaitTimedOut, match=r"last seen: ConnectionError\('refused'\)"):
        wait_until(
            lambda: check_refused(),
            what="a port",
            timeout=0.05,
            interval=0.01,
            ignoring=(ConnectionError,),
        )
    with pytest.raises(KeyError):
        wait_until(lambda: dict[str, int]()["x"], what="a key", ignoring=(ConnectionError,))


def check_refused() -> bool:
    raise ConnectionError("refused")


def test_give_up_ends_the_wait_at_once_with_its_reason_and_the_detail() -> None:
    started = time.monotonic()
    with pytest.raises(WaitAbandoned, match="intake exited early") as raised:
        wait_until(
            lambda: False,
            what="intake",
            timeout=60,
            give_up=lambda: "intake exited early",
            detail=lambda: "the log's end",
        )
    assert time.monotonic() - started < 5
    assert str(raised.value).endswith("the log's end")
    assert not isinstance(raised.value, TimeoutError)


def test_wait_ready_gives_up_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    assert exited(proc, "intake")() == "intake exited early (exit code 3)"
    with pytest.raises(WaitAbandoned, match=r"intake exited early \(exit code 3\)"):
        wait_ready(f"http://127.0.0.1:{free_port()}", name="intake", proc=proc)


async def test_eventually_takes_sync_and_async_checks() -> None:
    answers = counter([None, None, "ready"])

    async def ready() -> object:
        return next(answers)

    assert await eventually(ready, what="async", interval=0.001) == "ready"
    assert await eventually(lambda: ready(), what="lambda", interval=0.001) == "ready"
    assert await eventually(lambda: 5, what="sync") == 5

    async def nothing() -> int:
        return 0

    with pytest.raises(WaitTimedOut, match="waiting for the consumer; last seen: 0"):
        await eventually(nothing, what="the consumer", timeout=0.05, interval=0.01)
