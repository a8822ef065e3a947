"""Who is told what: the rules (data) applied to one event of a case. Pure.

The rules file says which event types tell the applicant, the staff of a newly opened
task, or the station head, over which channels, with which template. New tasks are found
by folding the case before and after the event (the workflow definition says which tasks
each status opens).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.notify import templates
from services.notify.model import ChannelName, PlannedNotice, Recipient
from shared.domain.event_catalogue import event_payloads
from shared.domain.events import StoredEvent
from shared.domain.identity import mask_phone
from shared.domain.privacy import mask_email, masked
from shared.domain.workcalendar import local_date
from shared.domain.workflow.reference import Reference, load_reference
from shared.domain.workflow.state import CaseState, Task, fold
from shared.domain.yamltext import YAMLError, parse_yaml

DATA = Path(__file__).with_name("data")
ANY = "*"

TASK_LABELS: dict[str, tuple[str, str]] = {
    "accept": ("受理审核", "decide on acceptance"),
    "correction": ("补正材料", "materials to complete"),
    "review": ("审查", "review"),
    "decide": ("审批决定", "decision"),
    "sign_off": ("签批", "sign-off"),
    "forward": ("转报", "forwarding"),
    "answer": ("上级答复", "department decision"),
    "deliver": ("送达", "delivery"),
    "call_back": ("差评回访", "call-back after a poor rating"),
    "chase_department": ("催办转报", "chase the department"),
    "escalation": ("超时督办", "overdue case"),
}
ROLE_NAMES: dict[str, tuple[str, str]] = {
    "window_clerk": ("窗口工作人员", "window clerk"),
    "reviewer": ("审查人员", "reviewer"),
    "station_head": ("站长", "station head"),
    "department_officer": ("经办人员", "department officer"),
}


class RulesError(ValueError):
    """The rules or contacts file is wrong; the message names the entry."""


class Condition(BaseModel):
    """When a rule applies beyond its event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rating_at_most: int | None = Field(default=None, ge=1, le=5)
    levels: tuple[str, ...] | None = None

    def holds(self, payload: dict[str, Any]) -> bool:
        """Whether the event's payload meets the condition."""
        if self.rating_at_most is not None:
            score = payload.get("score")
            if not isinstance(score, int) or score > self.rating_at_most:
                return False
        return self.levels is None or payload.get("level") in self.levels


class Rule(BaseModel):
    """One line of the rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: tuple[str, ...] = Field(min_length=1)
    tell: Literal["applicant", "task_staff", "station_head"]
    channels: tuple[Literal["sms", "email"], ...] = Field(min_length=1)
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    when: Condition | None = None

    def fires_on(self, event: StoredEvent) -> bool:
        """Whether this rule applies to ``event``."""
        if ANY not in self.events and event.event_type not in self.events:
            return False
        return self.when is None or self.when.holds(event.payload)


class Rules(BaseModel):
    """The rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _known(self) -> Rules:
        known = set(event_payloads())
        have = templates.available()
        for i, rule in enumerate(self.rules):
            unknown = sorted(set(rule.events) - known - {ANY})
            if unknown:
                raise ValueError(f"rule {i + 1} ({rule.template}): unknown event type(s) {unknown}")
            for channel in rule.channels:
                for language in templates.LANGUAGES:
                    if (rule.template, channel, language) not in have:
                        raise ValueError(
                            f"rule {i + 1}: no template "
                            f"{templates.template_name(rule.template, channel, language)}"
                        )
        return self


class Contact(BaseModel):
    """A role's mailbox (and mobile) at an organisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(default=None, pattern=r"^1[3-9]\d{9}$")


class Contacts(BaseModel):
    """Staff mailboxes by organisation and role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contacts: dict[str, dict[str, Contact]]

    def of(self, org: str, role: str) -> Contact | None:
        """The contact of ``role`` at ``org``, if there is one."""
        return self.contacts.get(org, {}).get(role)


