"""``/metrics`` keeps a bounded number of series, on each of the three real apps: requests
with made-up methods and addresses add none. A method outside HTTP's standard ones is
counted as ``other`` and an address no route serves as ``unmatched``; a matched address is
counted by its route's template, never by the ids in it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.web.metrics import ensure_metrics_token
from tests.services import build_app, staff_headers

SERVICES = ("intake", "processing", "notify")
CLERK = staff_headers("li.clerk", "window_clerk", "xuefeng_station")

Series = frozenset[tuple[str, tuple[tuple[str, str], ...]]]


class Scraper:
    """A service's client and its ``/metrics`` as a set of series."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    async def series(self) -> Series:
        answer = await self.client.get(
            "/metrics", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert answer.status_code == 200, answer.text
        return frozenset(
            (sample.name, tuple(sorted(sample.labels.items())))
            for family in text_string_to_metric_families(answer.text)
            if family.name.startswith("caseflow_http")
            for sample in family.samples
        )


@pytest.fixture(params=SERVICES)
async def scraper(
    request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Scraper]:
    token_file, _ = ensure_metrics_token(tmp_path / "metrics-token")
    app = build_app(request.param, sqlite_url, metrics_token_file=token_file)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        yield Scraper(client, token_file.read_text().strip())
    await app.state.runtime.engine.dispose()


async def made_up_requests(client: httpx.AsyncClient) -> set[str]:
    """Requests with new methods and addresses each time; the words they made up."""
    word = uuid.uuid4().hex
    methods = [f"X{word.upper()}", "PROPFIND", "BREW"]  # httpx sends methods upper-cased
    paths = [f"/{word}", f"/cases/{uuid.uuid4()}/{word}", "/livez"]
    for method in methods:
        for path in paths:
            answer = await client.request(method, path, headers=CLERK)
            assert answer.status_code in (404, 405), f"{method} {path}: {answer.text}"
    for path in paths[:2]:  # a standard method at an address nobody serves
        assert (await client.get(path, headers=CLERK)).status_code == 404
    case_id = str(uuid.uuid4())
    case = await client.get(f"/cases/{case_id}", headers=CLERK)  # a route with an id in it
    assert case.status_code in (200, 404), case.text
    return {word, methods[0], case_id}


async def test_made_up_methods_and_addresses_add_no_series(scraper: Scraper) -> None:
    await scraper.series()  # the scrape itself is counted from here on
    await made_up_requests(scraper.client)
    before = await scraper.series()
    made_up = await made_up_requests(scraper.client)
    after = await scraper.series()
    assert after == before
    values = {value for _, labels in after for _, value in labels}
    assert not {v for v in values if any(word in v for word in made_up)}
    assert {"other", "unmatched", "/livez"} <= values
    assert "PROPFIND" not in values and "BREW" not in values
