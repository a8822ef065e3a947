"""Every role × organisation pair against every operation of the three services, aimed at
another station's things: Xuefeng's cases, matter, visit, webhook subscription, dead
letters and the delegation it acts under.

The three services run as real processes on both backends: every identity on the
end-to-end tests' backends (PostgreSQL unless ``CASEFLOW_TEST_E2E_BACKENDS`` says
otherwise), and on the other one every role at the other station, the town, the audit
body and an organisation that doesn't exist (``SLICE``). Xuefeng's staff first build
what there is to steal (a station case, a case forwarded to the forestry bureau, a
mediation, a visit, a webhook subscription), each carrying a marker string that appears
nowhere else. Then every identity — each role at each organisation of the registry, and
at one that doesn't exist — sends every request that the services' own OpenAPI documents
offer (an operation the recipes below don't know fails the test, so a new route can't
slip past), with Xuefeng's ids in the path, body and query.

What must hold:
- no answer is a 5xx;
- an identity whose role doesn't fit its organisation (or whose organisation doesn't
  exist) is refused with 401/403 everywhere;
- an answer shows a marker only to those the rules let see it (``SEES``: the city's
  auditors, and department officers of the authority a case acts for or was forwarded to);
  those identities are refused every change;
- afterwards Xuefeng's streams hold no event by anyone outside Xuefeng, not even a
  refused attempt (an outsider's is kept in a stream of its own), the subscription is
  unchanged, and nothing was created in Xuefeng's name.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.adapters.auth import ClaimsRefused, Role, SignedInStaff, check_claims
from shared.adapters.db import create_engine
from shared.adapters.tables.eventlog import events as events_table
from shared.devtools import httpcalls
from shared.domain.orgs import load_organisations
from shared.domain.workflow.payloads import BODIES
from tests.e2e.conftest import E2E_BACKENDS
from tests.services import (
    VALID_APPLICANT,
    ServiceProcess,
    running_stack,
    session_sandbox,
    staff_headers,
    wait_for_event,
)

# The services run as processes: their readiness alone may take 120 s on a loaded machine.
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.parametrize("module_db_url", ["postgres", "sqlite"], indirect=True),
]

VICTIM = "xuefeng_station"
ORGS = load_organisations()
UNKNOWN_ORG = "nowhere_station"
AUDIT_ORG = next(o.code for o in ORGS if o.audit_body)  # the audit body: the registry marks it

CLERK = staff_headers("xf.clerk", Role.window_clerk, VICTIM)
REVIEWER = staff_headers("xf.reviewer", Role.reviewer, VICTIM)
HEAD = staff_headers("xf.head", Role.station_head, VICTIM)

MARKERS = {
    "station_case": "薛秘甲",
    "forwarded_case": "薛秘乙",
    "mediation": "秘密纠纷甲乙",
    "visit": "访客秘丙",
    "webhook": "secret-hook-7f3a",
}
"""Strings that only Xuefeng's things carry: seeing one is seeing Xuefeng's data."""


@dataclass
class Victim:
    """What Xuefeng's staff made, and where."""

    ids: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)
    subscription: dict[str, Any] = field(default_factory=dict)
    deliveries: list[str] = field(default_factory=list)


def _post(url: str, headers: Any, body: Any) -> httpx.Response:
    return httpcalls.post(
        url, json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}, timeout=30
    )


def _act(processing: str, case_id: str, action: str, headers: Any, body: Any) -> None:
    answer = _post(f"{processing}/cases/{case_id}/actions/{action}", headers, body)
    assert answer.status_code == 200, f"{action}: {answer.text}"


