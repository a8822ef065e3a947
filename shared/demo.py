"""``caseflow demo``: about a month of a station's life, loaded through the real APIs.

Staff sign in with tokens from the local key; visitors are logged, applications handed in
(most complete, some needing corrections, a few refused), reviewed, decided at the
station or forwarded to a department and answered, delivered and rated; disputes are
mediated, legal-publicity sessions held, people helped, the police assisted. Hand-in
times lie in the past (paper forms entered late), so older cases are further along and
some are late enough to carry yellow and red warnings.

Everything is seeded: the same ``--seed`` gives the same people and cases, and the
Idempotency-Keys derive from it, so running the demo again adds nothing.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.auth import Role, SigningKey, Staff, issue_token
from shared.catalogue import ServiceItem, load_catalogue
from shared.identity import id_check_digit
from shared.workcalendar import CHINA_TZ, load_calendar

SURNAMES = "王李张刘陈杨赵黄周吴薛韩高马孙郭"
GIVEN = [
    "秀英", "建国", "桂兰", "志强", "玉梅", "海燕", "德明", "春花",
    "国庆", "丽娟", "永福", "小军", "淑珍", "红霞", "卫东", "金花",
]  # fmt: skip
VILLAGES = ["gongyu", "xuefeng", "xiangshan", "wangcun"]
REGION = "610581"
"""The division code of Hancheng city (韩城市) in ID numbers."""

ROSTER: dict[str, tuple[Role, str, str]] = {
    "li.clerk": (Role.window_clerk, "xuefeng_station", "李娜"),
    "zhou.clerk": (Role.window_clerk, "xuefeng_station", "周敏"),
    "wang.reviewer": (Role.reviewer, "xuefeng_station", "王强"),
    "zhao.head": (Role.station_head, "xuefeng_station", "赵建华"),
    "chen.clerk": (Role.window_clerk, "longmen_station", "陈静"),
    "chen.reviewer": (Role.reviewer, "longmen_station", "陈伟"),
    "gao.auditor": (Role.auditor, "hc_justice", "高明"),
    **{
        f"officer.{org}": (Role.department_officer, org, "科员")
        for org in (
            "hc_hrss",
            "hc_medical_security",
            "hc_health",
            "hc_civil_affairs",
            "hc_forestry",
            "hc_agriculture",
            "hc_public_security",
            "banqiao_town",
        )
    },
}
"""The demo's staff: user → role, organisation, name."""


@dataclasses.dataclass
class Tally:
    """What the demo did."""

    done: Counter[str] = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)


class DemoError(RuntimeError):
    """The services answered something the demo can't go on from."""


class Station:
    """The demo's staff at work against running services."""

    def __init__(
        self,
        intake_url: str,
        processing_url: str,
        key_dir: Path,
        seed: int,
        client: httpx.Client | None = None,
    ) -> None:
        self.intake = intake_url.rstrip("/")
        self.processing = processing_url.rstrip("/")
        key = SigningKey.load(key_dir)
        self.tokens = {
            user: issue_token(
                Staff(user=user, role=role, org=org, name=name), key, ttl=timedelta(days=7)
            )
            for user, (role, org, name) in ROSTER.items()
        }
        self.seed = seed
        self.http = client or httpx.Client(timeout=30)
        self.tally = Tally()
        self._keys = 0

    def key(self, *parts: object) -> str:
        """An Idempotency-Key that the same seed and step always give."""
        return "demo-" + "-".join(str(p) for p in (self.seed, *parts))

    def headers(self, user: str, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}", "Idempotency-Key": key}

    def post(self, base: str, path: str, user: str, key: str, body: Any) -> dict[str, Any]:
        response = self.http.post(f"{base}{path}", json=body, headers=self.headers(user, key))
        if response.status_code >= 500 or response.status_code in (401, 422):
            raise DemoError(f"POST {path} as {user}: {response.status_code} {response.text}")
        if response.status_code >= 400:
            self.tally.problems.append(f"{path}: {response.json().get('detail')}")
            return {}
        answer: dict[str, Any] = response.json()
        return answer

    def act(self, case_id: str, action: str, user: str, key: str, body: Any = None) -> str:
        """Take an action; the case's status after it ('' if refused or not allowed)."""
        answer = self.post(
            self.processing, f"/cases/{case_id}/actions/{action}", user, key, body or {}
        )
        if answer:
            self.tally.done[action] += 1
        return str(answer.get("status", ""))


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    phone: str
    id_number: str
    village: str


