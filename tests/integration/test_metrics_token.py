"""``/metrics`` only for operators, on each of the three real apps: no token 401, a wrong
one 403, the token from the file its setting names 200; a service without a readable
token serves nobody. ``caseflow up`` makes the token and hands its file to the services."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.cli.supervisor import Stack
from shared.web.http import PROBLEM_JSON
from shared.web.metrics import ensure_metrics_token
from tests.services import build_app

SERVICES = ("intake", "processing", "notify")


@pytest.fixture(params=SERVICES)
async def scrape(
    request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    token_file, _ = ensure_metrics_token(tmp_path / "metrics-token")
    app = build_app(request.param, sqlite_url, metrics_token_file=token_file)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        yield client, token_file
    await app.state.runtime.engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_metrics_answer_only_the_token(scrape: tuple[httpx.AsyncClient, Path]) -> None:
    client, token_file = scrape
    token = token_file.read_text().strip()
    anonymous = await client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == PROBLEM_JSON
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "caseflow_http" not in anonymous.text
    for wrong in ("Bearer nope", f"Bearer {token}x", f"Basic {token}", "Bearer "):
        refused = await client.get("/metrics", headers={"Authorization": wrong})
        assert refused.status_code in (401, 403), wrong
        assert "caseflow_http" not in refused.text
    assert (await client.get("/metrics", headers=bearer("nope"))).status_code == 403
    scraped = await client.get("/metrics", headers=bearer(token))
    assert scraped.status_code == 200
    assert "caseflow_http_requests_total" in scraped.text

    token_file.write_text("rotated-token\n")  # read at each scrape: no restart
    assert (await client.get("/metrics", headers=bearer(token))).status_code == 403
    assert (await client.get("/metrics", headers=bearer("rotated-token"))).status_code == 200


@pytest.mark.parametrize("what", ["missing", "empty", "unset"])
async def test_without_a_token_file_metrics_serve_nobody(
    sqlite_url: str, tmp_path: Path, what: str
) -> None:
    path = tmp_path / "metrics-token"
    if what == "empty":
        path.write_text("\n")
    token_file = None if what == "unset" else path
    app = build_app("intake", sqlite_url, metrics_token_file=token_file)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/metrics")).status_code == 401
        refused = await client.get("/metrics", headers=bearer("anything"))
        assert refused.status_code == 403
        assert "CASEFLOW_INTAKE_METRICS_TOKEN_FILE" in refused.json()["detail"]
    await app.state.runtime.engine.dispose()


def test_caseflow_up_makes_the_token_and_gives_its_file_to_the_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(
        data_dir=tmp_path,
        database_url=None,
        nats_url=None,
        host="127.0.0.1",
        ports={"intake": 1, "processing": 2, "notify": 3},
        nats_port=4,
    )
    stack.ensure_keys()
    token_file = tmp_path / "keys" / "metrics-token"
    assert f"metrics token created: {token_file}" in capsys.readouterr().out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40
    stack.ensure_keys()  # a second `caseflow up` keeps it: Prometheus keeps scraping
    assert token_file.read_text().strip() == token
    assert "metrics token found" in capsys.readouterr().out
    for service in SERVICES:
        env = stack.service_env(service, "nats://127.0.0.1:4")
        assert env[f"CASEFLOW_{service.upper()}_METRICS_TOKEN_FILE"] == str(token_file)
