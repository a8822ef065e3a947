"""Catalogue entries: service items, the materials they require, and their canonical hash.

Pure data and validation, no I/O. A ``ServiceItem`` is one *version* of an item; a case pins
the version it was received under. The canonical JSON of a resolved entry (materials
included in full) is what the lock file fingerprints, so a published version can't change,
not even through a shared material definition.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

_CODE = r"^[a-z][a-z0-9_]*$"

NotifyStatus = Literal[
    "received",
    "accepted",
    "correction_requested",
    "not_accepted",
    "forwarded",
    "approved",
    "rejected",
    "delivered",
    "closed",
    "withdrawn",
]
NOTIFY_STATUSES: tuple[str, ...] = get_args(NotifyStatus)

ItemStatus = Literal["draft", "published"]


class TrustLevel(StrEnum):
    """How far a material can be trusted without further checks."""

    A = "A"  # issued by the office itself
    B = "B"  # checked by window staff against the original
    C = "C"  # uploaded by the applicant; the original is still to be checked
    D = "D"  # self-declared by the applicant


class Completion(StrEnum):
    station = "station"  # completed entirely at the station (一办到头)
    forwarded = "forwarded"  # received at the station, forwarded to a named authority


class Category(StrEnum):
    hrss = "hrss"
    medical_insurance = "medical_insurance"
    health = "health"
    civil_affairs = "civil_affairs"
    forestry = "forestry"
    agriculture = "agriculture"
    public_security = "public_security"


class Material(BaseModel):
    """A document the applicant hands in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(pattern=_CODE)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    trust_level: TrustLevel
    original_required: bool

    @model_validator(mode="after")
    def _self_declared_has_no_original(self) -> Material:
        if self.trust_level is TrustLevel.D and self.original_required:
            raise ValueError("a self-declared (D) material has no original to check")
        return self


class ServiceItem(BaseModel):
    """One version of a service item of the catalogue.

    ``materials`` may be given as material codes when validated with
    ``context={"materials": {code: Material}}`` (the loader does so).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(pattern=_CODE)
    version: int = Field(ge=1)
    status: ItemStatus
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    category: Category
    authority: str = Field(pattern=_CODE)
    legal_basis: str = Field(min_length=1)
    legal_limit_days: int = Field(ge=1)
    committed_limit_days: int = Field(ge=1)
    materials: tuple[Material, ...] = Field(min_length=1)
    fee_yuan: Decimal = Field(ge=0, max_digits=10, decimal_places=2)
    completion: Completion
    forward_to: str | None = Field(default=None, pattern=_CODE)
    notify_on: tuple[NotifyStatus, ...]
    workflow: str = Field(min_length=1, pattern=_CODE)
    workflow_version: int = Field(ge=1)

    @property
    def key(self) -> str:
        """``code@version``: how the lock file and messages name this entry."""
        return f"{self.code}@{self.version}"

    @property
    def is_free(self) -> bool:
        return self.fee_yuan == 0

    @field_validator("materials", mode="before")
    @classmethod
    def _resolve_materials(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list | tuple):
            return value
        known = (info.context or {}).get("materials")
        resolved: list[Any] = []
        for entry in value:
            if isinstance(entry, str):
                if known is None:
                    raise ValueError(f"material {entry!r} given by code without a registry")
                if entry not in known:
                    raise ValueError(f"unknown material {entry!r}")
                resolved.append(known[entry])
            else:
                resolved.append(entry)
        return resolved

    @field_validator("fee_yuan", mode="after")
    @classmethod
    def _two_places(cls, value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.01"))

    @model_validator(mode="after")
    def _consistent(self) -> ServiceItem:
        if self.committed_limit_days > self.legal_limit_days:
            raise ValueError(
                f"committed limit {self.committed_limit_days} exceeds the legal limit"
                f" {self.legal_limit_days} (working days)"
            )
        codes = [m.code for m in self.materials]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise ValueError(f"materials listed twice: {', '.join(duplicates)}")
        if self.completion is Completion.forwarded and self.forward_to is None:
            raise ValueError("a forwarded item needs forward_to (the authority it goes to)")
        if self.completion is Completion.station and self.forward_to is not None:
            raise ValueError("an item completed at the station has no forward_to")
        if len(set(self.notify_on)) != len(self.notify_on):
            raise ValueError("notify_on lists a status twice")
        if "forwarded" in self.notify_on and self.completion is not Completion.forwarded:
            raise ValueError("notify_on 'forwarded' only for forwarded items")
        return self

    def canonical_json(self) -> str:
        """Key-sorted, compact JSON of the entry (materials in full): what the lock hashes."""
        return json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
