"""The demo staff of the embedded default (`caseflow up`, `caseflow demo`): who works at
Xuefeng and Longmen stations, in the departments and at the audit body. Production staff
come from the city's identity provider, not from here."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DemoMember:
    """One member of the demo's staff; ``role`` is a role's value (``window_clerk``)."""

    user: str
    role: str
    org: str
    name: str


DEMO_STAFF: tuple[DemoMember, ...] = (
    DemoMember("li.clerk", "window_clerk", "xuefeng_station", "李娜"),
    DemoMember("zhou.clerk", "window_clerk", "xuefeng_station", "周敏"),
    DemoMember("wang.reviewer", "reviewer", "xuefeng_station", "王强"),
    DemoMember("xue.reviewer", "reviewer", "xuefeng_station", "薛丽华"),
    DemoMember("zhao.head", "station_head", "xuefeng_station", "赵建华"),
    DemoMember("chen.clerk", "window_clerk", "longmen_station", "陈静"),
    DemoMember("chen.reviewer", "reviewer", "longmen_station", "陈伟"),
    DemoMember("feng.head", "station_head", "longmen_station", "冯志刚"),
    DemoMember("officer.hc_hrss", "department_officer", "hc_hrss", "程晓燕"),
    DemoMember("officer.hc_medical_security", "department_officer", "hc_medical_security", "吉鹏"),
    DemoMember("officer.hc_health", "department_officer", "hc_health", "高玉梅"),
    DemoMember("officer.hc_civil_affairs", "department_officer", "hc_civil_affairs", "解文博"),
    DemoMember("officer.hc_forestry", "department_officer", "hc_forestry", "卫东升"),
    DemoMember("officer.hc_agriculture", "department_officer", "hc_agriculture", "党振华"),
    DemoMember("officer.hc_public_security", "department_officer", "hc_public_security", "贾军"),
    DemoMember("officer.hc_justice", "department_officer", "hc_justice", "师静"),
    DemoMember("officer.banqiao_town", "department_officer", "banqiao_town", "杨海涛"),
    DemoMember("gao.auditor", "auditor", "hc_audit", "高明"),
)
"""Department officers are ``officer.<org>``."""
