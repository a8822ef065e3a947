"""Every service's API docs work on an intranet (issue 15): /docs and /redoc load their
scripts and styles from the service itself, never from a CDN."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.notify.app import create_app as create_notify
from services.notify.settings import NotifySettings
from services.processing.app import create_app as create_processing
from services.processing.settings import ProcessingSettings

URL = "sqlite+aiosqlite:///never-opened.db"
APPS: dict[str, Callable[[], FastAPI]] = {
    "intake": lambda: create_intake(IntakeSettings(database_url=URL)),
    "processing": lambda: create_processing(ProcessingSettings(database_url=URL)),
    "notify": lambda: create_notify(NotifySettings(database_url=URL)),
}
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
@pytest.mark.parametrize("service", sorted(APPS))
async def test_the_docs_pages_load_everything_from_the_service(service: str, page: str) -> None:
    transport = httpx.ASGITransport(app=APPS[service]())
    async with httpx.AsyncClient(transport=transport, base_url="http://station.local") as client:
        html = await client.get(page)
        assert html.status_code == 200, html.text
        assets = ASSET.findall(html.text)
        assert any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            assert not re.match(r"^(https?:)?//", asset), f"{page} loads {asset} from outside"
            answer = await client.get(asset)
            assert answer.status_code == 200, (asset, answer.status_code)
            assert len(answer.content) > 1000, asset  # the real bundle, not an empty file
        # the page's script finds the API's description where the service serves it
        assert "/openapi.json" in html.text
        assert (await client.get("/openapi.json")).status_code == 200
