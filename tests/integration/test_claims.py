"""Token claims against the registry, through the three real apps on both backends: every
operation that needs a token refuses a genuine token whose organisation is unknown (401),
whose role doesn't suit the organisation's kind (403) or whose special permissions the
registry doesn't grant that role (403), with problem+json, and records nothing.

The operations are read from each service's own OpenAPI document, so a route added later
is covered without touching this file."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from shared.adapters.auth import ROLE_ORG_KINDS, Role
from shared.adapters.tables.eventlog import events
from shared.domain.orgs import load_organisations
from shared.web.http import PROBLEM_JSON
from tests.services import VALID_APPLICATION, build_app, staff_headers

ORGS = load_organisations()

# One organisation of each kind (the audit body apart from the other city departments).
BY_KIND = {
    "station": "xuefeng_station",
    "city_department": "hc_hrss",
    "town_government": "banqiao_town",
    "audit_body": "hc_audit",
}


def _fits(role: Role, place: str) -> bool:
    org = ORGS.get(BY_KIND[place])
    return org.kind in ROLE_ORG_KINDS[role] and (role is not Role.auditor or org.audit_body)


MISFITS = [(role, BY_KIND[place]) for role in Role for place in BY_KIND if not _fits(role, place)]
MISFITS.append((Role.auditor, "hc_justice"))  # a city department, but not the audit body


def test_the_misfits_are_every_pair_the_registry_refuses() -> None:
    """The table above is what the brief says: clerks, reviewers and heads at stations,
    officers at city departments and towns, auditors at the audit body only."""
    pairs = {(r.value, o) for r, o in MISFITS}
    assert ("window_clerk", "hc_hrss") in pairs and ("station_head", "hc_audit") in pairs
    assert ("department_officer", "xuefeng_station") in pairs
    assert ("auditor", "hc_justice") in pairs and ("auditor", "banqiao_town") in pairs
    assert ("department_officer", "banqiao_town") not in pairs
    assert ("auditor", "hc_audit") not in pairs
    assert len(pairs) == 3 * 3 + 1 + 4


@pytest.fixture
async def apps(seeded_db_url: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The three services on one database, without their background work."""
    clients: dict[str, httpx.AsyncClient] = {}
    built = {name: build_app(name, seeded_db_url) for name in ("intake", "processing", "notify")}
    for name, app in built.items():
        clients[name] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
        )
    yield clients
    for name, client in clients.items():
        await client.aclose()
        await built[name].state.runtime.engine.dispose()


def secured_operations(service: str) -> list[tuple[str, str]]:
    """(method, path with placeholder values) of every operation needing a token."""
    document = build_app(service, "sqlite+aiosqlite:///never-opened.db").openapi()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security"):
                concrete = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)
                found.append((method.upper(), concrete))
    return found


OPERATIONS = {s: secured_operations(s) for s in ("intake", "processing", "notify")}


def test_each_service_has_secured_operations() -> None:
    assert ("POST", "/cases") in OPERATIONS["intake"]
    assert ("POST", "/reception") in OPERATIONS["intake"]
    assert ("GET", "/worklist") in OPERATIONS["processing"]
    assert any(p.startswith("/audit/") for _, p in OPERATIONS["processing"])
    assert ("POST", "/webhooks") in OPERATIONS["notify"]
    assert sum(len(v) for v in OPERATIONS.values()) >= 25


async def log_size(client: httpx.AsyncClient) -> int:
    app = client._transport.app  # type: ignore[attr-defined]
    async with app.state.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())


async def refused_everywhere(
    apps: dict[str, httpx.AsyncClient], headers: dict[str, str], status: int, says: str
) -> None:
    before = await log_size(apps["intake"])
    for service, operations in OPERATIONS.items():
        for method, path in operations:
            response = await apps[service].request(
                method,
                path,
                headers={**headers, "Idempotency-Key": f"claims-{uuid.uuid4()}"},
                json={} if method in ("POST", "PUT", "PATCH") else None,
            )
            where = f"{service} {method} {path}"
            assert response.status_code == status, f"{where}: {response.text}"
            assert response.headers["content-type"] == PROBLEM_JSON, where
            assert says in response.json()["detail"], f"{where}: {response.json()}"
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer"), where
    assert await log_size(apps["intake"]) == before


@pytest.mark.parametrize(("role", "org"), MISFITS, ids=[f"{r.value}@{o}" for r, o in MISFITS])
async def test_a_role_that_does_not_suit_the_organisation_is_refused_everywhere(
    apps: dict[str, httpx.AsyncClient], role: Role, org: str
) -> None:
    await refused_everywhere(apps, staff_headers("x.user", role, org), 403, "works at")


