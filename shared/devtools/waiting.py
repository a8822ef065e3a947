"""Waiting until something holds: the one polling loop of the tests, the benchmarks and the
local servers.

:func:`wait_until` (sync) and :func:`eventually` (async) call ``check`` until it returns a
truthy value and return that value. If the time runs out they raise :class:`WaitTimedOut`
(an ``AssertionError``, so pytest shows it as a failed expectation, and a ``TimeoutError``)
saying what was awaited, how long, and the last value seen. ``give_up`` ends a wait at once
(:class:`WaitAbandoned`) when waiting can no longer help, e.g. the process that should
answer has exited. :func:`wait_ready` is the readiness wait of a service process.

Every timeout is multiplied by ``CASEFLOW_TEST_TIME_SCALE`` (default 1): on a loaded or
slow machine, ``CASEFLOW_TEST_TIME_SCALE=3`` gives every wait three times as long without
touching a test. (The tests' conftest scales pytest's per-test timeout by it as well.)
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast, overload

import httpx

from shared.devtools import httpcalls

T = TypeVar("T")

TIME_SCALE_VARIABLE = "CASEFLOW_TEST_TIME_SCALE"
"""The environment variable every timeout is multiplied by."""

INTERVAL = 0.05
"""Seconds before the second try unless a wait says otherwise…"""

MAX_INTERVAL = 0.25
"""…after which the pauses grow by half each time up to this (unless the wait gives an
``interval`` of its own, kept fixed): a check that holds soon is seen soon, and a long
wait doesn't ask a service the same question twenty times a second (in the end-to-end
tests every try is an HTTP request the services answer with the machine's CPU)."""

GROWTH = 1.5

READINESS = 120.0
"""Seconds a service process gets to answer ``/readyz`` (before scaling): generous, since
a loaded 2-core machine (a CI beside a ``make up``) can take a minute to import and
migrate; a process that exits ends the wait at once."""


def time_scale() -> float:
    """``CASEFLOW_TEST_TIME_SCALE`` as a number (1 when unset); ValueError if it is not a
    positive finite number."""
    raw = os.environ.get(TIME_SCALE_VARIABLE, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{TIME_SCALE_VARIABLE}={raw!r} is not a number") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{TIME_SCALE_VARIABLE}={raw!r} is not a positive number")
    return scale


def scaled(seconds: float) -> float:
    """``seconds`` times :func:`time_scale`: a deadline that holds on a slower machine."""
    return seconds * time_scale()


class WaitFailed(AssertionError):
    """A wait ended without what it waited for."""

    def __init__(self, message: str, *, what: str, waited: float, last: object) -> None:
        super().__init__(message)
        self.what = what
        self.waited = waited
        self.last = last


class WaitTimedOut(WaitFailed, TimeoutError):
    """The time ran out: ``what`` did not hold within the (scaled) timeout."""


class WaitAbandoned(WaitFailed):
    """``give_up`` said waiting longer can't help (e.g. the process has exited)."""


