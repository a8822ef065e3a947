"""Every dependency of every route of the three services is a coroutine function:
FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop per request for
work that does no I/O (it was about a fifth of processing's CPU per staff action)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.notify.app import create_app as create_notify
from services.notify.settings import NotifySettings
from services.processing.app import create_app as create_processing
from services.processing.settings import ProcessingSettings
from tests.services import session_keys


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every API route, through the routers included (FastAPI wraps those)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        elif hasattr(route, "routes"):
            yield from _routes(route.routes)


def _apps(url: str) -> Iterator[FastAPI]:
    keys = str(session_keys().public_path)
    yield create_intake(IntakeSettings(database_url=url, jwt_public_key_file=keys))
    yield create_processing(ProcessingSettings(database_url=url, jwt_public_key_file=keys))
    yield create_notify(NotifySettings(database_url=url, jwt_public_key_file=keys))


async def test_no_route_depends_on_a_plain_function(sqlite_url: str) -> None:
    checked = 0
    for app in _apps(sqlite_url):
        try:
            for route in _routes(app.routes):
                for call in _calls(route.dependant):
                    checked += 1
                    target = call if inspect.isfunction(call) else type(call).__call__
                    assert inspect.iscoroutinefunction(target), (route.path, call)
        finally:
            await app.state.runtime.engine.dispose()
    assert checked > 50, checked