@pytest.mark.parametrize("role", list(Role))
async def test_an_organisation_nobody_knows_is_refused_everywhere(
    apps: dict[str, httpx.AsyncClient], role: Role
) -> None:
    headers = staff_headers("x.user", role, "atlantis_station")
    await refused_everywhere(apps, headers, 401, "'atlantis_station'")


@pytest.mark.parametrize(
    ("role", "org", "permission", "says"),
    [
        ("reviewer", "xuefeng_station", "reopen", "only a station head may hold"),
        ("window_clerk", "xuefeng_station", "operate", "may hold"),
        ("auditor", "hc_audit", "reopen", "only a station head may hold"),
        ("station_head", "xuefeng_station", "superuser", "doesn't grant"),
    ],
)
async def test_a_permission_the_registry_does_not_grant_is_refused_everywhere(
    apps: dict[str, httpx.AsyncClient], role: str, org: str, permission: str, says: str
) -> None:
    headers = staff_headers("x.user", role, org, permissions=frozenset({permission}))
    await refused_everywhere(apps, headers, 403, says)


async def test_tokens_that_fit_are_served(apps: dict[str, httpx.AsyncClient]) -> None:
    """The same requests with fitting claims get past the check (so the refusals above
    are the registry's, not some other fault)."""
    clerk = staff_headers("li.clerk", "window_clerk", "xuefeng_station")
    opened = await apps["intake"].post(
        "/cases", json=VALID_APPLICATION, headers={**clerk, "Idempotency-Key": "claims-ok-1"}
    )
    assert opened.status_code == 201, opened.text
    auditor = staff_headers("qian.auditor", "auditor", "hc_audit")
    number = opened.json()["case_number"]
    timeline = await apps["processing"].get(f"/audit/cases/{number}/timeline", headers=auditor)
    assert timeline.status_code == 200, timeline.text
    head = staff_headers(
        "zhao.head", "station_head", "xuefeng_station", permissions=frozenset({"reopen"})
    )
    assert (await apps["notify"].get("/webhooks", headers=head)).status_code == 200
    operator = staff_headers(
        "wu.operator", "department_officer", "banqiao_town", permissions=frozenset({"operate"})
    )
    listed = await apps["notify"].get("/webhooks?station=longmen_station", headers=operator)
    assert listed.status_code == 200, listed.text
    officer = staff_headers("sun.officer", "department_officer", "hc_audit")
    assert (await apps["processing"].get("/cases", headers=officer)).status_code == 200


@pytest.mark.parametrize("station", ["nonexistent_station", "hc_forestry", "banqiao_town"])
async def test_an_operator_subscribes_webhooks_for_stations_of_the_registry_only(
    apps: dict[str, httpx.AsyncClient], station: str
) -> None:
    operator = staff_headers(
        "wu.operator", "department_officer", "banqiao_town", permissions=frozenset({"operate"})
    )
    body = {"url": "https://hooks.example.gov.cn/in", "event_types": ["*"], "station": station}
    refused = await apps["notify"].post(
        "/webhooks", json=body, headers={**operator, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert refused.status_code == 422, refused.text
    assert station in refused.json()["detail"]


async def test_operate_subscribes_only_for_stations_of_ones_own_organisation(
    apps: dict[str, httpx.AsyncClient],
) -> None:
    """A subscription sends a station's cases away: a city department's operator may not
    make one for a station (it could not read those cases), a town's may for its own."""
    body = {"url": "https://hooks.example.gov.cn/in", "event_types": ["*"]}
    for org in ("hc_justice", "hc_audit"):
        operator = staff_headers(
            "wu.operator", "department_officer", org, permissions=frozenset({"operate"})
        )
        refused = await apps["notify"].post(
            "/webhooks",
            json={**body, "station": "xuefeng_station"},
            headers={**operator, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert refused.status_code == 403, refused.text
        assert "xuefeng_station" in refused.json()["detail"]
    longmen_head = staff_headers(
        "chen.head", "station_head", "longmen_station", permissions=frozenset({"operate"})
    )
    refused = await apps["notify"].post(
        "/webhooks",
        json={**body, "station": "xuefeng_station"},
        headers={**longmen_head, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert refused.status_code == 403, refused.text
    town = staff_headers(
        "wu.operator", "department_officer", "banqiao_town", permissions=frozenset({"operate"})
    )
    allowed = await apps["notify"].post(
        "/webhooks",
        json={**body, "station": "xuefeng_station"},
        headers={**town, "Idempotency-Key": uuid.uuid4().hex},
    )
    # Past the ownership check, only the URL's (test network: the name resolves nowhere).
    assert allowed.status_code == 422 and "url" in allowed.text, allowed.text
