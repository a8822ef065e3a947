"""Workflow definitions: versioned data, loaded and checked at start-up.

A workflow is a plain table of transitions — (status, action) → event → status — read
from ``shared/data/workflows/<name>.v<version>.yaml``. The events are the transitions: the
fold of a case looks up ``(status, event type)`` in the same table. A case pins its
workflow's name and version at intake, so a new version never changes a running case.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.domain.yamltext import YAMLError, parse_yaml

DATA_DIR = Path(__file__).resolve().parents[2] / "data"

SYSTEM_ROLE = "system"


class WorkflowError(ValueError):
    """A workflow definition that can't be used; the message names the file and the fault."""


class UnknownWorkflow(LookupError):
    """No workflow of that name and version."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Transition(_Frozen):
    """One step: who may take ``action`` from which statuses, the event it records, and
    the status it leads to (unchanged when ``to`` is absent)."""

    action: str = Field(pattern=r"^[a-z][a-z_]{1,40}$")
    from_: tuple[str, ...] = Field(default=(), alias="from")
    event: str = Field(pattern=r"^[A-Z][A-Za-z0-9]{1,63}$")
    to: str | None = None
    roles: tuple[str, ...] = Field(min_length=1)
    power: Literal["receive", "accept", "review", "decide", "deliver"] | None = None
    permission: str | None = None
    """A special permission the actor's token must carry (e.g. ``reopen``)."""

    def target(self, status: str) -> str:
        """The status after this step is taken from ``status``."""
        return self.to or status


class TaskRule(_Frozen):
    """The task a status opens: its kind, the role that works it, and whose worklist
    (the case's station, or the authority the case was forwarded to)."""

    kind: str
    role: str
    org: Literal["station", "forward_to"] = "station"


class ClockRule(_Frozen):
    """Which events start, pause, resume and stop the case's working-day clock."""

    starts: tuple[str, ...] = ()
    pauses: tuple[str, ...] = ()
    resumes: tuple[str, ...] = ()
    stops: tuple[str, ...] = ()


class Workflow(_Frozen):
    """A versioned workflow definition."""

    name: str = Field(pattern=r"^[a-z][a-z_]{1,40}$")
    version: int = Field(ge=1)
    status: Literal["draft", "published"]
    case_kind: str
    description_zh: str
    description_en: str
    start: Transition
    transitions: tuple[Transition, ...]
    tasks: Mapping[str, TaskRule] = Field(default_factory=dict)
    clock: ClockRule | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Workflow:
        if self.start.from_ or not self.start.to:
            raise ValueError("start must have no 'from' and a 'to'")
        statuses = self.statuses
        # Only a 'to' reaches a status: a status named in 'from' alone is a typo.
        reached = {self.start.to, *(step.to for step in self.transitions if step.to)}
        seen: dict[tuple[str, str], str] = {}
        for step in self.transitions:
            if not step.from_:
                raise ValueError(f"{step.action}: 'from' must name at least one status")
            for status in step.from_:
                if status not in reached:
                    raise ValueError(f"{step.action}: status {status!r} is never reached")
                key = (status, step.action)
                if key in seen:
                    raise ValueError(f"action {step.action!r} is defined twice from {status!r}")
                seen[key] = step.event
        events: dict[tuple[str, str], str] = {}
        for step in (self.start, *self.transitions):
            for status in step.from_ or ("",):
                before = events.setdefault((status, step.event), step.target(status))
                if before != step.target(status):
                    raise ValueError(f"{step.event} from {status!r} leads to two statuses")
        for status in self.tasks:
            if status not in statuses:
                raise ValueError(f"task for unknown status {status!r}")
        return self

    @functools.cached_property
    def statuses(self) -> frozenset[str]:
        """Every status a case of this workflow can be in."""
        found = {self.start.to or ""}
        for step in self.transitions:
            found.update(step.from_)
            if step.to:
                found.add(step.to)
        return frozenset(found)

    @functools.cached_property
    def table(self) -> Mapping[tuple[str, str], str]:
        """(status, event type) → next status: the fold's transition table."""
        table = {("", self.start.event): self.start.target("")}
        for step in self.transitions:
            for status in step.from_:
                table[(status, step.event)] = step.target(status)
        return MappingProxyType(table)

    @functools.cached_property
    def event_types(self) -> frozenset[str]:
        """Event types that move a case of this workflow (and so must be allowed)."""
        return frozenset(event for _, event in self.table)

    def step(self, status: str, action: str) -> Transition | None:
        """The transition ``action`` takes from ``status``, if any."""
        for step in self.transitions:
            if step.action == action and status in step.from_:
                return step
        return None

    def actions(self) -> frozenset[str]:
        """Every action this workflow knows."""
        return frozenset(step.action for step in self.transitions)

    def open_actions(self, status: str) -> list[str]:
        """The actions allowed from ``status``, in definition order."""
        return [step.action for step in self.transitions if status in step.from_]


class WorkflowRegistry:
    """Every workflow definition, by name and version."""

    def __init__(self, workflows: list[Workflow]) -> None:
        self._by_key = {(w.name, w.version): w for w in workflows}

    def __iter__(self) -> Iterator[Workflow]:
        return iter(sorted(self._by_key.values(), key=lambda w: (w.name, w.version)))

    def get(self, name: str, version: int) -> Workflow:
        """A definition by name and version (drafts included: running cases may pin one
        only if it was published when they started)."""
        try:
            return self._by_key[(name, version)]
        except KeyError:
            raise UnknownWorkflow(f"no workflow {name} version {version}") from None

    def published(self, name: str, version: int) -> Workflow:
        """A published definition; drafts can't be used for new cases."""
        workflow = self.get(name, version)
        if workflow.status != "published":
            raise UnknownWorkflow(f"workflow {name} version {version} is a draft")
        return workflow

    def latest(self, name: str) -> Workflow:
        """The newest published version of a workflow."""
        versions = [w for (n, _), w in self._by_key.items() if n == name]
        published = [w for w in versions if w.status == "published"]
        if not published:
            raise UnknownWorkflow(f"no published workflow {name}")
        return max(published, key=lambda w: w.version)

    def for_kind(self, case_kind: str) -> Workflow:
        """The newest published workflow of a case kind that has exactly one (matters)."""
        names = {w.name for w in self._by_key.values() if w.case_kind == case_kind}
        if len(names) != 1:
            raise UnknownWorkflow(f"case kind {case_kind} has no single workflow")
        return self.latest(names.pop())


def load_workflows(data_dir: Path | None = None) -> WorkflowRegistry:
    """Read and check every workflow definition; a bad one stops start-up, named."""
    folder = (data_dir or DATA_DIR) / "workflows"
    workflows: list[Workflow] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            workflow = Workflow.model_validate(parse_yaml(path.read_text("utf-8")))
        except (ValidationError, YAMLError) as err:
            raise WorkflowError(f"{path.name}: {err}") from None
        if path.name != f"{workflow.name}.v{workflow.version}.yaml":
            raise WorkflowError(
                f"{path.name}: must be named {workflow.name}.v{workflow.version}.yaml"
            )
        workflows.append(workflow)
    if not workflows:
        raise WorkflowError(f"no workflow definitions in {folder}")
    return WorkflowRegistry(workflows)
