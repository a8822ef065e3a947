"""Versioned event payloads: old versions are upcast to the current one where events are read.

Every event carries the ``schema_version`` of its payload. When a payload's shape changes,
its event type gets a new version in :data:`CURRENT_VERSIONS` and one pure *upcaster*
from the previous version: ``(event_type, from_version) → function(payload) → payload``.
Reading an older event chains them (1 → 2 → 3 …) up to the current version, so handlers
only ever deal with the shape the code knows.

**The log is not rewritten.** It is append-only and audited as stored: :func:`upcast`
returns a *copy* of the :class:`~shared.domain.events.StoredEvent` with the new payload and
``schema_version``; the stored row is untouched, and so are the copy's ``hash`` and
``prev_hash`` — they are the stored row's and verify against the stored form (as the
log returns it), never against an upcast copy. The relay publishes a masked view of each
event at its stored version; caseflow's consumers take the event from the log and upcast
it, and :class:`~shared.adapters.bus.consumer.UnitOfWork` upcasts the histories handlers read.

Writers record the current version (``CaseService.open_case`` writes
:func:`current_version` of the start event). An event whose version is *newer* than the
code knows can't be read safely: :class:`SchemaTooNew` says so rather than guess, and a
consumer dead-letters it (re-drive it after upgrading the consumer).

Versions:

- ``CaseReceived`` v2: the applicant's notice ``language`` (``zh-CN`` or ``en``, chosen
  at intake) and the notice ``channels`` are always in the payload. Version 1 had no
  ``language`` and, in its earliest form, no ``channels``: upcast with ``zh-CN`` and
  ``["sms"]``, what intake assumed before applicants chose.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from shared.domain.events import StoredEvent

Payload = dict[str, Any]
Upcaster = Callable[[Mapping[str, Any]], Payload]
"""A pure function from one version's payload to the next version's (no I/O, no clock)."""


class UpcastError(ValueError):
    """An event that can't be brought to the current version of its payload."""


class SchemaTooNew(UpcastError):
    """The event's schema version is newer than this code knows: don't guess its meaning."""

    def __init__(self, event_type: str, version: int, known: int) -> None:
        super().__init__(
            f"{event_type} schema version {version} is newer than this code knows "
            f"(version {known}); upgrade the consumer, then re-drive the message"
        )
        self.event_type = event_type
        self.version = version
        self.known = known


class UpcasterRegistry:
    """Current versions per event type and the upcasters between versions."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self.current_versions: Mapping[str, int] = MappingProxyType(self._current)
        """Event type → its current schema version (types not listed are at version 1)."""

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn`` turns ``event_type`` version ``from_version`` into the next.

        Registering raises the type's current version to ``from_version + 1`` if it was
        lower; a second upcaster for the same step is an error.
        """
        if from_version < 1:
            raise ValueError("schema versions start at 1")

        def add(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._steps:
                raise ValueError(f"{event_type} already has an upcaster from v{from_version}")
            self._steps[key] = fn
            self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)
            return fn

        return add

    def current_version(self, event_type: str) -> int:
        """The schema version writers record for ``event_type`` now."""
        return self._current.get(event_type, 1)

    def check(self) -> None:
        """Every current version is reachable from version 1 (no missing step)."""
        for event_type, current in self._current.items():
            for version in range(1, current):
                if (event_type, version) not in self._steps:
                    raise UpcastError(f"{event_type}: no upcaster from v{version}")

    def upcast_payload(
        self, event_type: str, version: int, payload: Mapping[str, Any]
    ) -> tuple[int, Payload]:
        """``payload`` at ``version`` brought to the current version: (version, payload).

        Returns the payload object itself when there is nothing to do; otherwise the
        upcasters work on a deep copy, so the caller's payload is never changed.
        """
        current = self.current_version(event_type)
        if version == current:
            return version, dict(payload) if not isinstance(payload, dict) else payload
        if version > current:
            raise SchemaTooNew(event_type, version, current)
        if version < 1:
            raise UpcastError(f"{event_type} has schema version {version}; versions start at 1")
        result: Payload = copy.deepcopy(dict(payload))
        while version < current:
            step = self._steps.get((event_type, version))
            if step is None:
                raise UpcastError(f"{event_type}: no upcaster from v{version}")
            try:
                result = step(result)
            except UpcastError:
                raise
            except Exception as err:
                raise UpcastError(
                    f"{event_type} v{version} payload can't be upcast: {type(err).__name__}"
                ) from err
            version += 1
        return version, result

    def upcast(self, event: StoredEvent) -> StoredEvent:
        """``event`` at the current version of its payload (itself if it is already).

        A copy with the new payload and ``schema_version``; ``hash`` and ``prev_hash``
        stay the stored row's (see the module's docstring).
        """
        if event.schema_version == self.current_version(event.event_type):
            return event
        version, payload = self.upcast_payload(
            event.event_type, event.schema_version, event.payload
        )
        return dataclasses.replace(event, schema_version=version, payload=payload)

    def upcast_all(self, events: Iterable[StoredEvent]) -> list[StoredEvent]:
        """:meth:`upcast` each of ``events``, in order."""
        return [self.upcast(event) for event in events]


REGISTRY = UpcasterRegistry()
"""caseflow's upcasters."""


@REGISTRY.register("CaseReceived", 1)
def _case_received_v1(payload: Mapping[str, Any]) -> Payload:
    """v1 → v2: the notice language (chosen at intake since v2) and channels always set."""
    upcast = dict(payload)
    upcast.setdefault("language", "zh-CN")
    upcast.setdefault("channels", ["sms"])
    return upcast


REGISTRY.check()

CURRENT_VERSIONS: Mapping[str, int] = REGISTRY.current_versions
"""Event type → current schema version; a type not listed is at version 1."""

current_version = REGISTRY.current_version
upcast = REGISTRY.upcast
upcast_all = REGISTRY.upcast_all
upcast_payload = REGISTRY.upcast_payload
