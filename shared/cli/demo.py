"""``caseflow demo``: about a month of a station's life, loaded through the real APIs.

The rates are the Xuefeng station's own (the story in ``/work/shared/seed``): in its
first hundred days (14 Nov 2021 – 23 Feb 2022, about 65 working days) it received over
700 visitors and handled 478 matters — 422 convenience services, 40 mediations, 10
legal-publicity sessions, 4 people helped and 3 police cases. Per working day that is
about 11 visitors, 6.5 applications and 0.6 mediations; ``--scale`` multiplies them.

Staff sign in with tokens signed by the local key. Visitors are logged; applications
are handed in (most complete, some needing the one-time correction notice, a few
refused), reviewed, decided at the station or forwarded to a department and answered,
delivered and rated (a poor rating opens a call-back for the station head); disputes
are mediated, legal-publicity sessions held, people helped, the police assisted. The
first applications follow a fixed set of paths (closed, corrected, refused, forwarded
and answered, rejected, withdrawn, suspended, waiting…) so that every state shows up at
any scale; the rest take a random path, further along the older they are.

Every act is stamped at its simulated moment (entered later from paper, 补录, with the
special permission ``backfill``): a case handed in on a Monday is reviewed, decided and
delivered on the working days after it, in office hours, so its clock, the warnings and
the on-time figures are those of the month simulated. An act whose moment is still to come
is not taken yet; running the demo again later takes it then. Everything is seeded per day
and per visit: the same ``--seed`` gives the same people, cases and moments, and every
Idempotency-Key and the member of staff who sends it derive from it (keys belong to their
sender), so running the demo again adds nothing it added before.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time as clock
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.adapters.auth import Role, SignedInStaff, SigningKey, check_role_fits_org, issue_token
from shared.adapters.delegations import load_seed_delegations
from shared.domain.catalogue import Catalogue, ServiceItem, load_catalogue
from shared.domain.identity import id_check_digit
from shared.domain.moments import BACKFILL_PERMISSION
from shared.domain.orgs import load_organisations
from shared.domain.roster import DEMO_STAFF
from shared.domain.workcalendar import CHINA_TZ, OutsideCalendar, WorkingCalendar, load_calendar

# -- The station's staff ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of the demo's staff."""

    user: str
    role: Role
    org: str
    name: str


ROSTER: tuple[Member, ...] = tuple(Member(m.user, Role(m.role), m.org, m.name) for m in DEMO_STAFF)
"""The demo's staff. Department officers are ``officer.<org>``."""

STATION_STAFF: dict[str, dict[str, tuple[str, ...]]] = {
    "xuefeng_station": {
        "clerks": ("li.clerk", "zhou.clerk"),
        "reviewers": ("wang.reviewer", "xue.reviewer"),
        "head": ("zhao.head",),
    },
    "longmen_station": {
        "clerks": ("chen.clerk",),
        "reviewers": ("chen.reviewer",),
        "head": ("feng.head",),
    },
}
AUDITOR = "gao.auditor"

# -- How busy the station is ------------------------------------------------------------

SCALES = {"small": 0.25, "normal": 1.0, "busy": 2.0}
"""Named ``--scale`` values; a number works too."""

PER_WORKING_DAY = {
    "application": 6.5,  # 422 convenience services in ~65 working days
    "enquiry": 3.6,  # the other visitors who only asked (700+ visitors in all)
    "mediation": 0.62,  # 40
    "legal_publicity": 0.15,  # 10
    "assistance": 0.06,  # 4
    "police_assistance": 0.05,  # 3
    "longmen": 0.5,  # the second station, newer and smaller
}
"""The Xuefeng station's activity per working day at ``--scale 1`` (from the story)."""


def parse_scale(text: str) -> float:
    """``small``, ``normal``, ``busy`` or a positive number up to 20."""
    if text in SCALES:
        return SCALES[text]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"use {', '.join(SCALES)} or a number, not {text!r}") from None
    if not 0 < value <= 20:
        raise ValueError(f"a scale must lie in (0, 20], not {value}")
    return value


# -- Villagers --------------------------------------------------------------------------