def _build_victim(stack: dict[str, ServiceProcess]) -> Victim:
    intake, processing = stack["intake"].base_url, stack["processing"].base_url
    notify = stack["notify"].base_url
    victim = Victim()
    station = _post(
        f"{intake}/cases",
        CLERK,
        {
            "item_code": "pension_enrolment",
            "applicant": {**VALID_APPLICANT, "name": MARKERS["station_case"]},
            "materials": [
                {"code": "id_card", "original_checked": True},
                {"code": "household_register", "original_checked": True},
                "application_form",
            ],
        },
    )
    assert station.status_code == 201, station.text
    victim.ids["station_case"] = station.json()["case_id"]
    victim.numbers["station_case"] = station.json()["case_number"]

    forwarded = _post(
        f"{intake}/cases",
        CLERK,
        {
            "item_code": "logging_permit",
            "applicant": {**VALID_APPLICANT, "name": MARKERS["forwarded_case"]},
            "materials": [
                "application_form",
                {"code": "id_card", "original_checked": True},
                {"code": "forest_right_certificate", "original_checked": True},
                {"code": "logging_design", "original_checked": True},
            ],
        },
    )
    assert forwarded.status_code == 201, forwarded.text
    case = forwarded.json()["case_id"]
    victim.ids["forwarded_case"] = case
    victim.numbers["forwarded_case"] = forwarded.json()["case_number"]
    _act(processing, case, "start_review", REVIEWER, {})
    _act(
        processing,
        case,
        "complete_review",
        REVIEWER,
        {"recommendation": "approve", "opinion": "材料齐全"},
    )
    _act(processing, case, "forward", REVIEWER, {})

    mediation = _post(
        f"{intake}/matters/mediation",
        CLERK,
        {"title": MARKERS["mediation"], "parties": ["甲", "乙"], "summary": "邻里纠纷"},
    )
    assert mediation.status_code == 201, mediation.text
    victim.ids["mediation"] = mediation.json()["case_id"]
    victim.numbers["mediation"] = mediation.json()["case_number"]

    visit = _post(
        f"{intake}/reception", CLERK, {"visitor_name": MARKERS["visit"], "purpose": "enquiry"}
    )
    assert visit.status_code == 201, visit.text
    victim.ids["visit"] = visit.json()["visit_id"]

    hook = _post(
        f"{notify}/webhooks",
        HEAD,
        {
            "url": f"{_receiver()}/xuefeng",
            "event_types": ["CaseAccepted"],
            "description": MARKERS["webhook"],
        },
    )
    assert hook.status_code == 201, hook.text
    victim.subscription = {k: v for k, v in hook.json().items() if k != "secret"}

    wait_for_event(intake, victim.ids["station_case"], "NotificationSent", headers=CLERK)
    listed = httpcalls.get(
        f"{notify}/cases/{victim.ids['station_case']}/deliveries", headers=HEAD, timeout=30
    )
    assert listed.status_code == 200, listed.text
    victim.deliveries = [d["delivery_id"] for d in listed.json()["deliveries"]]
    assert victim.deliveries
    return victim


def _receiver() -> str:
    """The base URL of the test run's sandbox webhook receiver: the one address the
    stack's notify is allowed to call (the refusals below are then for whom, not where)."""
    network, _, port = session_sandbox()["WEBHOOK_ALLOW_NETWORKS"].rpartition(":")
    return f"http://{network.removesuffix('/32')}:{port}"


# --- who may see what ---------------------------------------------------------------------

SEES: dict[str, set[tuple[Role, str]]] = {
    # The city's auditors see every case; a department officer sees the cases of the
    # authority they act for: the delegating bureau (the station acts in its name), the
    # bureau a case was forwarded to, and the town for the station's own matters.
    "station_case": {(Role.auditor, AUDIT_ORG), (Role.department_officer, "hc_hrss")},
    "forwarded_case": {(Role.auditor, AUDIT_ORG), (Role.department_officer, "hc_forestry")},
    "mediation": {(Role.auditor, AUDIT_ORG), (Role.department_officer, "banqiao_town")},
    "visit": {(Role.auditor, AUDIT_ORG), (Role.department_officer, "banqiao_town")},
    "webhook": set(),
    "delegation": {(Role.department_officer, "hc_hrss")},  # the delegator's own instrument
}


PARTIES: dict[str, set[tuple[Role, str]]] = {
    # Of those who see a thing, who has a part in it: the bureau the case waits for.
    "forwarded_case": {(Role.department_officer, "hc_forestry")},
    "delegation": {(Role.department_officer, "hc_hrss")},  # the delegator changes its own
}


@dataclass(frozen=True)
class Identity:
    role: Role
    org: str
    permissions: frozenset[str] = frozenset()

    @property
    def valid(self) -> bool:
        """Whether the registry bears the claims out: the organisation exists, the role
        suits it, the special permissions are the role's to hold."""
        try:
            check_claims(SignedInStaff("probe", self.role, self.org, None, self.permissions), ORGS)
        except ClaimsRefused:
            return False
        return True

    def headers(self) -> dict[str, str]:
        user = f"probe.{self.role.value}.{self.org}.{'-'.join(sorted(self.permissions))}"
        return staff_headers(user, self.role, self.org, permissions=self.permissions)

    def sees(self, thing: str) -> bool:
        return (self.role, self.org) in SEES[thing]

    def is_party(self, thing: str) -> bool:
        return (self.role, self.org) in PARTIES.get(thing, set())


