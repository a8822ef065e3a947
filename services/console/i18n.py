"""The console's words, Simplified Chinese first, English beside (``?lang=`` / a cookie).

Reference data (items, materials, organisations, villages) carries its own ``name_zh`` and
``name_en``; this module holds the console's own labels: statuses, actions, roles, task
kinds and the pages' texts. A key missing in a language falls back to the key itself, so
a new status shows up as its code rather than as nothing."""

from __future__ import annotations

from typing import Literal

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")
COOKIE = "caseflow_lang"

WORDS: dict[str, tuple[str, str]] = {
    # the frame
    "app": ("便民服务站工作台", "Service station console"),
    "skip": ("跳到正文", "Skip to content"),
    "signed_in_as": ("当前用户", "Signed in as"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出登录", "Sign out"),
    "language": ("English", "中文"),
    "home": ("首页", "Home"),
    "nav_new": ("收件", "New application"),
    "nav_worklist": ("待办", "Worklist"),
    "nav_cases": ("案件", "Cases"),
    "nav_find": ("按编号查找", "Find by number"),
    "nav_docs": ("接口文档", "API docs"),
    "print": ("打印", "Print"),
    "back": ("返回", "Back"),
    "submit": ("提交", "Submit"),
    "search": ("搜索", "Search"),
    "none": ("无", "none"),
    "unavailable": (
        "系统暂时无法访问，请稍后再试。没有任何数据丢失。",
        "The system can't be reached just now; please try again shortly. Nothing was lost.",
    ),
    "refused": ("未能办理", "Not done"),
    "recorded": ("已记录", "Recorded"),
    "not_found": ("没有找到", "Not found"),
    # sign-in
    "sign_in_intro": (
        "本机演示环境：请选择一位工作人员登录。",
        "Embedded demo: pick a member of staff to sign in as.",
    ),
    "sign_in_not_configured": (
        "尚未配置登录方式（OpenID Connect）。请联系系统管理员。",
        "No way to sign in is configured (OpenID Connect). Please ask the administrator.",
    ),
    "sign_in_oidc": ("使用统一身份认证登录", "Sign in with the city's identity service"),
    "sign_in_failed": ("登录未成功", "Sign-in failed"),
    "session_ended": ("登录已过期，请重新登录。", "Your session ended; please sign in again."),
    "signed_out": ("已退出登录。", "You have signed out."),
    # roles
    "role_window_clerk": ("窗口收件员", "window clerk"),
    "role_reviewer": ("审核员", "reviewer"),
    "role_station_head": ("站长", "station head"),
    "role_department_officer": ("部门经办人", "department officer"),
    "role_auditor": ("审计人员", "auditor"),
    "role_system": ("系统", "system"),
    # the new application
    "new_title": ("收件登记", "Receive an application"),
    "choose_item": ("选择事项", "Choose the service item"),
    "item_search": ("按名称搜索事项", "Search items by name"),
    "item_search_hint": ("例如：养老、医保、出生、采伐", "e.g. 养老, 医保, 出生, 采伐, pension"),
    "completed_here": ("本站办结", "completed at the station"),
    "forwarded_to": ("本站收件，转报", "received here, forwarded to"),
    "limit_days": ("承诺时限", "committed limit"),
    "days": ("个工作日", "working days"),
    "applicant": ("申请人", "Applicant"),
    "name": ("姓名", "Name"),
    "phone": ("联系电话", "Phone"),
    "id_number": ("公民身份号码", "Citizen ID number"),
    "village": ("所在村", "Village"),
    "materials": ("申请材料", "Materials"),
    "handed_in": ("已提交", "handed in"),
    "original_checked": ("已核验原件", "original checked"),
    "original_required": ("需核验原件", "original to be checked"),
    "receive": ("收件", "Receive"),
    "outcome_accepted": ("受理通知书", "Notice of acceptance"),
    "outcome_notice": ("一次性告知书", "One-time notice of missing materials"),
    "notice_lead": (
        "您申请的事项材料不全。请在下列期限内一次性补齐以下全部材料：",
        "Your application is incomplete. Please bring all of the following, at once, by the"
        " date below:",
    ),
    "correction_deadline": ("补正期限", "Bring them by"),
    "receipt_lead": ("您的申请已受理。", "Your application has been accepted."),
    "accepted_on": ("受理日期", "Accepted on"),
    "committed_deadline": ("承诺办结日期", "Committed to finish by"),
    "legal_deadline": ("法定办结日期", "Legal time limit"),
    "case_number": ("受理编号", "Case number"),
    "item": ("事项", "Item"),
    "station": ("服务站", "Station"),
    "stamp": ("（服务站盖章）", "(station's seal)"),
    "issued_on": ("出具日期", "Issued on"),
    "open_case": ("查看案件", "Open the case"),
    "another": ("继续收件", "Receive another"),
    # the case
    "status": ("状态", "Status"),
    "clock": ("办理时限", "Clock"),
    "used": ("已用", "used"),
    "remaining": ("剩余", "remaining"),
    "paused": ("暂停", "paused"),
    "committed_limit": ("承诺", "committed"),
    "legal_limit": ("法定", "legal"),
    "deadline": ("截止日期", "deadline"),
    "tasks": ("任务", "Tasks"),
    "claimed_by": ("认领人", "claimed by"),
    "unclaimed": ("未认领", "unclaimed"),
    "actions": ("可办理的操作", "What you can do"),
    "history": ("办理记录", "History"),
    "h_version": ("版本", "Version"),
    "h_when": ("时间", "When"),
    "h_event": ("事件", "Event"),
    "h_who": ("经办人", "Who"),
    "h_authority": ("以谁的名义", "For authority"),
    "h_delegation": ("委托书（版本）", "Delegation (version)"),
    "personal_data": ("申请人个人信息", "Applicant's personal data"),
    "personal_reason": ("查看理由（将被记录）", "Why you open it (recorded)"),
    "show": ("查看", "Show"),
    "missing": ("缺少材料", "Missing"),
    # the worklist
    "worklist_title": ("待办任务", "Open tasks"),
    "worklist_empty": ("暂无待办任务。", "No open tasks."),
    "since": ("自", "since"),
    "task": ("任务", "Task"),
    "warning": ("预警", "Warning"),
    "find_label": ("受理编号", "Case number"),
    # the visitor log and the other matters
    "nav_reception": ("来访登记", "Visitors"),
    "reception_title": ("来访登记", "Visitor log"),
    "visitor_name": ("来访人姓名", "Visitor's name"),
    "purpose": ("来访事由", "Purpose"),
    "purpose_enquiry": ("咨询", "enquiry"),
    "purpose_application": ("办事", "application"),
    "purpose_mediation": ("调解纠纷", "mediation"),
    "purpose_legal_advice": ("法律咨询", "legal advice"),
    "purpose_assistance": ("求助", "assistance"),
    "purpose_police": ("报警求助", "police"),
    "purpose_other": ("其他", "other"),
    "log_visit": ("登记", "Log the visit"),
    "matters_title": ("其他事项", "Other matters"),
    "matter_mediation": ("矛盾纠纷调解", "Mediation"),
    "matter_legal_publicity": ("法治宣传", "Legal-publicity session"),
    "matter_assistance": ("帮扶救助", "Assistance"),
    "matter_police_assistance": ("协助公安", "Police assistance"),
    "open_matter": ("登记", "Open"),
    "m_title": ("纠纷名称", "title"),
    "m_parties": ("当事人（每行一人，至少两人）", "parties (one per line, two at least)"),
    "m_village": ("所在村", "village"),
    "m_summary": ("简要情况", "summary"),
    "m_topic": ("宣传主题", "topic"),
    "m_planned_on": ("计划日期", "planned on"),
    "m_person_name": ("求助人姓名", "person's name"),
    "m_need": ("困难情况", "need"),
    "m_urgent": ("紧急", "urgent"),
    "m_police_unit": ("公安单位", "police unit"),
    "m_reference": ("公安案件编号", "police reference"),
    # statistics
    "nav_statistics": ("统计", "Statistics"),
    "statistics_title": ("站点统计", "Station statistics"),
    "period_from": ("起始日期", "From"),
    "period_to": ("截止日期", "To"),
    "show_period": ("查询", "Show"),
    "people_received": ("接待群众（人）", "people received"),
    "matters_handled": ("办理事项（件）", "matters handled"),
    "completed": ("办结（件）", "completed"),
    "on_time_committed_rate": ("承诺时限内办结率", "on time (committed limit)"),
    "by_kind": ("按类别", "By kind"),
    "by_item": ("按事项", "By item"),
    "chart_title": ("各事项办理情况", "Each item's cases"),
    "incomplete_report": (
        "统计尚未更新完毕，数字可能偏少。",
        "The statistics are still catching up; figures may be low.",
    ),
    "f_received": ("收件", "received"),
    "f_accepted": ("受理", "accepted"),
    "f_forwarded": ("转报", "forwarded"),
    "f_approved": ("批准", "approved"),
    "f_rejected": ("不予批准", "rejected"),
    "f_delivered": ("送达", "delivered"),
    # the audit
    "nav_audit": ("审计", "Audit"),
    "audit_title": ("案件时间线", "A case's timeline"),
    "as_of": ("截至时刻（北京时间）", "As of (Beijing time)"),
    "basis": ("依据", "Basis"),
    "basis_occurred": ("按发生时间", "what had happened by then"),
    "basis_recorded": ("按记录时间", "what the system knew by then"),
    "state_as_of": ("截至该时刻的状态", "The case as of that moment"),
    "events_counted": ("计入的事件", "events counted"),
    "not_counted": ("之后的事件（未计入）", "later events (not counted)"),
    "h_recorded": ("记录时间", "Recorded"),
    "worklist_department": ("转来的案件", "Cases forwarded to you"),
    # warnings
    "warning_yellow": ("黄灯：临近期限", "yellow: deadline near"),
    "warning_red": ("红灯：已超期", "red: overdue"),
}

STATUSES: dict[str, tuple[str, str]] = {
    "received": ("已收件", "received"),
    "accepted": ("已受理", "accepted"),
    "correction_requested": ("待补正", "correction requested"),
    "not_accepted": ("不予受理", "not accepted"),
    "in_review": ("审核中", "in review"),
    "reviewed": ("已审核", "reviewed"),
    "suspended": ("中止", "suspended"),
    "forwarded": ("已转报", "forwarded"),
    "approved": ("已批准", "approved"),
    "rejected": ("不予批准", "rejected"),
    "delivered": ("已送达", "delivered"),
    "closed": ("已办结", "closed"),
    "withdrawn": ("已撤回", "withdrawn"),
    "open": ("办理中", "open"),
    "corrected": ("已补正", "corrected"),
    "signed_off": ("已签发", "signed off"),
    "registered": ("已登记", "registered"),
    "in_mediation": ("调解中", "in mediation"),
    "provided": ("已提供帮助", "help provided"),
    "planned": ("已计划", "planned"),
    "held": ("已举办", "held"),
    "concluded": ("已结案", "concluded"),
}

ACTIONS: dict[str, tuple[str, str]] = {
    "receive": ("收件", "receive"),
    "register": ("登记", "register"),
    "plan": ("计划", "plan"),
    "request": ("请求", "request"),
    "accept": ("受理", "accept"),
    "deem_accepted": ("视为受理", "deem accepted"),
    "request_correction": ("要求补正", "request correction"),
    "submit_correction": ("补正材料", "submit correction"),
    "refuse": ("不予受理", "refuse"),
    "start_review": ("开始审核", "start review"),
    "suspend": ("中止", "suspend"),
    "resume": ("恢复", "resume"),
    "extend": ("延期", "extend"),
    "complete_review": ("完成审核", "complete review"),
    "sign_off": ("签发", "sign off"),
    "approve": ("批准", "approve"),
    "reject": ("不予批准", "reject"),
    "forward": ("转报", "forward"),
    "deliver": ("送达", "deliver"),
    "rate": ("评价", "rate"),
    "close": ("办结", "close"),
    "withdraw": ("撤回", "withdraw"),
    "reopen": ("重新办理", "reopen"),
    "claim": ("认领", "claim"),
    "release": ("放回", "release"),
    "complete_callback": ("完成回访", "complete call-back"),
    "hold_session": ("调解", "hold a session"),
    "conclude": ("结案", "conclude"),
    "hold": ("举办", "hold"),
    "provide": ("提供帮助", "provide"),
}

FIELDS: dict[str, tuple[str, str]] = {
    "note": ("备注", "note"),
    "reason": ("理由", "reason"),
    "reasons": ("理由（每行一条）", "reasons (one per line)"),
    "opinion": ("审核意见", "opinion"),
    "recommendation": ("审核建议", "recommendation"),
    "decision_number": ("决定书文号", "decision number"),
    "method": ("送达方式", "delivery method"),
    "score": ("评分（1–5）", "score (1–5)"),
    "comment": ("评价内容", "comment"),
    "materials": ("补正的材料（每行一个代码）", "materials handed in (one code per line)"),
    "kind": ("类别", "kind"),
    "task": ("任务", "task"),
    "notes": ("记录", "notes"),
    "held_on": ("日期", "held on"),
    "outcome": ("结果", "outcome"),
    "summary": ("摘要", "summary"),
    "attendees": ("参加人数", "attendees"),
    "description": ("说明", "description"),
    "case_solved": ("案件已侦破", "case solved"),
    "apply_instead_at": ("应向何处申请", "apply instead at"),
    "defective": ("有问题的材料", "defective materials"),
}

CHOICES: dict[str, tuple[str, str]] = {
    "approve": ("建议批准", "approve"),
    "reject": ("建议不予批准", "reject"),
    "in_person": ("当面送达", "in person"),
    "post": ("邮寄", "by post"),
    "electronic": ("电子送达", "electronically"),
    "by_proxy": ("委托代收", "by proxy"),
    "hearing": ("听证", "hearing"),
    "testing": ("检验检测", "testing"),
    "expert_review": ("专家评审", "expert review"),
    "other": ("其他", "other"),
    "agreement": ("达成协议", "agreement"),
    "no_agreement": ("未达成协议", "no agreement"),
    "referred": ("移交", "referred"),
    "review": ("审核", "review"),
    "decision": ("决定", "decision"),
    "callback": ("回访", "call-back"),
    "decide": ("决定", "decision"),
    "answer": ("答复", "answer"),
    "forward": ("转报", "forwarding"),
}

TABLES = {"words": WORDS, "status": STATUSES, "action": ACTIONS, "field": FIELDS, "choice": CHOICES}


def word(table: str, key: str, lang: Lang) -> str:
    """``key`` of ``table`` in ``lang``; the key itself if there is no entry."""
    found = TABLES[table].get(key)
    if found is None:
        return key
    return found[0] if lang == "zh" else found[1]


def pick(lang: Lang, obj: object, base: str = "name") -> str:
    """A reference entry's own name in ``lang`` (``name_zh`` / ``name_en``)."""
    zh = getattr(obj, f"{base}_zh", None) if not isinstance(obj, dict) else obj.get(f"{base}_zh")
    en = getattr(obj, f"{base}_en", None) if not isinstance(obj, dict) else obj.get(f"{base}_en")
    return str((zh if lang == "zh" else en) or zh or en or "")


def language(value: str | None) -> Lang:
    return "en" if value == "en" else "zh"
