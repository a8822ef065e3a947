"""Keyed requests for tests that open cases through the service, not over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.adapters.idempotency import KeyedRequest
from shared.domain.workflow import engine


def sent(
    staff: engine.Staff, key: str, body: Mapping[str, Any], operation: str = "POST /cases"
) -> KeyedRequest:
    """``body`` as ``staff`` would have sent it under ``key``."""
    return KeyedRequest.of(
        organisation=staff.org, user=staff.user, key=key, operation=operation, body=body
    )