# Common surnames in Hancheng (薛 as in Xuefeng, 司马 as in Sima Qian, a son of Hancheng).
SURNAMES = (
    ("薛", 9), ("王", 8), ("张", 7), ("程", 6), ("高", 5), ("吉", 4), ("李", 4), ("杨", 3),
    ("解", 3), ("卫", 3), ("党", 2), ("贾", 2), ("刘", 2), ("师", 1), ("孙", 1), ("司马", 1),
)  # fmt: skip
GIVEN = {
    ("M", "older"): ("建国", "德明", "永福", "卫东", "国庆", "建军", "志强", "振华", "文斌",
                     "长顺", "满仓", "天喜"),
    ("F", "older"): ("秀英", "桂兰", "玉梅", "淑珍", "春花", "金花", "秀兰", "凤英", "彩霞",
                     "翠萍", "玉兰", "桂芳"),
    ("M", "younger"): ("浩然", "子轩", "俊杰", "鹏飞", "宇航", "磊", "涛", "博文", "嘉豪",
                       "晨阳", "锦程", "亮"),
    ("F", "younger"): ("欣怡", "雨涵", "婷婷", "佳琪", "丽娟", "静", "敏", "晓燕", "梦瑶",
                       "思雨", "海燕", "丹"),
}  # fmt: skip
"""Given names by sex and generation (born before 1975 or later)."""
VILLAGES: dict[str, int] = {"xuefeng": 5, "gongyu": 4, "xiangshan": 3, "wangcun": 3}
"""The four villages the Xuefeng station serves, and how many come from each."""
LONGMEN_VILLAGES = ("longmen", "xiayu")
REGION = "610581"
"""The division code of Hancheng city (韩城市) in ID numbers."""
MOBILE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
    "155", "156", "157", "158", "159", "166", "173", "177", "180", "181", "182", "183", "185",
    "186", "187", "188", "189", "191", "199",
)  # fmt: skip
AGES = {  # who comes for what, by age
    "pension_benefit_claim": (60, 80),
    "elderly_allowance": (80, 95),
    "birth_certificate": (22, 38),
    "maternal_health_handbook": (21, 38),
    "birth_registration_service": (22, 38),
    "newborn_household_registration": (22, 38),
    "family_planning_reward": (60, 75),
    "funeral_subsidy": (35, 70),
    "unemployment_registration": (20, 55),
}


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    phone: str
    id_number: str
    village: str


def person(
    rng: random.Random, on: date, ages: tuple[int, int] = (18, 85), village: str = ""
) -> Person:
    """A villager ``ages`` old ``on`` that day, with a valid ID number (GB 11643: its 17th
    digit odd for men, even for women) and a mobile number."""
    born = on - timedelta(days=rng.randrange(ages[0] * 365 + 1, ages[1] * 365 + 360))
    sex = rng.choice("MF")
    order = rng.randrange(0, 50) * 2 + (1 if sex == "M" else 0) + 100 * rng.randrange(0, 10)
    first17 = f"{REGION}{born:%Y%m%d}{order:03d}"
    surnames, weights = zip(*SURNAMES, strict=True)
    generation = "older" if born.year < 1975 else "younger"
    if not village:
        village = rng.choices(list(VILLAGES), list(VILLAGES.values()))[0]
    return Person(
        name=rng.choices(surnames, weights)[0] + rng.choice(GIVEN[sex, generation]),
        phone=rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(0, 10**8):08d}",
        id_number=first17 + id_check_digit(first17),
        village=village,
    )


# -- Talking to the services ------------------------------------------------------------


class DemoError(RuntimeError):
    """The services answered something the demo can't go on from."""


@dataclasses.dataclass
class Tally:
    """What the demo did: records it added, records already there, actions taken."""

    added: Counter[str] = dataclasses.field(default_factory=Counter)
    present: Counter[str] = dataclasses.field(default_factory=Counter)
    actions: Counter[str] = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)
    versions: dict[str, int] = dataclasses.field(default_factory=dict)
    """Each case the demo opened → the version its last answer showed."""


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
        self.signing_key = SigningKey.load(key_dir)
        organisations = load_organisations()
        self.tokens: dict[str, str] = {}
        self.backfill_tokens: dict[str, str] = {}
        """The same staff with the special permission ``backfill``, for the acts the demo
        dates at their simulated moment (the tokens written for people to try carry none)."""
        backfill = organisations.special_permissions[BACKFILL_PERMISSION]
        for member in ROSTER:
            check_role_fits_org(member.role, organisations.get(member.org))
            staff = SignedInStaff(
                user=member.user, role=member.role, org=member.org, name=member.name
            )
            self.tokens[member.user] = issue_token(staff, self.signing_key, ttl=timedelta(days=7))
            if member.role.value in backfill.roles:
                dating = dataclasses.replace(staff, permissions=frozenset({BACKFILL_PERMISSION}))
                self.backfill_tokens[member.user] = issue_token(
                    dating, self.signing_key, ttl=timedelta(days=7)
                )
        self.seed = seed
        self.http = client or httpx.Client(timeout=30)
        self.tally = Tally()

    def key(self, *parts: object) -> str:
        """An Idempotency-Key that the same seed and step always give."""
        return "demo-" + "-".join(str(p) for p in (self.seed, *parts))

    def headers(self, user: str, key: str | None = None, dated: bool = False) -> dict[str, str]:
        token = self.backfill_tokens[user] if dated else self.tokens[user]
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def post(self, base: str, path: str, user: str, key: str, body: Any) -> httpx.Response:
        """POST; 5xx, 401 and 422 stop the demo (a bug), 403 and 409 are noted and passed on
        (a step life would have refused too)."""
        dated = base == self.processing and isinstance(body, dict) and "occurred_at" in body
        response = self.http.post(
            f"{base}{path}", json=body, headers=self.headers(user, key, dated)
        )
        if response.status_code == 422 and _moved_past(response):
            # The case moved on without the demo since its last run (e.g. deemed accepted
            # by its timer): the act's simulated moment now lies before that. Life too.
            self.tally.problems.append(f"{path} as {user}: {response.json().get('detail')}")
            return response
        if response.status_code >= 500 or response.status_code in (401, 404, 422):
            raise DemoError(f"POST {path} as {user}: {response.status_code} {response.text}")
        if response.status_code >= 400:
            self.tally.problems.append(
                f"{path} as {user}: {response.status_code} {response.json().get('detail')}"
            )
        return response

    def open(self, base: str, path: str, user: str, key: str, body: Any, kind: str) -> Any:
        """Open a case or log a visit; its JSON, or None if refused."""
        response = self.post(base, path, user, key, body)
        if response.status_code >= 400:
            return None
        (self.tally.added if response.status_code == 201 else self.tally.present)[kind] += 1
        answer = response.json()
        if "case_id" in answer:
            self.tally.versions[answer["case_id"]] = int(answer["version"])
        return answer

    def act(self, case_id: str, action: str, user: str, key: str, body: Any = None) -> str:
        """Take an action; the case's status after it ('' if refused or not allowed)."""
        response = self.post(
            self.processing, f"/cases/{case_id}/actions/{action}", user, key, body or {}
        )
        if response.status_code >= 400:
            return ""
        answer = response.json()
        known, version = self.tally.versions.get(case_id, 0), int(answer["version"])
        if version > known:  # not a replay: that answers with the case as it stands
            self.tally.actions[action] += 1
            self.tally.versions[case_id] = version
        return str(answer["status"])

    def get(self, path: str, user: str, **params: Any) -> Any:
        response = self.http.get(
            f"{self.processing}{path}", params=params, headers=self.headers(user)
        )
        if response.status_code != 200:
            raise DemoError(f"GET {path} as {user}: {response.status_code} {response.text}")
        return response.json()

    def check_up(self) -> None:
        """Both services answer, and accept the demo's tokens."""
        for base in (self.intake, self.processing):
            try:
                ready = self.http.get(f"{base}/readyz", timeout=5)
            except httpx.HTTPError as err:
                raise DemoError(f"{base} does not answer ({err}); is `make up` running?") from None
            if ready.status_code != 200:
                raise DemoError(f"{base} is not ready: {ready.text}")
        self.get("/delegations", AUDITOR)  # 401 here: the stack trusts another key