def people(rng: random.Random) -> Iterator[Person]:
    """Villagers with valid ID numbers (GB 11643) and mobile numbers."""
    while True:
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
        first17 = f"{REGION}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
        yield Person(
            name=rng.choice(SURNAMES) + rng.choice(GIVEN),
            phone=f"1{rng.choice('35789')}{rng.randrange(0, 10**9):09d}",
            id_number=first17 + id_check_digit(first17),
            village=rng.choice(VILLAGES),
        )


def working_moments(days: int, rng: random.Random) -> list[datetime]:
    """Office hours on the working days of the last ``days`` days, oldest first."""
    calendar = load_calendar()
    today = datetime.now(CHINA_TZ).date()
    moments = []
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        if calendar.is_working_day(day):
            minute = rng.randrange(8 * 60 + 30, 17 * 60)
            moments.append(datetime.combine(day, time(minute // 60, minute % 60), CHINA_TZ))
    return moments


def run_demo(
    station: Station,
    *,
    days: int = 30,
    scale: float = 1.0,
    progress: Callable[[str], None] = lambda _: None,
) -> Tally:
    """Load ``days`` of activity at the Xuefeng station (and a little at Longmen)."""
    rng = random.Random(station.seed)  # noqa: S311 -- made-up villagers, not secrets
    catalogue = load_catalogue()
    items = catalogue.published()
    # Convenience services dominate (422 of 478 matters in the story); pensions, medical
    # insurance and the allowances the story names come up most often.
    weights = [
        6 if i.code in ("pension_enrolment", "medical_insurance_enrolment") else 3
        if i.code in ("minimum_living_allowance", "logging_permit", "funeral_subsidy",
                      "birth_certificate", "pension_benefit_claim") else 1
        for i in items
    ]  # fmt: skip
    moments = working_moments(days, rng)
    per_day = max(1, round(2 * scale))
    for n, moment in enumerate(m for m in moments for _ in range(per_day)):
        # Each visit draws from its own generator: what the services answered for one
        # (a step refused, a step replayed) never changes the next one's people or keys.
        rng = random.Random(f"{station.seed}:{n}")  # noqa: S311
        crowd = people(rng)
        person = next(crowd)
        age = (datetime.now(CHINA_TZ) - moment).days
        progress(f"{moment:%m-%d} {person.name}")
        visit = {
            "visitor_name": person.name,
            "village": person.village,
            "purpose": "application",
            "occurred_at": moment.isoformat(),
        }
        visited = station.post(
            station.intake, "/reception", "li.clerk", station.key("visit", n), visit
        )
        station.tally.done["visit"] += bool(visited)
        item = rng.choices(items, weights)[0]
        enquirer = next(crowd).name if rng.random() < 0.3 * scale else None
        if enquirer:  # someone who only asks
            enquiry = {**visit, "visitor_name": enquirer}
            enquiry["purpose"] = rng.choice(["enquiry", "legal_advice", "other"])
            station.tally.done["visit"] += bool(
                station.post(
                    station.intake, "/reception", "zhou.clerk", station.key("ask", n), enquiry
                )
            )
        # Last: how far the case gets depends on what the services answer.
        application(station, rng, n, person, item, moment, age, visited.get("visit_id"))
    rng = random.Random(f"{station.seed}:matters")  # noqa: S311
    matters(station, rng, moments, people(rng), scale)
    longmen(station, rng, people(rng), moments)
    return station.tally


def application(
    station: Station,
    rng: random.Random,
    n: int,
    person: Person,
    item: ServiceItem,
    moment: datetime,
    age: int,
    visit_id: str | None,
) -> None:
    """One application, taken as far as its age makes plausible."""
    roll = rng.random()
    materials = [{"code": m.code, "original_checked": True} for m in item.materials]
    if roll < 0.15:  # forgot something: the one-time notice
        materials = materials[: max(1, len(materials) - rng.randrange(1, 3))]
    body: dict[str, Any] = {
        "item_code": item.code,
        "applicant": {
            "name": person.name,
            "phone": person.phone,
            "id_number": person.id_number,
            "village": person.village,
        },
        "materials": materials,
        "notify_by": ["sms"],
        "occurred_at": moment.isoformat(),
    }
    if visit_id:
        body["reception_id"] = visit_id
    case = station.post(station.intake, "/cases", "li.clerk", station.key("case", n), body)
    if not case:
        return
    station.tally.done["application"] += 1
    case_id, status = case["case_id"], case["status"]

    def key(step: str) -> str:
        return station.key("case", n, step)

    if status == "correction_requested":
        if age < 3 or rng.random() < 0.3:
            return  # still waiting for the applicant
        listed = [m["code"] for m in case["receipt"]["missing"]]
        station.act(case_id, "submit_correction", "li.clerk", key("corr"), {"materials": listed})
        status = station.act(case_id, "accept", "li.clerk", key("accept"))
    if roll > 0.97:
        station.act(
            case_id,
            "withdraw",
            "li.clerk",
            key("withdraw"),
            {"reason": "申请人另行办理 / the applicant will apply elsewhere"},
        )
        return
    if status != "accepted" or age < 1:
        return
    station.act(case_id, "start_review", "wang.reviewer", key("review"))
    if age < 3 and rng.random() < 0.6:
        return
    approve = rng.random() > 0.08
    station.act(
        case_id,
        "complete_review",
        "wang.reviewer",
        key("reviewed"),
        {
            "recommendation": "approve" if approve else "reject",
            "opinion": "材料齐全，符合条件" if approve else "不符合申请条件",
        },
    )
    decider = "zhao.head"
    if item.forward_to:
        station.act(case_id, "forward", "wang.reviewer", key("forward"))
        if age < 8 and rng.random() < 0.5:
            return  # the department has not answered yet
        decider = f"officer.{item.forward_to}"
    if approve:
        decided = {"decision_number": f"{item.code.upper()[:6]}-{n:04d}"}
        station.act(case_id, "approve", decider, key("decide"), decided)
    else:
        reasons = {"reasons": ["家庭收入超过当地保障标准 / income above the threshold"]}
        station.act(case_id, "reject", decider, key("decide"), reasons)
    if age < 5 and rng.random() < 0.5:
        return
    station.act(case_id, "deliver", "li.clerk", key("deliver"), {"method": "in_person"})
    score = rng.choices([5, 4, 3, 2, 1], [70, 18, 7, 3, 2])[0]
    station.act(case_id, "rate", "li.clerk", key("rate"), {"score": score})
    if score <= 2:
        notes = {"notes": "已电话回访，解释办理流程并致歉 / called back, explained, apologised"}
        station.act(case_id, "complete_callback", "zhao.head", key("callback"), notes)
    station.act(case_id, "close", "li.clerk", key("close"))


def matters(
    station: Station,
    rng: random.Random,
    moments: list[datetime],
    crowd: Iterator[Person],
    scale: float,
) -> None:
    """Mediations, legal publicity, assistance and police assistance, in the story's
    proportions (40, 10, 4 and 3 against 422 convenience services)."""
    counts = {
        "mediation": max(1, round(3 * scale)),
        "legal_publicity": max(1, round(1 * scale)),
        "assistance": max(1, round(0.5 * scale)),
        "police_assistance": max(1, round(0.4 * scale)),
    }
    disputes = ["宅基地边界纠纷", "邻里排水纠纷", "土地承包纠纷", "赡养老人纠纷", "林地界址纠纷"]
    topics = ["《民法典》婚姻家庭编", "防范电信网络诈骗", "农村土地承包法", "未成年人保护法"]
    for kind, count in counts.items():
        for i in range(count):
            moment = rng.choice(moments)
            village = rng.choice(VILLAGES)
            prefix = (kind, i)
            opening: dict[str, Any] = {"occurred_at": moment.isoformat()}
            steps: list[tuple[str, dict[str, Any]]]
            if kind == "mediation":
                a, b = next(crowd).name, next(crowd).name
                opening |= {
                    "title": rng.choice(disputes),
                    "parties": [a, b],
                    "village": village,
                    "summary": f"{a}与{b}发生争执，申请调解",
                }
                steps = [
                    ("hold_session", {"notes": "双方到场陈述，初步沟通"}),
                    ("conclude", {"outcome": "agreement", "summary": "双方达成调解协议"}),
                    ("close", {}),
                ]
            elif kind == "legal_publicity":
                opening |= {
                    "topic": rng.choice(topics),
                    "village": village,
                    "planned_on": (moment.date() + timedelta(days=3)).isoformat(),
                }
                steps = [("hold", {"attendees": rng.randrange(20, 80)}), ("close", {})]
            elif kind == "assistance":
                opening |= {
                    "person_name": next(crowd).name,
                    "village": village,
                    "need": "独居老人行动不便，需要帮扶",
                }
                steps = [("provide", {"description": "上门送去生活用品并联系村医"}), ("close", {})]
            else:
                opening |= {
                    "police_unit": "板桥派出所警务室",
                    "summary": "协助排查村内可疑人员线索",
                }
                steps = [
                    ("provide", {"description": "提供线索协助破案", "case_solved": True}),
                    ("close", {}),
                ]
            case = station.post(
                station.intake, f"/matters/{kind}", "zhao.head", station.key(*prefix, 0), opening
            )
            if not case:
                continue
            station.tally.done[kind] += 1
            for step, (action, body) in enumerate(steps, 1):
                if rng.random() < 0.15:
                    break  # still open
                station.act(case["case_id"], action, "zhao.head", station.key(*prefix, step), body)


def longmen(
    station: Station, rng: random.Random, crowd: Iterator[Person], moments: list[datetime]
) -> None:
    """A little activity at the second station, under its narrower delegations."""
    catalogue = load_catalogue()
    for i, code in enumerate(("pension_enrolment", "medical_insurance_enrolment")):
        person = next(crowd)
        item = catalogue.get(code)
        body = {
            "item_code": code,
            "applicant": {
                "name": person.name,
                "phone": person.phone,
                "id_number": person.id_number,
            },
            "materials": [{"code": m.code, "original_checked": True} for m in item.materials],
            "occurred_at": rng.choice(moments).isoformat(),
        }
        case = station.post(station.intake, "/cases", "chen.clerk", station.key("lm", i), body)
        station.tally.done["application"] += bool(case)


def summary(station: Station) -> list[tuple[str, str, int]]:
    """(case kind, status, count) over every case, as the city's auditor sees them."""
    response = station.http.get(
        f"{station.processing}/cases",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {station.tokens['gao.auditor']}"},
    )
    response.raise_for_status()
    counts = Counter((c["case_kind"], c["status"]) for c in response.json()["cases"])
    return sorted((kind, status, n) for (kind, status), n in counts.items())


def write_tokens(station: Station, path: Path) -> None:
    """The demo staff's tokens, for curl: ``{"li.clerk": {"role": …, "token": …}}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        user: {"role": role.value, "org": org, "name": name, "token": station.tokens[user]}
        for user, (role, org, name) in ROSTER.items()
    }
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), "utf-8")
    path.chmod(0o600)