def _shown(value: object, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class _Wait:
    """The bookkeeping shared by the sync and the async loop."""

    def __init__(
        self,
        what: str,
        timeout: float,
        interval: float | None,
        ignoring: tuple[type[BaseException], ...],
        give_up: Callable[[], str | None] | None,
        detail: Callable[[], object] | None,
    ) -> None:
        if interval is not None and interval <= 0:
            raise ValueError("interval must be positive")
        self.what = what
        self.timeout = timeout
        self.scale = time_scale()
        self.limit = timeout * self.scale
        self.interval = INTERVAL if interval is None else interval
        self.growing = interval is None
        self.ignoring = ignoring
        self.give_up = give_up
        self.detail = detail
        self.started = time.monotonic()
        self.deadline = self.started + self.limit
        self.last: object = None
        self.tries = 0

    def check_give_up(self) -> None:
        if self.give_up is None:
            return
        reason = self.give_up()
        if reason:
            waited = time.monotonic() - self.started
            raise WaitAbandoned(
                self._message(f"gave up after {waited:.1f} s waiting for {self.what}: {reason}"),
                what=self.what,
                waited=waited,
                last=self.last,
            )

    def pause(self) -> float:
        """Seconds to sleep before the next try; raises WaitTimedOut when none is left."""
        now = time.monotonic()
        if now >= self.deadline:
            waited = now - self.started
            limit = f"{self.timeout:g} s"
            if self.scale != 1:
                limit += f" × {TIME_SCALE_VARIABLE}={self.scale:g}"
            raise WaitTimedOut(
                self._message(
                    f"timed out after {waited:.1f} s ({limit}, {self.tries} tries) "
                    f"waiting for {self.what}"
                ),
                what=self.what,
                waited=waited,
                last=self.last,
            )
        pause = self.interval
        if self.growing:
            self.interval = min(self.interval * GROWTH, MAX_INTERVAL)
        # The last try lands on the deadline rather than a whole interval past it.
        return max(0.0, min(pause, self.deadline - now))

    def _message(self, headline: str) -> str:
        message = f"{headline}; last seen: {_shown(self.last)}"
        if self.detail is not None:
            try:
                message += f"\n{self.detail()}"
            except Exception as err:  # the detail is a courtesy: never hide the failure
                message += f"\n(no detail: {err!r})"
        return message


def wait_until(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
    give_up: Callable[[], str | None] | None = None,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call ``check`` until it returns a truthy value; return that value.

    ``what`` names what is awaited (for the failure message). ``timeout`` (seconds) is
    multiplied by :func:`time_scale`; ``check`` runs at least once and once more at the
    deadline. Between tries: ``interval`` seconds if given, else :data:`INTERVAL` growing
    to :data:`MAX_INTERVAL`. An exception of a type in ``ignoring`` counts as a no (and is
    reported as the last value seen); any other propagates. ``give_up``, called after each
    try that said no, ends the wait at once with :class:`WaitAbandoned` when it returns a
    reason (so an answer that came just before the process exited still counts).
    ``detail`` adds to the failure message (e.g. the end of a log). Raises
    :class:`WaitTimedOut`.
    """
    wait = _Wait(what, timeout, interval, ignoring, give_up, detail)
    while True:
        wait.tries += 1
        try:
            value = check()
        except ignoring as err:
            wait.last = err
        else:
            if value:
                return value
            wait.last = value
        wait.check_give_up()
        time.sleep(wait.pause())


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    timeout: float = ...,  # noqa: ASYNC109 - the same wait as wait_until's
    interval: float | None = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    give_up: Callable[[], str | None] | None = ...,
    detail: Callable[[], object] | None = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = ...,  # noqa: ASYNC109 - the same wait as wait_until's
    interval: float | None = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    give_up: Callable[[], str | None] | None = ...,
    detail: Callable[[], object] | None = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    what: str,
    timeout: float = 10.0,  # noqa: ASYNC109 - scaled, and named in the failure
    interval: float | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
    give_up: Callable[[], str | None] | None = None,
    detail: Callable[[], object] | None = None,
) -> T:
    """:func:`wait_until` for the event loop: ``check`` may be sync or return an awaitable
    (a coroutine function, or a lambda calling one); the pauses don't block the loop.

    (mypy gives ``Any`` for a value whose type holds ``Any``, e.g. ``dict[str, Any]``, as
    both forms of ``check`` match it: annotate the variable that takes the result.)"""
    wait = _Wait(what, timeout, interval, ignoring, give_up, detail)
    while True:
        wait.tries += 1
        try:
            answer = check()
            value = await answer if inspect.isawaitable(answer) else answer
        except ignoring as err:
            wait.last = err
        else:
            if value:
                return cast(T, value)
            wait.last = value
        wait.check_give_up()
        await asyncio.sleep(wait.pause())


def exited(proc: subprocess.Popen[Any], name: str) -> Callable[[], str | None]:
    """A ``give_up`` for a wait on ``proc``: the reason once it has exited."""

    def check() -> str | None:
        code = proc.poll()
        return None if code is None else f"{name} exited early (exit code {code})"

    return check


def wait_ready(
    base_url: str,
    *,
    name: str,
    proc: subprocess.Popen[Any] | None = None,
    timeout: float = READINESS,
    detail: Callable[[], object] | None = None,
) -> None:
    """Until ``base_url/readyz`` answers 200; at once :class:`WaitAbandoned` if ``proc``
    exits first. ``detail`` (e.g. the end of the service's log) goes into the failure."""

    def ready() -> bool:
        return httpcalls.get(f"{base_url}/readyz", timeout=2).status_code == 200

    wait_until(
        ready,
        what=f"{name} to answer {base_url}/readyz with 200",
        timeout=timeout,
        ignoring=(httpx.HTTPError,),
        give_up=exited(proc, name) if proc is not None else None,
        detail=detail,
    )