def _moved_past(response: httpx.Response) -> bool:
    """A 422 that says only that the act's moment lies before the case's previous act."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return False
    return bool(errors) and all(e.get("field") == "occurred_at" for e in errors)


def ensure_delegations(station: Station) -> int:
    """Publish, through the delegations API as an officer of each delegating body, the
    packaged instruments the services don't have yet (``caseflow up`` and the compose
    ``migrate`` step publish them; other deployments may not). How many were published."""
    known = {d["code"] for d in station.get("/delegations", AUDITOR)["delegations"]}
    published = 0
    for instrument in load_seed_delegations():
        if instrument.code in known:
            continue
        officer = f"officer.{instrument.delegator}"
        if officer not in station.tokens:
            staff = SignedInStaff(
                user=officer, role=Role.department_officer, org=instrument.delegator
            )
            station.tokens[officer] = issue_token(staff, station.signing_key)
        response = station.post(
            station.processing,
            "/delegations",
            officer,
            f"demo-delegation-{instrument.code}",
            instrument.model_dump(mode="json"),
        )
        if response.status_code >= 400:
            raise DemoError(f"could not publish delegation {instrument.code}: {response.text}")
        published += 1
    return published


# -- What happens on which day ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Slot:
    """One visit or matter: its kind, day and place in that day."""

    kind: str
    day: date
    index: int
    seed: int

    def key(self, *parts: object) -> tuple[object, ...]:
        return (self.kind, f"{self.day:%Y%m%d}", self.index, *parts)

    def rng(self, stream: str = "") -> random.Random:
        """The slot's own random numbers; another ``stream`` (e.g. the moments of its acts)
        draws apart, so adding a draw to one leaves the other as it was."""
        tail = f":{stream}" if stream else ""
        return random.Random(f"{self.seed}:{self.day}:{self.kind}:{self.index}{tail}")  # noqa: S311

    def moment(self) -> datetime:
        """Office hours: 8:30–12:00 and 14:00–17:30, China time."""
        minute = self.rng().choice([*range(8 * 60 + 30, 12 * 60), *range(14 * 60, 17 * 60 + 30)])
        return datetime.combine(self.day, time(minute // 60, minute % 60), CHINA_TZ)


OPENS, CLOSES = time(8, 30), time(17, 30)
"""The station's office hours."""


