"""Signed-in sessions, kept in the console's memory.

The browser holds only a random session id (an HttpOnly, SameSite=Strict cookie); the
staff token the APIs check stays here. A session ends at sign-out, ``session_minutes``
after sign-in (or when its token expires, if sooner) and after ``idle_minutes`` without a
request. Each session has its own token against cross-site form posts. Sessions do not
survive a restart of the console: staff sign in again.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

COOKIE = "caseflow_session"


@dataclass
class Session:
    """One member of staff, signed in."""

    id: str
    token: str
    user: str
    role: str
    org: str
    name: str | None
    started: datetime
    ends: datetime
    last_seen: datetime
    permissions: frozenset[str] = frozenset()
    """The special permissions the member's token carries (``backfill``: the forms take
    the moment a paper record's act happened)."""
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The window's outcome (receipt or one-time notice) of the cases this session
    received, for its printable page; the last few only."""


class Sessions:
    """The live sessions; thread-safe, expired ones forgotten as they are met."""

    def __init__(self, lifetime: timedelta, idle: timedelta) -> None:
        self.lifetime = lifetime
        self.idle = idle
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(
        self,
        *,
        token: str,
        user: str,
        role: str,
        org: str,
        name: str | None,
        token_expires: datetime | None,
        permissions: frozenset[str] = frozenset(),
        now: datetime | None = None,
    ) -> Session:
        now = now or datetime.now(UTC)
        ends = now + self.lifetime
        if token_expires is not None:
            ends = min(ends, token_expires)
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            user=user,
            role=role,
            org=org,
            name=name,
            permissions=permissions,
            started=now,
            ends=ends,
            last_seen=now,
        )
        with self._lock:
            self._forget_expired(now)
            self._live[session.id] = session
        return session

    def get(self, session_id: str | None, now: datetime | None = None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarted), or None."""
        if not session_id:
            return None
        now = now or datetime.now(UTC)
        with self._lock:
            session = self._live.get(session_id)
            if session is None:
                return None
            if now >= session.ends or now - session.last_seen >= self.idle:
                del self._live[session_id]
                return None
            session.last_seen = now
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._live.pop(session_id, None)

    def _forget_expired(self, now: datetime) -> None:
        gone = [k for k, s in self._live.items() if now >= s.ends or now - s.last_seen >= self.idle]
        for key in gone:
            del self._live[key]