IDENTITIES = [Identity(role, org.code) for org in ORGS for role in Role if org.code != VICTIM] + [
    Identity(role, UNKNOWN_ORG) for role in Role
]
SLICE_ORGS = {
    next(o.code for o in ORGS if o.kind.value == "station" and o.code != VICTIM),
    next(o.code for o in ORGS if o.kind.value == "town_government"),
    AUDIT_ORG,
    UNKNOWN_ORG,
}
SLICE = [i for i in IDENTITIES if i.org in SLICE_ORGS]
"""Every role at another station, the town, the audit body and nowhere: the identities
tried on the backend that isn't an end-to-end one."""


def identities(database_url: str) -> list[Identity]:
    """All of them on the end-to-end backends, :data:`SLICE` on the other."""
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    return IDENTITIES if backend in E2E_BACKENDS else SLICE


# --- the requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request aimed at Xuefeng's things, and whether it reads or changes."""

    service: str
    method: str
    path: str
    """The operation's path template, as in the OpenAPI document."""
    url: str
    thing: str | None
    """What of Xuefeng's it touches (a key of MARKERS), or None for lists across things."""
    changes: bool
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None


ACTION_BODIES: dict[str, Any] = {
    "request_correction": {"defective": [{"code": "id_card", "reason": "模糊"}]},
    "submit_correction": {"materials": ["id_card"]},
    "refuse": {"reason": "不符合"},
    "suspend": {"kind": "hearing", "reason": "听证"},
    "extend": {"reason": "复杂"},
    "complete_review": {"recommendation": "approve", "opinion": "同意"},
    "approve": {"decision_number": "外〔2026〕1号"},
    "reject": {"reasons": ["不符合"]},
    "deliver": {"method": "in_person"},
    "rate": {"score": 1},
    "withdraw": {"reason": "撤回"},
    "reopen": {"reason": "重办"},
    "complete_callback": {"notes": "回访"},
    "hold_session": {"notes": "调解"},
    "conclude": {"outcome": "agreement", "summary": "和解"},
    "hold": {"attendees": 3},
    "provide": {"description": "帮助"},
}
CASES = ("station_case", "forwarded_case", "mediation", "visit")
CASE_THINGS = ("station_case", "forwarded_case", "mediation")
"""Cases with a workflow (a visit is a line in the reception log, not a case to open)."""
PERIOD = {"from": "2025-01-01", "to": "2027-12-31"}