class Timeline:
    """When each act on one case happened: one after the other, on working days in office
    hours, from the hand-in on. Drawn from the case's own seed, so the same case always
    has the same moments. Every moment lies before today (the days the demo loads): an act
    whose drawn moment would fall today or later happens sooner instead, in the time left
    before today, so a recent case still reaches the stage its course says."""

    def __init__(self, start: datetime, rng: random.Random, before: datetime) -> None:
        self.at = start
        self.rng = rng
        self.before = before

    def next(self, days: tuple[int, int] = (0, 0), minutes: tuple[int, int] = (5, 60)) -> datetime:
        """The next act's moment: ``days`` working days (a range) and ``minutes`` (a range)
        after the last one."""
        later, gap = self.rng.randint(*days), self.rng.randint(*minutes)
        moment = self.at + timedelta(minutes=gap)
        evening = moment.timetz().replace(tzinfo=None) > CLOSES
        if later or evening or moment.date() != self.at.date():
            day = _working_after(self.at.date(), max(later, 1))
            moment = datetime.combine(day, OPENS, CHINA_TZ) + timedelta(minutes=gap)
        if moment >= self.before:  # a quarter of the time left: never today, always later
            moment = self.at + max(timedelta(seconds=1), (self.before - self.at) / 4)
        self.at = moment
        return moment


def start_of_today() -> datetime:
    """Midnight at the station: the demo's acts all happened before it."""
    return datetime.combine(datetime.now(CHINA_TZ).date(), time(0), CHINA_TZ)


@functools.cache
def _calendar() -> WorkingCalendar:
    return load_calendar()


def _working_after(day: date, n: int) -> date:
    """The n-th working day after ``day`` (weekdays past the holiday calendar's end)."""
    try:
        return _calendar().add_working_days(day, n)
    except OutsideCalendar:
        while n:
            day += timedelta(days=1)
            n -= day.weekday() < 5
        return day


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def working_days(days: int, today: date) -> list[date]:
    """The working days among the ``days`` days before ``today``, oldest first (every day
    if none is a working day, e.g. ``--days 2`` on a Monday)."""
    calendar = _calendar()
    span = [today - timedelta(days=back) for back in range(days, 0, -1)]

    def working(day: date) -> bool:
        try:
            return calendar.is_working_day(day)
        except OutsideCalendar:
            return day.weekday() < 5

    return [d for d in span if working(d)] or span


def plan(seed: int, days: int, scale: float, today: date | None = None) -> list[Slot]:
    """Every visit and matter of the period, in order; at least one matter of each kind
    and enough applications for every path in :data:`SHOWCASE`."""
    open_days = working_days(days, today or datetime.now(CHINA_TZ).date())
    slots: list[Slot] = []
    for day in open_days:
        rng = random.Random(f"{seed}:{day}")  # noqa: S311 -- made-up villagers, not secrets
        for kind, rate in PER_WORKING_DAY.items():
            slots += [Slot(kind, day, i, seed) for i in range(_poisson(rng, rate * scale))]
    minimum = {"application": len(SHOWCASE), "longmen": 2}
    for kind in PER_WORKING_DAY:
        have = sum(s.kind == kind for s in slots)
        for n in range(have, minimum.get(kind, 1)):
            day = open_days[n % len(open_days)]
            index = sum(s.kind == kind and s.day == day for s in slots)
            slots.append(Slot(kind, day, index, seed))
    return sorted(slots, key=lambda s: (s.moment(), s.kind, s.index))


# -- Applications -----------------------------------------------------------------------

STAGES = ("accepted", "in_review", "reviewed", "decided", "delivered", "closed")
"""How far an application has got; for a forwarded item "reviewed" means forwarded and
waiting for the department's answer, "delivered" means delivered and rated."""


@dataclasses.dataclass(frozen=True)
class Course:
    """The path one application takes."""

    stage: str = "closed"
    incomplete: bool = False
    brought: bool = True
    """After the correction notice, the applicant brought what was missing."""
    refused: bool = False
    withdrawn: bool = False
    suspended: bool = False
    extended: bool = False
    approve: bool = True
    score: int = 5
    called_back: bool = True
    """After a poor rating, the station head has called the applicant back."""


SHOWCASE: tuple[tuple[str, Course], ...] = (
    ("pension_enrolment", Course()),
    ("medical_insurance_enrolment", Course(incomplete=True)),
    ("social_security_card", Course(refused=True)),
    ("logging_permit", Course()),
    ("medical_insurance_change", Course(score=1)),
    ("funeral_subsidy", Course(score=2, called_back=False)),
    ("minimum_living_allowance", Course(approve=False)),
    ("unemployment_registration", Course(stage="in_review", withdrawn=True)),
    ("pension_benefit_claim", Course(stage="in_review", suspended=True)),
    ("maternal_health_handbook", Course(stage="accepted", incomplete=True, brought=False)),
    ("birth_certificate", Course(stage="reviewed")),
    ("medical_referral_filing", Course(stage="in_review", extended=True)),
    ("birth_registration_service", Course(stage="accepted")),
    ("pension_enrolment", Course(stage="decided")),
)
"""The first applications' paths, so that every state shows at any scale: closed; closed
after a correction; refused; forwarded, answered, closed; poor ratings with the call-back
done and still open; rejected by the department; withdrawn; suspended; waiting for the
applicant's correction; waiting for the department; extended; new; approved, to deliver."""

