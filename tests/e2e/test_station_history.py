"""The seed's figures since the Xuefeng station opened (2021-11-14), pushed through the
public APIs of ``caseflow up`` as a new user would — paper records entered now, every act
dated when it happened under the special permission ``backfill`` — come out of the
statistics report for that period as the article of 2022-02-23 states them:

    已累计接待群众700多人，办理具体工作事项478件，其中……便民服务事项422件，调解矛盾纠纷
    40起，法律宣传10次，救助群众4人，协助破获案件3起。

(700+ people received; 478 matters: 422 convenience services, 40 disputes mediated,
10 legal-publicity sessions, 4 people rescued, 3 police cases solved.) 422 + 40 + 10 = 472
leaves 6 matters for 4 people rescued and 3 cases solved: here 3 assistance matters (one
for a couple) and 3 police assistance matters, each solved.

The tokens come from ``caseflow token``; the figures from ``GET /reports/statistics``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.devtools import servers as devservers
from shared.devtools import waiting
from shared.domain.catalogue import ServiceItem, load_catalogue
from shared.domain.workcalendar import CHINA_TZ, load_calendar
from tests.services import CASEFLOW, SANDBOX, SERVICES, caseflow_up, stop_caseflow_up

OPENED, REPORTED = date(2021, 11, 14), date(2022, 2, 23)
STATION = "xuefeng_station"
CALENDAR = load_calendar()
CATALOGUE = load_catalogue()
APPLICATIONS, MEDIATIONS, SESSIONS = 422, 40, 10
RESCUES = (2, 1, 1)  # people helped by each assistance matter: 4 people in 3 matters
POLICE = 3
VISITS, REPEATED = 712, 12  # 712 visits; 12 of the people came a second time
WORKERS = 4


@dataclass
class Stack:
    intake: str
    processing: str
    tokens: dict[str, str]
    http: httpx.Client

    def post(self, base: str, path: str, who: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(
            f"{base}{path}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.tokens[who]}",
                "Idempotency-Key": uuid.uuid4().hex,
            },
        )
        assert answer.status_code in (200, 201), f"{path} as {who}: {answer.text}"
        result: dict[str, Any] = answer.json()
        return result

    def act(self, case_id: str, action: str, who: str, when: datetime, **body: Any) -> str:
        answer = self.post(
            self.processing,
            f"/cases/{case_id}/actions/{action}",
            who,
            {**body, "occurred_at": when.isoformat()},
        )
        return str(answer["status"])

    def report(self, start: date, end: date) -> dict[str, Any]:
        answer = self.http.get(
            f"{self.processing}/reports/statistics",
            params={"station": STATION, "from": start.isoformat(), "to": end.isoformat()},
            headers={"Authorization": f"Bearer {self.tokens['zhao.head']}"},
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


def token(data: Path, user: str, role: str, org: str) -> str:
    """``caseflow token`` with the permission to enter paper records (补录)."""
    command = [
        CASEFLOW, "token", "--user", user, "--role", role, "--org", org,
        "--key-dir", str(data / "keys"), "--permission", "backfill",
    ]  # fmt: skip
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("history")
    data = folder / "var"
    ports = {n: devservers.free_port() for n in (*SERVICES, "console", "nats", *SANDBOX)}
    proc = caseflow_up(data, ports, folder / "up.log")
    try:
        tokens = {
            "li.clerk": token(data, "li.clerk", "window_clerk", STATION),
            "wang.reviewer": token(data, "wang.reviewer", "reviewer", STATION),
            "zhao.head": token(data, "zhao.head", "station_head", STATION),
        }
        for org in sorted({i.forward_to for i in CATALOGUE.published() if i.forward_to}):
            tokens[f"officer.{org}"] = token(data, f"officer.{org}", "department_officer", org)
        with httpx.Client(timeout=60) as http:
            yield Stack(
                f"http://127.0.0.1:{ports['intake']}",
                f"http://127.0.0.1:{ports['processing']}",
                tokens,
                http,
            )
    finally:
        assert stop_caseflow_up(proc) == []


def working_days(first: date, last: date) -> list[date]:
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [day for day in days if CALENDAR.is_working_day(day)]


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), CHINA_TZ)


def after(day: date, working: int) -> date:
    return CALENDAR.add_working_days(day, working)


def application(stack: Stack, number: int, item: ServiceItem, day: date) -> None:
    """Handed in complete at 9:xx; reviewed that day; decided the next working day at the
    station, or forwarded that day and decided by the department three working days later;
    delivered the working day after the decision."""
    handed_in = at(day, 9, number % 60)
    case = stack.post(
        stack.intake,
        "/cases",
        "li.clerk",
        {
            "item_code": item.code,
            "applicant": {
                "name": "薛秀英",
                "phone": "13891234567",
                "id_number": "61058119680312002X",
                "village": "gongyu",
            },
            "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
            "occurred_at": handed_in.isoformat(),
        },
    )
    assert case["status"] == "accepted", case
    case_id = case["case_id"]
    stack.act(case_id, "start_review", "wang.reviewer", at(day, 10, number % 60))
    stack.act(
        case_id, "complete_review", "wang.reviewer", at(day, 11, number % 60),
        recommendation="approve", opinion="材料齐全，符合条件",
    )  # fmt: skip
    if item.forward_to:
        stack.act(case_id, "forward", "wang.reviewer", at(day, 14, number % 60))
        decided = after(day, 3)
        decider = f"officer.{item.forward_to}"
    else:
        decided, decider = after(day, 1), "zhao.head"
    stack.act(case_id, "approve", decider, at(decided, 10, number % 60))
    status = stack.act(
        case_id, "deliver", "li.clerk", at(after(decided, 1), 10, number % 60), method="in_person"
    )
    assert status == "delivered"


def matter(stack: Stack, kind: str, number: int, day: date) -> None:
    opened = at(day, 14, number % 60)
    steps: list[tuple[str, dict[str, Any]]]
    if kind == "mediation":
        body: dict[str, Any] = {
            "title": "宅基地边界纠纷", "parties": ["薛建国", "王德明"], "summary": "相邻界址争议",
        }  # fmt: skip
        steps = [
            ("hold_session", {"notes": "双方到场陈述"}),
            ("conclude", {"outcome": "agreement", "summary": "达成调解协议"}),
        ]
    elif kind == "legal_publicity":
        held = after(day, 2)
        body = {"topic": "《民法典》进农村", "planned_on": held.isoformat()}
        steps = [("hold", {"attendees": 40, "held_on": held.isoformat()})]
    elif kind == "assistance":
        body = {
            "person_name": "薛老汉", "need": "房屋漏雨，需要修缮", "people_helped": RESCUES[number],
        }  # fmt: skip
        steps = [("provide", {"description": "组织村民修缮房屋，送去米面油"})]
    else:
        body = {"police_unit": "韩城市公安局板桥派出所", "summary": "协助调查农机具被盗案"}
        steps = [("provide", {"description": "提供监控及目击线索", "case_solved": True})]
    case = stack.post(
        stack.intake, f"/matters/{kind}", "zhao.head", {**body, "occurred_at": opened.isoformat()}
    )
    for offset, (action, step) in enumerate(steps, start=1):
        stack.act(case["case_id"], action, "zhao.head", at(after(day, 2 + offset), 15), **step)


def visit(stack: Stack, number: int, day: date) -> None:
    person = number % (VISITS - REPEATED)  # the last visits are second visits
    stack.post(
        stack.intake,
        "/reception",
        "li.clerk",
        {
            "visitor_name": f"村民{person:03d}",
            "village": ("xuefeng", "gongyu", "xiangshan", "wangcun")[person % 4],
            "purpose": ("enquiry", "application", "legal_advice")[number % 3],
            "occurred_at": at(day, 8 + number % 9, number % 60).isoformat(),
        },
    )


def test_the_seeds_figures_since_the_station_opened(stack: Stack) -> None:
    # Hand-ins up to 15 February leave room for every later act before the 23rd.
    days = working_days(OPENED, date(2022, 2, 15))
    items = CATALOGUE.published()
    work: list[Any] = [
        (application, n, items[n % len(items)], days[n % len(days)]) for n in range(APPLICATIONS)
    ]
    work += [(matter, "mediation", n, days[(n * 7) % len(days)]) for n in range(MEDIATIONS)]
    work += [(matter, "legal_publicity", n, days[n * 6]) for n in range(SESSIONS)]
    work += [(matter, "assistance", n, days[10 + n * 20]) for n in range(len(RESCUES))]
    work += [(matter, "police_assistance", n, days[5 + n * 20]) for n in range(POLICE)]
    # Visitors from the opening day (a Sunday: the ceremony) to the report's eve.
    visit_days = [OPENED, *working_days(OPENED, REPORTED - timedelta(days=1))]
    work += [(visit, n, visit_days[n % len(visit_days)]) for n in range(VISITS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        for done in pool.map(lambda job: job[0](stack, *job[1:]), work):
            assert done is None

    expected = {
        "matters_handled": 478, "people_helped": 4, "cases_solved": 3,
        "visits": VISITS, "distinct_people": VISITS - REPEATED,
    }  # fmt: skip

    def counted() -> dict[str, Any] | None:
        report = stack.report(OPENED, REPORTED)
        got = {key: report[key] for key in expected}
        done = report["incomplete"] is None and report["totals"]["delivered"] == APPLICATIONS
        return report if done and got == expected else None

    report = waiting.wait_until(counted, what="the seed's figures in the report", timeout=180)
    assert report is not None
    headline = {f["measure"]: f["value"] for f in report["headline"]}
    assert headline["people_received"] >= 700 and headline["distinct_people"] >= 700
    assert headline["matters_handled"] == 478
    assert headline["convenience_services"] == 422
    assert headline["mediations"] == 40
    assert headline["publicity_sessions"] == 10
    assert headline["people_helped"] == 4
    assert headline["cases_solved"] == 3
    kinds = {k["code"]: {f["measure"]: f["value"] for f in k["figures"]} for k in report["kinds"]}
    assert kinds["legal_publicity"]["completed_at_station"] == 10  # held, not only planned
    assert kinds["mediation"]["completed_at_station"] == 40
    assert kinds["police_assistance"] == {
        "received": 3, "completed_at_station": 3, "cases_solved": 3, "withdrawn": 0
    }  # fmt: skip
    # What happened is what is timed: every decision within the committed limit.
    totals = report["totals"]
    assert (totals["on_time_committed_rate"], totals["on_time_legal_rate"]) == (1.0, 1.0)
    assert totals["undated_decisions"] == 0
    station_items = sum(1 for n in range(APPLICATIONS) if not items[n % len(items)].forward_to)
    parts = {p["measure"]: p["value"] for p in report["completed_at_station"]["parts"]}
    assert parts == {
        "application": station_items, "mediation": 40, "legal_publicity": 10,
        "assistance": 3, "police_assistance": 3,
    }  # fmt: skip
    groups = {g["completion"]: g["subtotal"] for g in report["item_groups"]}
    assert groups["station"]["received"] + groups["forwarded"]["received"] == 422
    assert groups["forwarded"]["completed_upstream"] == 422 - station_items
    # Every act dated: hand-in and acceptance, review started and completed, forwarded,
    # decided, delivered; a matter opened and each of its steps.
    acts = 422 * 6 + (422 - station_items) + 40 * 3 + 10 * 2 + 6 * 2
    assert report["backfilled"] == acts + VISITS
    assert [n["code"] for n in report["notes"]] == ["backfilled"]

    # Before the station opened: nothing, and the report says why.
    before = stack.report(date(2021, 11, 1), date(2021, 11, 13))
    assert before["matters_handled"] == 0
    assert [n["code"] for n in before["notes"]] == ["before_opening"]
    assert "2021-11-14" in before["notes"][0]["zh"]