def _probes(
    service: str, method: str, path: str, victim: Victim, actions: list[str]
) -> list[Probe]:
    """The requests for one operation; an operation nobody wrote a recipe for fails."""
    key = (service, method, path)
    ids, numbers = victim.ids, victim.numbers
    sub = victim.subscription["subscription_id"]

    def probe(url: str, thing: str | None, changes: bool, **kw: Any) -> Probe:
        return Probe(service, method, path, url, thing, changes, **kw)

    if path in ("/cases/{case_id}", "/cases/{case_id}/events"):
        return [probe(path.format(case_id=ids[t]), t, False) for t in CASES]
    if key == ("intake", "GET", "/cases/{case_id}/applicant"):
        return [
            probe(path.format(case_id=ids[t]), t, True, params={"reason": "probe"})
            for t in ("station_case", "forwarded_case")
        ]
    if key == ("processing", "GET", "/cases/by-number/{case_number}"):
        return [probe(f"/cases/by-number/{numbers[t]}", t, False) for t in numbers]
    if key == ("processing", "POST", "/cases/{case_id}/actions/{action}"):
        return [
            probe(f"/cases/{ids[t]}/actions/{a}", t, True, body=ACTION_BODIES.get(a, {}))
            for t in CASES
            for a in actions
        ]
    if key in {("processing", "GET", "/cases"), ("processing", "GET", "/worklist")}:
        return [probe(path, None, False), probe(path, None, False, params={"station": VICTIM})]
    if key == ("processing", "GET", "/reports/statistics"):
        return [probe(path, None, False, params={"station": VICTIM, **PERIOD})]
    if key == ("processing", "GET", "/audit/cases/{case_ref}/timeline"):
        return [probe(f"/audit/cases/{numbers[t]}/timeline", t, False) for t in numbers]
    if key == ("processing", "GET", "/audit/verification"):
        return [probe(path, None, False)]  # the audit body's alone; no station's data
    if key == ("processing", "GET", "/worklist/changes"):
        # A stream that stays open, carrying no content at all (only "changed"): nothing
        # of another station's to read. tests/e2e/test_worklist_changes.py: it wants a token.
        return []
    if key == ("processing", "GET", "/audit/compliance"):
        return [probe(path, None, False, params={"station": VICTIM, **PERIOD})]
    if key == ("processing", "GET", "/delegations"):
        return [probe(path, None, False)]
    if key == ("processing", "GET", "/delegations/{code}"):
        return [probe("/delegations/hrss-xuefeng-2021", None, False)]
    if key == ("processing", "POST", "/delegations"):
        return [probe(path, "delegation", True, body=_instrument())]
    if path.startswith("/delegations/{code}/"):
        verb = path.rsplit("/", 1)[1]
        body = {"reason": "probe"} if verb != "amendments" else _instrument()
        return [probe(f"/delegations/hrss-xuefeng-2021/{verb}", "delegation", True, body=body)]
    if key == ("notify", "POST", "/webhooks"):
        body = {"url": f"{_receiver()}/probe", "station": VICTIM}
        return [probe(path, "webhook", True, body=body)]
    if key == ("notify", "GET", "/webhooks"):
        return [probe(path, None, False), probe(path, None, False, params={"station": VICTIM})]
    if key == ("notify", "GET", "/webhooks/{subscription_id}"):
        return [probe(f"/webhooks/{sub}", "webhook", False)]
    if key == ("notify", "PATCH", "/webhooks/{subscription_id}"):
        return [probe(f"/webhooks/{sub}", "webhook", True, body={"status": "paused"})]
    if key == ("notify", "DELETE", "/webhooks/{subscription_id}"):
        return [probe(f"/webhooks/{sub}", "webhook", True)]
    if key == ("notify", "GET", "/dead-letters"):
        return [probe(path, None, False), probe(path, None, False, params={"station": VICTIM})]
    if key == ("notify", "POST", "/dead-letters/redrive"):
        return [probe(path, "webhook", True, body={"delivery_ids": victim.deliveries})]
    if key == ("notify", "GET", "/cases/{case_id}/deliveries"):
        return [probe(f"/cases/{ids[t]}/deliveries", t, False) for t in CASES]
    if key == ("intake", "POST", "/cases"):
        # Hands in an application "from" Xuefeng's visit: another station's visit.
        body = {
            "item_code": "pension_enrolment",
            "applicant": VALID_APPLICANT,
            "materials": ["id_card", "household_register", "application_form"],
            "reception_id": ids["visit"],
        }
        return [probe(path, "visit", True, body=body)]
    if key[:2] == ("intake", "POST") and (path.startswith("/matters/") or path == "/reception"):
        return []  # they create in the caller's own station: see test_creations_stay_home
    raise AssertionError(f"no probe for {service} {method} {path}: write one")


def _instrument() -> dict[str, Any]:
    return {
        "code": f"probe-{uuid.uuid4().hex[:8]}",
        "delegator": "hc_hrss",
        "delegate": VICTIM,
        "items": ["pension_enrolment"],
        "powers": ["receive"],
        "legal_basis": "probe",
        "document_number": "韩人社发〔2026〕9号",
        "published_on": "2026-01-05",
        "valid_from": "2026-01-05",
    }


# --- the matrix ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    module_db_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    with running_stack(module_db_url, nats_url, tmp_path_factory.mktemp("logs")) as services:
        yield services


@pytest.fixture(scope="module")
def victim(stack: dict[str, ServiceProcess]) -> Victim:
    return _build_victim(stack)


def _operations(stack: dict[str, ServiceProcess]) -> list[tuple[str, str, str]]:
    found = []
    for name, service in stack.items():
        document = httpcalls.get(f"{service.base_url}/openapi.json", timeout=30).json()
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if operation.get("security"):
                    found.append((name, method.upper(), path))
    return found


def _leaks(text: str, identity: Identity, probe: Probe, victim: Victim) -> list[str]:
    """What the answer shows of Xuefeng's things that ``identity`` may not see: a marker,
    or an id that the request did not name itself (a 404 for a case number must not
    give away the case's id)."""
    asked = f"{probe.url} {probe.params} {probe.body}"
    shown = [
        thing for thing, marker in MARKERS.items() if marker in text and not identity.sees(thing)
    ]
    return shown + [
        f"the id of {thing}"
        for thing, thing_id in victim.ids.items()
        if thing_id in text and thing_id not in asked and not identity.sees(thing)
    ]