def _load(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(parse_yaml(path.read_text(encoding="utf-8")))
    except (OSError, YAMLError, ValidationError) as err:
        raise RulesError(f"{path}: {err}") from err


def load_rules(path: Path = DATA / "rules.yaml") -> Rules:
    """The rules, checked: known event types, a template for every channel and language."""
    rules: Rules = _load(Rules, path)
    return rules


def load_contacts(
    path: Path = DATA / "contacts.yaml", reference: Reference | None = None
) -> Contacts:
    """Staff contacts, checked against the known organisations."""
    contacts: Contacts = _load(Contacts, path)
    if reference is not None:
        unknown = sorted(set(contacts.contacts) - {o.code for o in reference.organisations})
        if unknown:
            raise RulesError(f"{path}: unknown organisation(s) {unknown}")
    return contacts


class Planner:
    """Applies the rules to an event: the notices it calls for."""

    def __init__(self, rules: Rules, contacts: Contacts, reference: Reference) -> None:
        self.rules = rules
        self.contacts = contacts
        self.reference = reference

    @classmethod
    def load(cls, data_dir: Path | None = None) -> Planner:
        """Notify's packaged rules and contacts over the reference data of ``data_dir``
        (``CASEFLOW_NOTIFY_DATA_DIR``; the packaged data when None), as the other services
        read it."""
        reference = load_reference(data_dir)
        return cls(load_rules(), load_contacts(reference=reference), reference)

    def plan(self, event: StoredEvent, history: Sequence[StoredEvent]) -> list[PlannedNotice]:
        """The notices for ``event``; ``history`` is the case up to and including it."""
        rules = [r for r in self.rules.rules if r.fires_on(event)]
        if not rules or not history:
            return []
        before = fold([e for e in history if e.version < event.version], self.reference.workflows)
        after = fold(history, self.reference.workflows)
        context = self._context(event, after)
        planned: list[PlannedNotice] = []
        for rule in rules:
            for recipient, channel, extra in self._recipients(rule, before, after):
                notice = templates.render(
                    rule.template, channel, recipient.language, {**context, **extra}
                )
                planned.append(PlannedNotice(channel, recipient, rule.template, notice))
        return planned

    def _recipients(
        self, rule: Rule, before: CaseState, after: CaseState
    ) -> list[tuple[Recipient, ChannelName, dict[str, Any]]]:
        found: list[tuple[Recipient, ChannelName, dict[str, Any]]] = []
        if rule.tell == "applicant":
            applicant = after.applicant or {}
            chosen = after.channels or ("sms",)
            language = str(after.details.get("language") or "zh-CN")
            for channel in rule.channels:
                if channel not in chosen:
                    continue
                address = applicant.get("phone" if channel == "sms" else "email")
                if not address:
                    continue
                masked = mask_phone(address) if channel == "sms" else mask_email(address)
                found.append((Recipient("applicant", str(address), masked, language), channel, {}))
        elif rule.tell == "station_head" and after.station:
            contact = self.contacts.of(after.station, "station_head")
            if contact is not None:
                audience = f"staff:{after.station}:station_head"
                found.extend(self._staff(audience, contact, rule.channels, {}))
        elif rule.tell == "task_staff":
            for task in _new_tasks(before, after, self.reference):
                contact = self.contacts.of(task.org, task.role)
                if contact is not None:
                    audience = f"staff:{task.org}:{task.role}"
                    found.extend(
                        self._staff(audience, contact, rule.channels, {"task": self._task(task)})
                    )
        return found

    @staticmethod
    def _staff(
        audience: str, contact: Contact, channels: Sequence[ChannelName], extra: dict[str, Any]
    ) -> list[tuple[Recipient, ChannelName, dict[str, Any]]]:
        found: list[tuple[Recipient, ChannelName, dict[str, Any]]] = []
        for channel in channels:
            if channel == "email":
                masked = mask_email(contact.email)
                found.append((Recipient(audience, contact.email, masked), "email", extra))
            elif channel == "sms" and contact.phone:
                found.append(
                    (Recipient(audience, contact.phone, mask_phone(contact.phone)), "sms", extra)
                )
        return found

    def _task(self, task: Task) -> dict[str, str]:
        label = TASK_LABELS.get(task.kind, (task.kind, task.kind.replace("_", " ")))
        role = ROLE_NAMES.get(task.role, (task.role, task.role.replace("_", " ")))
        org = self._org(task.org)
        return {
            "kind": task.kind,
            "label_zh": label[0],
            "label_en": label[1],
            "role_zh": role[0],
            "role_en": role[1],
            "org_name_zh": org["name_zh"],
            "org_name_en": org["name_en"],
        }

    def _org(self, code: str | None) -> dict[str, str]:
        if code and code in self.reference.organisations:
            org = self.reference.organisations.get(code)
            return {"code": code, "name_zh": org.name_zh, "name_en": org.name_en}
        return {"code": code or "", "name_zh": code or "", "name_en": code or ""}

    def _context(self, event: StoredEvent, state: CaseState) -> dict[str, Any]:
        item = {"name_zh": "", "name_en": ""}
        if state.item_code:
            try:
                spec = self.reference.catalogue.get(state.item_code, state.item_version)
                item = {"name_zh": spec.name_zh, "name_en": spec.name_en}
            except (KeyError, ValueError):
                item = {"name_zh": state.item_code, "name_en": state.item_code}
        elif state.case_kind:
            item = {"name_zh": state.case_kind, "name_en": state.case_kind.replace("_", " ")}
        # The event as the log holds it, personal data and all: templates get it masked.
        payload: dict[str, Any] = masked(event.payload)
        reasons = payload.get("reasons") or ([payload["reason"]] if payload.get("reason") else [])
        missing = payload.get("missing") or []
        return {
            "applicant": templates.applicant_view(state.applicant or {}),
            "case": {"id": str(event.case_id), "number": state.case_number or ""},
            "item": item,
            "station": self._org(state.station),
            "forward_to": self._org(payload.get("to") or state.forward_to),
            "event": {"type": event.event_type, "date": local_date(event.occurred_at).isoformat()},
            "p": payload,
            "approved": event.event_type == "CaseApproved",
            "reasons": [str(r) for r in reasons],
            "missing": [m for m in missing if isinstance(m, dict)],
            "deadline": payload.get("deadline"),
        }


def _new_tasks(before: CaseState, after: CaseState, reference: Reference) -> list[Task]:
    """Tasks open after the event that were not open before it (by kind, role and org)."""

    def open_tasks(state: CaseState) -> list[Task]:
        if not state.workflow or not state.workflow_version:
            return []
        workflow = reference.workflows.get(state.workflow, state.workflow_version)
        return state.tasks(workflow)

    had = {(t.kind, t.role, t.org) for t in open_tasks(before)}
    return [t for t in open_tasks(after) if (t.kind, t.role, t.org) not in had]