# Convenience services dominate; pensions, medical insurance and the ones the story names
# come up most often.
WEIGHTS = {
    "pension_enrolment": 8, "medical_insurance_enrolment": 8, "medical_reimbursement": 4,
    "minimum_living_allowance": 4, "logging_permit": 3, "birth_certificate": 3,
    "funeral_subsidy": 3, "pension_benefit_claim": 3, "social_security_card": 3,
    "elderly_allowance": 2, "farmland_subsidy": 2, "id_card_renewal": 2,
    "ecological_forest_compensation": 2, "medical_insurance_change": 2,
}  # fmt: skip
LONGMEN_ITEMS = ("pension_enrolment", "pension_benefit_claim", "medical_insurance_enrolment")
"""Longmen's delegations: pensions in full, medical insurance only received (it is then
deemed accepted after five working days, as the law says)."""


def random_course(rng: random.Random, age: int) -> Course:
    """A path for an application handed in ``age`` days ago: older ones are further on."""
    if age <= 2:
        weights = (30, 30, 10, 10, 5, 15)
    elif age <= 7:
        weights = (5, 15, 10, 15, 10, 45)
    else:
        weights = (1, 4, 3, 5, 5, 82)
    stage = rng.choices(STAGES, weights)[0]
    reached = STAGES.index(stage)
    return Course(
        stage=stage,
        incomplete=rng.random() < 0.12,
        brought=age >= 2 and rng.random() < 0.75,
        refused=rng.random() < 0.03,
        withdrawn=reached <= 2 and rng.random() < 0.04,
        suspended=reached >= 1 and rng.random() < 0.04,
        extended=reached >= 1 and rng.random() < 0.02,
        approve=rng.random() > 0.08,
        score=rng.choices((5, 4, 3, 2, 1), (72, 17, 6, 3, 2))[0],
        called_back=rng.random() < 0.8,
    )


REFUSALS = (
    ("申请人户籍不在本站服务片区 / the applicant's household is registered outside the "
     "station's villages", "户籍所在地政务服务站 / the station of the applicant's village"),
    ("该事项已在市政务服务中心申请，不得重复受理 / already applied for at the city centre",
     "韩城市政务服务中心 / Hancheng government service centre"),
)  # fmt: skip
REJECTIONS = {
    "minimum_living_allowance": "家庭人均月收入高于当地低保标准 / household income above the "
    "local threshold",
    "logging_permit": "采伐地块位于禁伐区 / the plot lies in a no-logging zone",
}
ABBREVIATIONS = {
    "hc_hrss": "韩人社", "hc_medical_security": "韩医保", "hc_health": "韩卫健",
    "hc_civil_affairs": "韩民", "hc_forestry": "韩林采", "hc_agriculture": "韩农",
    "hc_public_security": "韩公", "banqiao_town": "板政",
}  # fmt: skip
COMMENTS = {
    5: "在家门口就办了，不用跑镇上 / done on my doorstep",
    4: "办得挺快 / quick",
    3: "等的时间有点长 / a bit of a wait",
    2: "材料要求没有一次说清楚，跑了两趟 / came twice: not told everything at once",
    1: "办了很久没有消息 / heard nothing for a long time",
}