def test_nobody_reads_or_changes_another_stations_things(
    stack: dict[str, ServiceProcess], victim: Victim, module_db_url: str
) -> None:
    operations = _operations(stack)
    assert len(operations) >= 30, operations  # the three documents, not an empty one
    probes = [p for op in operations for p in _probes(*op, victim=victim, actions=sorted(BODIES))]
    tried = identities(module_db_url)
    jobs = [
        (identity, probe)
        for identity in tried
        for probe in probes
        # A party's changes are its own business (the workflow tests cover them); those
        # who only see a thing (auditors, the competent authority) are refused them all.
        if not (identity.valid and probe.thing and identity.is_party(probe.thing) and probe.changes)
    ]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
        findings = [
            f
            for found in pool.map(lambda job: _try(client, stack, job[0], job[1], victim), jobs)
            for f in found
        ]
    counted = len(jobs)
    assert counted > 5000 * len(tried) // len(IDENTITIES), counted  # over 5,000 for all
    assert not findings, _summary(findings)
    asyncio.run(_nothing_changed(module_db_url, victim))
    _subscription_unchanged(stack, victim)


def _summary(findings: list[str]) -> str:
    """Findings grouped by what went wrong, a few examples of each."""
    kinds: dict[str, list[str]] = {}
    for finding in findings:
        kinds.setdefault(finding.split(": ", 1)[1][:60], []).append(finding)
    lines = [f"{len(findings)} findings of {len(kinds)} kinds:"]
    for kind, found in sorted(kinds.items(), key=lambda k: -len(k[1])):
        lines.append(f"- {len(found)} × {kind}")
        lines.extend(f"    {f}" for f in found[:5])
    return "\n".join(lines)


def _try(
    client: httpx.Client,
    stack: dict[str, ServiceProcess],
    identity: Identity,
    probe: Probe,
    victim: Victim,
) -> list[str]:
    """Send one probe as ``identity``; what it found wrong."""
    where = f"{identity.role.value}@{identity.org} {probe.method} {probe.url}"
    try:
        response = client.request(
            probe.method,
            stack[probe.service].base_url + probe.url,
            params=probe.params,
            json=probe.body,
            headers={**_headers(identity), "Idempotency-Key": uuid.uuid4().hex},
        )
    except httpx.HTTPError as err:
        return [f"{where}: no answer ({err!r})"]
    findings = []
    status = response.status_code
    if status >= 500:
        findings.append(f"{where}: {status} {response.text[:200]}")
    elif not identity.valid and status not in (401, 403):
        findings.append(f"{where}: {status} for a role that doesn't fit its org")
    elif probe.changes and status < 400 and not _harmless(probe, response):
        findings.append(f"{where}: {status}, a change was accepted")
    leaked = _leaks(response.text, identity, probe, victim)
    if leaked:
        findings.append(f"{where}: {status} shows {', '.join(leaked)}")
    if (
        identity.valid
        and not probe.changes
        and probe.thing in CASE_THINGS
        and identity.sees(probe.thing)
        and status != 200
        and _readable_by(identity, probe)
    ):
        findings.append(f"{where}: {status}, but they may see it")
    return findings


@functools.cache
def _headers(identity: Identity) -> dict[str, str]:
    return identity.headers()


def _harmless(probe: Probe, response: httpx.Response) -> bool:
    """A 2xx to a change that changed nothing of Xuefeng's."""
    if probe.path == "/dead-letters/redrive":
        return not response.json().get("redriven")
    return False


def _readable_by(identity: Identity, probe: Probe) -> bool:
    """Reads the rules give a seeing identity (the rest are refused by role, rightly)."""
    if identity.role is Role.auditor:
        return probe.service != "notify" or probe.path.endswith("/deliveries")
    return probe.path in {"/cases/{case_id}", "/cases/{case_id}/events"} or probe.path.startswith(
        "/cases/by-number"
    )


