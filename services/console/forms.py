"""The form of each staff action, derived from its body model (the API's own schema),
and a posted form turned back into the JSON body the API takes. The API validates the
body again: this only spares the member a round trip for what the page can already say."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel

from shared.domain.moments import BACKFILL_PERMISSION
from shared.domain.workcalendar import CHINA_TZ
from shared.domain.workflow.definitions import UnknownWorkflow, WorkflowRegistry
from shared.domain.workflow.payloads import body_for

Kind = Literal["text", "textarea", "lines", "choice", "number", "check", "date"]
LONG = frozenset({"reason", "opinion", "notes", "summary", "description", "comment", "note"})


@dataclass(frozen=True)
class FormField:
    name: str
    kind: Kind
    required: bool
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``; ``Annotated[X, …]`` → ``X``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def fields_of(action: str) -> list[FormField]:
    """The fields of ``action``'s form, in the body model's order."""
    model: type[BaseModel] = body_for(action)
    found: list[FormField] = []
    for name, info in model.model_fields.items():
        if name == "defective":  # a list of objects: the clerk names them on the correction page
            continue
        kind_of = _unwrap(info.annotation)
        origin = typing.get_origin(kind_of)
        required = info.is_required()
        if origin is Literal:
            found.append(FormField(name, "choice", required, tuple(typing.get_args(kind_of))))
        elif origin is list:
            found.append(FormField(name, "lines", required))
        elif kind_of is bool:
            found.append(FormField(name, "check", False))
        elif kind_of is int:
            bounds = {type(m).__name__: m for m in info.metadata}
            low = getattr(bounds.get("Ge"), "ge", None)
            high = getattr(bounds.get("Le"), "le", None)
            found.append(FormField(name, "number", required, minimum=low, maximum=high))
        elif kind_of is date:
            found.append(FormField(name, "date", required))
        else:
            found.append(FormField(name, "textarea" if name in LONG else "text", required))
    return found


def body_from(action: str, form: dict[str, str]) -> dict[str, Any]:
    """The JSON body of ``action`` from a posted form: empty fields left out, lines split,
    numbers as numbers, a ticked box as true."""
    body: dict[str, Any] = {}
    for spec in fields_of(action):
        raw = form.get(spec.name, "")
        if spec.kind == "check":
            if raw:
                body[spec.name] = True
            continue
        raw = raw.strip()
        if not raw:
            continue
        if spec.kind == "lines":
            body[spec.name] = [line.strip() for line in raw.splitlines() if line.strip()]
        elif spec.kind == "number":
            try:
                body[spec.name] = int(raw)
            except ValueError:
                body[spec.name] = raw  # the API explains what is wrong with it
        else:
            body[spec.name] = raw
    return body


def actions_for(
    workflows: WorkflowRegistry, case: dict[str, Any], role: str, org: str
) -> list[str]:
    """Of the case's open actions, those ``role`` takes: the workflow's step names its
    roles; a task is claimed or released by the role it waits for, in its organisation;
    the station head calls back. The API judges again (delegation, department, the
    moment): a refusal it gives is shown as it words it."""
    workflow_ref = case.get("workflow") or {}
    try:
        workflow = workflows.get(str(workflow_ref.get("name")), int(workflow_ref.get("version", 0)))
    except (UnknownWorkflow, TypeError, ValueError):
        return list(case.get("actions", []))
    status = str(case.get("status", ""))
    tasks = case.get("tasks") or []
    mine: list[str] = []
    for action in case.get("actions", []):
        if action in ("claim", "release"):
            if any(t.get("role") == role and t.get("org") == org for t in tasks):
                mine.append(action)
        elif action == "complete_callback":
            if role == "station_head":
                mine.append(action)
        else:
            step = workflow.step(status, action)
            if step is None or role in step.roles:
                mine.append(action)
    return mine


def moment(form: dict[str, str], permissions: frozenset[str]) -> dict[str, str]:
    """``{"occurred_at": …}`` from the form's datetime-local field, in Beijing time, for a
    member who may date an act (the special permission ``backfill``); empty otherwise or
    when left blank. Text that isn't a moment goes to the API as typed, which names what is
    wrong with it."""
    raw = form.get("occurred_at", "").strip()
    if not raw or BACKFILL_PERMISSION not in permissions:
        return {}
    try:
        typed = datetime.fromisoformat(raw)
    except ValueError:
        return {"occurred_at": raw}
    if typed.tzinfo is None:
        typed = typed.replace(tzinfo=CHINA_TZ)
    return {"occurred_at": typed.isoformat()}