def application(
    station: Station,
    slot: Slot,
    catalogue: Catalogue,
    showcase: tuple[str, Course] | None,
    org: str = "xuefeng_station",
) -> None:
    """A visitor hands in an application, which is taken along its path."""
    rng = slot.rng()
    staff = STATION_STAFF[org]
    clerk, reviewer, head = (
        rng.choice(staff["clerks"]),
        rng.choice(staff["reviewers"]),
        staff["head"][0],
    )
    moment = slot.moment()
    age = (datetime.now(CHINA_TZ) - moment).days
    if showcase is not None:
        item, course = catalogue.get(showcase[0]), showcase[1]
    else:
        codes = (
            LONGMEN_ITEMS if org == "longmen_station" else [i.code for i in catalogue.published()]
        )
        item = catalogue.get(rng.choices(codes, [WEIGHTS.get(c, 1) for c in codes])[0])
        course = random_course(rng, age)
    village = rng.choice(LONGMEN_VILLAGES) if org == "longmen_station" else ""
    applicant = person(rng, slot.day, AGES.get(item.code, (18, 85)), village)
    visit = station.open(
        station.intake,
        "/reception",
        clerk,
        station.key(*slot.key("visit")),
        {
            "visitor_name": applicant.name,
            "id_number": applicant.id_number,
            "village": applicant.village,
            "purpose": "application",
            "note": f"办理{item.name_zh}",
            "occurred_at": moment.isoformat(),
        },
        "visit",
    )
    case = station.open(
        station.intake,
        "/cases",
        clerk,
        station.key(*slot.key()),
        {
            "item_code": item.code,
            "applicant": dataclasses.asdict(applicant),
            "materials": _materials(rng, item, course.incomplete),
            "notify_by": ["sms"],
            "decide": "later" if course.refused else "now",
            "occurred_at": moment.isoformat(),
            **({"reception_id": visit["visit_id"]} if visit else {}),
        },
        "application",
    )
    if case is None:
        return
    case_id, status = case["case_id"], case["status"]
    timeline = Timeline(moment, slot.rng("moments"), start_of_today())
    committed = item.committed_limit_days

    def act(
        action: str,
        user: str,
        body: dict[str, Any] | None = None,
        days: tuple[int, int] = (0, 0),
        minutes: tuple[int, int] = (5, 60),
    ) -> str:
        """Take ``action`` at its moment on the case's timeline."""
        when = timeline.next(days, minutes)
        dated = {**(body or {}), "occurred_at": when.isoformat()}
        return station.act(case_id, action, user, station.key(*slot.key(action)), dated)

    if course.refused:
        reason, elsewhere = rng.choice(REFUSALS)
        act("refuse", clerk, {"reason": reason, "apply_instead_at": elsewhere}, minutes=(5, 30))
        return
    if status == "correction_requested":
        if not course.brought:
            return  # the applicant has yet to bring what the notice listed
        listed = [m["code"] for m in case["receipt"]["missing"]]
        act("submit_correction", clerk, {"materials": listed}, days=(1, 4))
        status = act("accept", clerk, minutes=(2, 10))
    if status != "accepted":
        return  # e.g. received only, under a receive-only delegation
    reached = STAGES.index(course.stage)
    if reached >= 1:
        act("start_review", reviewer, days=(0, 1))
        if course.extended and not item.forward_to:  # the head decides station items only
            act("extend", head, {"reason": "需调取外省参保缴费记录 / records from another "
                                           "province are needed"}, days=(0, 1))  # fmt: skip
        if course.suspended:
            act("suspend", reviewer, {"kind": "expert_review", "reason": "等待现场核查结果 / "
                                      "waiting for an on-site check"}, days=(0, 1))  # fmt: skip
            if reached >= 2:
                act("resume", reviewer, {"note": "核查完毕 / checked"}, days=(2, 6))
    if reached >= 2:
        act(
            "complete_review",
            reviewer,
            {
                "recommendation": "approve" if course.approve else "reject",
                "opinion": "材料齐全，符合条件 / complete and eligible"
                if course.approve
                else "不符合申请条件 / not eligible",
            },
            days=(0, max(0, committed // 3)),
            minutes=(20, 120),
        )
        if item.forward_to:
            act("forward", reviewer, {"note": f"转{item.forward_to}审批"}, minutes=(10, 60))
    if course.withdrawn:
        act("withdraw", clerk, {"reason": "申请人决定暂不办理 / the applicant changed their mind"},
            days=(0, 2))  # fmt: skip
        return
    if reached >= 3:
        decider = f"officer.{item.forward_to}" if item.forward_to else head
        number = f"{ABBREVIATIONS.get(item.forward_to or item.authority, '韩')}〔{moment.year}〕"
        number += f"{100 + rng.randrange(900)}号"
        # Most decisions within the committed limit; now and then one runs late.
        late = rng.random() < 0.1
        span = (1, max(2, item.legal_limit_days // 2)) if item.forward_to else (0, committed // 2)
        if late:
            span = (committed + 1, committed + 3)
        if course.approve:
            act("approve", decider, {"decision_number": number}, days=span)
        else:
            reason = REJECTIONS.get(item.code, "经审核不符合条件 / the conditions are not met")
            act("reject", decider, {"reasons": [reason], "decision_number": number}, days=span)
    if reached >= 4:
        method = rng.choices(["in_person", "by_proxy", "post"], [85, 8, 7])[0]
        act("deliver", clerk, {"method": method}, days=(0, 2))
        act("rate", clerk, {"score": course.score, "comment": COMMENTS[course.score]},
            minutes=(2, 10))  # fmt: skip
        if course.score <= 2 and course.called_back:
            notes = "站长电话回访，说明办理进度并致歉 / called back, explained, apologised"
            act("complete_callback", head, {"notes": notes}, days=(1, 3))
    if reached >= 5:
        act("close", clerk, days=(0, 1))


def _materials(rng: random.Random, item: ServiceItem, incomplete: bool) -> list[Any]:
    """What the applicant hands in: everything, or (incomplete) one or two missing or an
    original not brought."""
    materials: list[dict[str, Any]] = [
        {"code": m.code, "original_checked": True} for m in item.materials
    ]
    if not incomplete:
        return materials
    originals = [
        m for m, spec in zip(materials, item.materials, strict=True) if spec.original_required
    ]
    if originals and rng.random() < 0.3:
        rng.choice(originals)["original_checked"] = False
        return materials
    missing = rng.sample(range(1, len(materials)), min(len(materials) - 1, rng.randint(1, 2)))
    return [m for i, m in enumerate(materials) if i not in missing] or materials


# -- The station's other work -----------------------------------------------------------

DISPUTES = (
    ("宅基地边界纠纷 / homestead boundary", "两家因院墙位置发生争执"),
    ("邻里排水纠纷 / drainage between neighbours", "雨水排向邻家院落引发矛盾"),
    ("土地承包纠纷 / land contract", "承包地界址不清，双方各执一词"),
    ("赡养老人纠纷 / supporting a parent", "兄弟二人对赡养费分担有争议"),
    ("林地界址纠纷 / woodland boundary", "花椒地与林地交界处归属不清"),
    ("农机租赁费纠纷 / machine hire fee", "收割机租赁费用结算发生争议"),
)
TOPICS = (
    "《民法典》进农村 / the Civil Code in the village",
    "防范电信网络诈骗 / beware of telephone fraud",
    "农村土地承包法 / the rural land contract law",
    "未成年人保护法 / protecting minors",
    "反家庭暴力法 / against domestic violence",
    "森林防火条例 / forest fire prevention",
)
NEEDS = (
    "独居老人行动不便，需要上门帮扶 / an old man living alone needs help at home",
    "因病致贫，家庭生活困难 / impoverished by illness",
    "留守儿童生活无人照料 / a child left behind with no one to care",
    "房屋漏雨，需要修缮 / a leaking roof",
)
POLICE = (
    ("协助排查电信诈骗线索 / tracing a telephone fraud", "提供诈骗电话线索"),
    ("协助寻找走失老人 / a missing old man", "组织村民沿山路寻找，已找到"),
    ("协助调查农机具被盗案 / stolen farm machinery", "提供监控及目击线索"),
)
ENQUIRIES = (
    ("enquiry", "咨询养老保险缴费档次 / pension contribution levels"),
    ("enquiry", "咨询医保报销比例 / medical insurance reimbursement rates"),
    ("enquiry", "咨询高龄补贴申领条件 / the elderly allowance"),
    ("legal_advice", "咨询土地流转合同问题 / a land transfer contract"),
    ("legal_advice", "咨询子女赡养义务 / children's duty to support parents"),
    ("other", "打印社保缴费证明 / printing a contribution record"),
)


def matter(station: Station, slot: Slot) -> None:
    """A mediation, a legal-publicity session, assistance, police assistance or an
    enquiry, taken as far as its age makes plausible."""
    rng = slot.rng()
    moment = slot.moment()
    age = (datetime.now(CHINA_TZ) - moment).days
    clerk, head = rng.choice(STATION_STAFF["xuefeng_station"]["clerks"]), "zhao.head"
    villagers = [person(rng, slot.day) for _ in range(2)]
    steps: list[tuple[str, dict[str, Any]]] = []
    not_yet = False  # a session planned for a day still to come
    if slot.kind in ("enquiry", "mediation", "assistance"):
        purpose, note = rng.choice(ENQUIRIES) if slot.kind == "enquiry" else (slot.kind, None)
        station.open(
            station.intake,
            "/reception",
            clerk,
            station.key(*slot.key("visit")),
            {
                "visitor_name": villagers[0].name,
                "village": villagers[0].village,
                "purpose": purpose,
                "occurred_at": moment.isoformat(),
                **({"note": note} if note else {}),
            },
            "visit",
        )
        if slot.kind == "enquiry":
            return
    opening: dict[str, Any] = {"occurred_at": moment.isoformat()}
    if slot.kind == "mediation":
        title, summary = rng.choice(DISPUTES)
        opening |= {
            "title": title,
            "parties": [v.name for v in villagers],
            "village": villagers[0].village,
            "summary": summary,
        }
        outcome = rng.choices(["agreement", "no_agreement", "referred"], [85, 10, 5])[0]
        steps = [
            ("hold_session", {"notes": "双方到场陈述，调解员释法说理"}),
            ("conclude", {"outcome": outcome, "summary": "双方自愿达成调解协议并签字"
                          if outcome == "agreement" else "未能达成一致，告知诉讼途径"}),
            ("close", {}),
        ]  # fmt: skip
    elif slot.kind == "legal_publicity":
        planned = moment.date() + timedelta(days=rng.randrange(1, 6))
        opening |= {
            "topic": rng.choice(TOPICS),
            "village": villagers[0].village,
            "planned_on": planned.isoformat(),
        }
        not_yet = planned >= datetime.now(CHINA_TZ).date()
        steps = [
            ("hold", {"attendees": rng.randrange(25, 90), "held_on": planned.isoformat()}),
            ("close", {}),
        ]
    elif slot.kind == "assistance":
        opening |= {
            "person_name": villagers[0].name,
            "village": villagers[0].village,
            "need": rng.choice(NEEDS),
            "urgent": rng.random() < 0.3,
        }
        opening["people_helped"] = rng.choices((1, 2, 3, 4), (80, 10, 6, 4))[0]
        steps = [
            ("provide", {"description": "上门送去米面油，联系村医定期探访"}),
            ("close", {}),
        ]
    else:
        summary, provided = rng.choice(POLICE)
        opening |= {"police_unit": "韩城市公安局板桥派出所", "summary": summary}
        steps = [
            ("provide", {"description": provided, "case_solved": rng.random() < 0.7}),
            ("close", {}),
        ]
    case = station.open(
        station.intake,
        f"/matters/{slot.kind}",
        head if slot.kind == "mediation" else clerk,
        station.key(*slot.key()),
        opening,
        slot.kind,
    )
    if case is None:
        return
    done = len(steps) if age > 5 and rng.random() < 0.85 else rng.randrange(0, len(steps))
    if not_yet:
        done = 0
    timeline = Timeline(moment, slot.rng("moments"), start_of_today())
    for action, body in steps[:done]:
        if action == "hold":  # on the day it was planned for (before today), afternoon
            held = datetime.combine(date.fromisoformat(opening["planned_on"]), time(15), CHINA_TZ)
            when = held if timeline.at < held < timeline.before else timeline.next()
            timeline.at = when
        else:
            when = timeline.next((1, 3) if action != "close" else (0, 0), (30, 120))
        dated = {**body, "occurred_at": when.isoformat()}
        station.act(case["case_id"], action, head, station.key(*slot.key(action)), dated)


# -- The whole month --------------------------------------------------------------------


def run_demo(
    station: Station,
    slots: Sequence[Slot],
    progress: Callable[[Slot], None] = lambda _: None,
) -> Tally:
    """Everything in ``slots``, in order."""
    catalogue = load_catalogue()
    showcase: Iterator[tuple[str, Course]] = iter(SHOWCASE)
    for slot in slots:
        if slot.kind == "application":
            application(station, slot, catalogue, next(showcase, None))
        elif slot.kind == "longmen":
            application(station, slot, catalogue, None, org="longmen_station")
        else:
            matter(station, slot)
        progress(slot)
    return station.tally


def cases(station: Station) -> list[dict[str, Any]]:
    """Every case, as the city's auditor sees them."""
    found: list[dict[str, Any]] = []
    while True:
        page = station.get("/cases", AUDITOR, limit=500, offset=len(found))["cases"]
        found += page
        if len(page) < 500:
            return found


def settle(station: Station, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every case once the read model has caught up with the demo's last answers (or
    after ``timeout`` seconds)."""
    deadline = clock.monotonic() + timeout
    while True:
        listed = cases(station)
        versions = {c["case_id"]: c["version"] for c in listed}
        behind = [
            case_id
            for case_id, version in station.tally.versions.items()
            if versions.get(case_id, 0) < version
        ]
        if not behind or clock.monotonic() > deadline:
            return listed
        clock.sleep(0.3)


def summary(listed: Sequence[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(case kind, status, count)."""
    counts = Counter((c["case_kind"], c["status"]) for c in listed)
    return sorted((kind, status, n) for (kind, status), n in counts.items())


def write_tokens(station: Station, path: Path) -> None:
    """The demo staff's tokens, for curl: ``{"li.clerk": {"role": …, "token": …}}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        m.user: {
            "role": m.role.value,
            "org": m.org,
            "name": m.name,
            "token": station.tokens[m.user],
        }
        for m in ROSTER
    }
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", "utf-8")
    path.chmod(0o600)


def main(
    *,
    intake_url: str,
    processing_url: str,
    key_dir: Path,
    tokens: Path,
    days: int,
    scale: float,
    seed: int,
) -> int:
    """``caseflow demo``: load the period with a progress bar, then print what it did and
    the cases by kind and status. The exit status."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    console = Console()
    try:
        station = Station(intake_url, processing_url, key_dir, seed)
        station.check_up()
        write_tokens(station, tokens)
        console.print(f"staff tokens written to [bold]{tokens}[/bold] (li.clerk, wang.reviewer, "
                      "zhao.head, officer.hc_forestry, gao.auditor, …)")  # fmt: skip
        published = ensure_delegations(station)
        if published:
            console.print(f"published {published} delegation instruments through the API")
        slots = plan(seed, days, scale)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("loading", total=len(slots))

            def advance(slot: Slot) -> None:
                bar.update(task, advance=1, description=f"{slot.day:%m-%d} {slot.kind:<17}")

            tally = run_demo(station, slots, advance)
        listed = settle(station)
    except (DemoError, httpx.HTTPError, OSError) as err:
        console.print(f"[red]demo stopped:[/red] {err}")
        return 1
    done = Table(title="What the demo did", caption=f"{days} days, scale {scale:g}, seed {seed}")
    for column in ("", "added", "already there"):
        done.add_column(column, justify="right" if column else "left")
    for kind in sorted(tally.added | tally.present):
        done.add_row(kind, str(tally.added[kind]), str(tally.present[kind]))
    done.add_row("actions taken", str(sum(tally.actions.values())), "")
    console.print(done)
    table = Table(title="Cases by kind and status", caption="as the city's auditor sees them")
    for column in ("kind", "status", "cases"):
        table.add_column(column, justify="right" if column == "cases" else "left")
    previous = ""
    for kind, status, count in summary(listed):
        table.add_row(kind if kind != previous else "", status, str(count))
        previous = kind
    console.print(table)
    if tally.problems:
        console.print(f"{len(tally.problems)} steps were refused or not allowed, e.g. "
                      f"{tally.problems[0]}")  # fmt: skip
    console.print(f"Try it: see README.md, 'Try it as a window clerk' (tokens in {tokens})")
    return 0
