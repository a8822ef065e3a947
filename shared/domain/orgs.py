"""Organisations: Hancheng city departments, the Banqiao town government, its stations.

Reference data from ``organisations.yaml`` in the data directory (default: the packaged
``shared/data``). City departments and town governments are competent authorities and
delegators; stations are where cases are received, each with its own case-number prefix and
villages, and each kept apart from the others. One city department is marked as the audit
body (``audit_body: true``): the city's auditors belong to it.

The same file lists the special permissions a staff token may carry beside its role
(``special_permissions``) and the roles that may hold each: staff tokens are checked against
both (``shared.adapters.auth.check_claims``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.domain.yamltext import YAMLError, parse_yaml

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
ORGANISATIONS_FILE = "organisations.yaml"

_CODE = r"^[a-z][a-z0-9_]*$"

StaffRole = Literal["window_clerk", "reviewer", "station_head", "department_officer", "auditor"]
"""The roles of ``shared.adapters.auth.Role``, by value (the domain stays below the
adapters)."""


class OrgKind(StrEnum):
    city_department = "city_department"
    town_government = "town_government"
    station = "station"


class OrganisationError(ValueError):
    """The organisations data is invalid (names the entry and the problem)."""


class UnknownOrganisation(KeyError):
    """No organisation has this code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"unknown organisation {self.code!r}"


class Village(BaseModel):
    """An administrative village served by a station."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(pattern=_CODE)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)


class Organisation(BaseModel):
    """A city department, a town government or a service station."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(pattern=_CODE)
    kind: OrgKind
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    parent: str | None = None
    case_prefix: str | None = Field(default=None, pattern=r"^[A-Z]{2,4}$")
    villages: tuple[Village, ...] = ()
    audit_body: bool = False
    """The city's audit body (审计机关): where auditors work."""
    opened_on: dt.date | None = None
    """The day a station opened: nothing it did can be dated before it."""

    @model_validator(mode="after")
    def _station_fields(self) -> Organisation:
        if self.audit_body and self.kind is not OrgKind.city_department:
            raise ValueError(f"only a city department can be the audit body, not a {self.kind}")
        if self.kind is OrgKind.station:
            if self.parent is None:
                raise ValueError("a station needs a parent (its town government)")
            if self.case_prefix is None:
                raise ValueError("a station needs a case_prefix")
            if not self.villages:
                raise ValueError("a station needs at least one village")
        else:
            if self.case_prefix is not None:
                raise ValueError(f"only stations have a case_prefix, not a {self.kind}")
            if self.villages:
                raise ValueError(f"only stations have villages, not a {self.kind}")
        return self

    @property
    def is_authority(self) -> bool:
        """A city department or town government: can be competent for an item."""
        return self.kind is not OrgKind.station


class SpecialPermission(BaseModel):
    """A permission a token may carry beside its role (claim ``perms``), and who may."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    roles: tuple[StaffRole, ...] = Field(min_length=1)
    description: str = Field(min_length=1)


class Organisations:
    """All known organisations, by code (in data-file order), and the special permissions
    that staff of some roles may hold."""

    def __init__(
        self,
        organisations: Iterable[Organisation],
        special_permissions: dict[str, SpecialPermission] | None = None,
    ) -> None:
        self.special_permissions: dict[str, SpecialPermission] = dict(special_permissions or {})
        by_code: dict[str, Organisation] = {}
        for org in organisations:
            if org.code in by_code:
                raise OrganisationError(f"organisation {org.code!r} is defined twice")
            by_code[org.code] = org
        prefixes: dict[str, str] = {}
        villages: dict[str, str] = {}
        for org in by_code.values():
            if org.parent is not None:
                parent = by_code.get(org.parent)
                if parent is None:
                    raise OrganisationError(
                        f"organisation {org.code!r}: unknown parent {org.parent!r}"
                    )
                if org.kind is OrgKind.station and parent.kind is not OrgKind.town_government:
                    raise OrganisationError(
                        f"organisation {org.code!r}: a station's parent must be a town"
                        f" government, {org.parent!r} is a {parent.kind}"
                    )
            if org.case_prefix is not None:
                if org.case_prefix in prefixes:
                    raise OrganisationError(
                        f"organisation {org.code!r}: case_prefix {org.case_prefix!r} is"
                        f" already used by {prefixes[org.case_prefix]!r}"
                    )
                prefixes[org.case_prefix] = org.code
            for village in org.villages:
                if village.code in villages:
                    raise OrganisationError(
                        f"organisation {org.code!r}: village {village.code!r} is already"
                        f" served by {villages[village.code]!r}"
                    )
                villages[village.code] = org.code
        audit_bodies = [o.code for o in by_code.values() if o.audit_body]
        if len(audit_bodies) > 1:
            raise OrganisationError(
                f"only one organisation can be the audit body: {', '.join(audit_bodies)} are"
            )
        self._by_code = by_code

    def get(self, code: str) -> Organisation:
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownOrganisation(code) from None

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Organisation]:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def stations(self) -> list[Organisation]:
        return [o for o in self._by_code.values() if o.kind is OrgKind.station]

    def authorities(self) -> list[Organisation]:
        """City departments and town governments."""
        return [o for o in self._by_code.values() if o.is_authority]

    def audit_body(self) -> Organisation | None:
        """The city's audit body, if the data names one."""
        return next((o for o in self._by_code.values() if o.audit_body), None)


def _read_yaml(path: Path) -> Any:
    """Parse one YAML data file (safe loader); a missing file or bad YAML names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise OrganisationError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return parse_yaml(text)
    except YAMLError as err:
        raise OrganisationError(f"{path}: invalid YAML: {err}") from None


def load_organisations(data_dir: Path | None = None) -> Organisations:
    """Read and validate ``organisations.yaml``; raises OrganisationError naming the entry."""
    path = (data_dir or DEFAULT_DATA_DIR) / ORGANISATIONS_FILE
    raw = _read_yaml(path)
    entries = raw.get("organisations") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise OrganisationError(f"{path}: expected a mapping with a list 'organisations'")
    permissions: dict[str, SpecialPermission] = {}
    granted = raw.get("special_permissions") or {}
    if not isinstance(granted, dict):
        raise OrganisationError(f"{path}: 'special_permissions' must be a mapping")
    for name, grant in granted.items():
        if not isinstance(name, str) or not name:
            raise OrganisationError(f"{path}: special permission {name!r}: needs a name")
        try:
            permissions[name] = SpecialPermission.model_validate(grant)
        except ValidationError as err:
            raise OrganisationError(
                f"{path}: special permission {name!r}: {_problems(err)}"
            ) from None
    orgs: list[Organisation] = []
    for index, entry in enumerate(entries):
        name = entry.get("code", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
        try:
            orgs.append(Organisation.model_validate(entry))
        except ValidationError as err:
            raise OrganisationError(f"{path}: organisation {name!r}: {_problems(err)}") from None
    try:
        return Organisations(orgs, permissions)
    except OrganisationError as err:
        raise OrganisationError(f"{path}: {err}") from None


def _problems(err: ValidationError) -> str:
    return "; ".join(
        (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "") + e["msg"]
        for e in err.errors()
    )