async def _nothing_changed(database_url: str, victim: Victim) -> None:
    """Xuefeng's streams hold no event by outsiders but refusals; none opened in its name."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            case_ids = [uuid.UUID(i) for i in victim.ids.values()]
            rows = (
                await conn.execute(
                    sa.select(events_table.c.event_type, events_table.c.actor_station).where(
                        events_table.c.case_id.in_(case_ids)
                    )
                )
            ).all()
            strangers = [
                (r.event_type, r.actor_station)
                for r in rows
                # caseflow's own records (notices, disclosures) name no organisation; an
                # outsider's refused attempt is kept in a stream of its own, not here
                if r.actor_station not in (VICTIM, None, "system")
            ]
            assert not strangers, strangers
            opened = (
                await conn.execute(
                    sa.select(events_table.c.actor_station, events_table.c.case_kind).where(
                        events_table.c.event_type.in_(["CaseReceived", "VisitorReceived"]),
                        events_table.c.actor_station != VICTIM,
                    )
                )
            ).all()  # the probes create nothing anywhere: one that did got through
            assert not opened, opened
    finally:
        await engine.dispose()


def _subscription_unchanged(stack: dict[str, ServiceProcess], victim: Victim) -> None:
    sub = victim.subscription
    now = httpcalls.get(
        f"{stack['notify'].base_url}/webhooks/{sub['subscription_id']}", headers=HEAD, timeout=30
    )
    assert now.status_code == 200, now.text
    assert {k: now.json()[k] for k in ("status", "url", "event_types", "updated_at")} == {
        k: sub[k] for k in ("status", "url", "event_types", "updated_at")
    }


MATTER_BODIES: dict[str, Any] = {
    "/matters/mediation": {"title": "邻里纠纷", "parties": ["甲", "乙"], "summary": "宅基地"},
    "/matters/legal_publicity": {"topic": "普法", "planned_on": "2026-12-01"},
    "/matters/assistance": {"person_name": "王五", "need": "生活困难"},
    "/matters/police_assistance": {"police_unit": "板桥派出所", "summary": "协查"},
    "/reception": {"visitor_name": "李四", "purpose": "enquiry"},
    "/cases": {
        "item_code": "pension_enrolment",
        "applicant": VALID_APPLICANT,
        "materials": [
            {"code": "id_card", "original_checked": True},
            {"code": "household_register", "original_checked": True},
            "application_form",
        ],
    },
}


def test_what_anyone_opens_is_their_own_stations(
    stack: dict[str, ServiceProcess], module_db_url: str
) -> None:
    """Every identity hands in an application, a visit and each matter: only station staff
    whose role opens it may, and it opens at their own station, never at Xuefeng's or at a
    "station" that is a department, the town or nowhere."""
    intake = stack["intake"].base_url
    stations = {o.code for o in ORGS if o.kind.value == "station"}
    findings = []
    opened: list[str] = []
    with httpx.Client(timeout=60) as client:
        for identity in identities(module_db_url):
            for path, body in MATTER_BODIES.items():
                response = client.post(
                    intake + path,
                    json=body,
                    headers={**_headers(identity), "Idempotency-Key": uuid.uuid4().hex},
                )
                where = f"{identity.role.value}@{identity.org} POST {path}"
                if response.status_code >= 500:
                    findings.append(f"{where}: {response.status_code}")
                elif response.status_code < 300:
                    answer = response.json()
                    station = answer.get("station")
                    opened.append(f"{identity.org}:{station}:{answer.get('case_number')}")
                    if not identity.valid or identity.org not in stations:
                        findings.append(f"{where}: opened by a non-station identity")
                    elif station is not None and station != identity.org:
                        findings.append(f"{where}: opened at {station}")
                    number = answer.get("case_number") or ""
                    if number.startswith(("XF-", "HC-")) or (
                        identity.org != VICTIM and MARKERS["station_case"] in response.text
                    ):
                        findings.append(f"{where}: answered {number}")
                elif not identity.valid and response.status_code not in (401, 403):
                    findings.append(f"{where}: {response.status_code} for a misfit")
    assert not findings, _summary(findings)
    # Longmen's own staff did open things, at Longmen, numbered LM-…
    assert len(opened) >= len(MATTER_BODIES), opened
    assert all(o.startswith("longmen_station:longmen_station:") for o in opened), opened
    assert any(o.endswith(":None") is False and ":LM-" in o for o in opened), opened
    # Longmen's own staff did open things, at Longmen, numbered LM-…
    assert len(opened) >= len(MATTER_BODIES), opened
    assert all(o.startswith("longmen_station:longmen_station:") for o in opened), opened
    assert any(":LM-" in o for o in opened), opened
