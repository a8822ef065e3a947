"""Tokens that are malformed at the edge, through the three real apps on both backends:
each is a 401 problem+json with a Bearer challenge, never a 500, and records nothing.

- Headers PyJWT refuses before any key is looked at (``crit``, a ``kid`` that is not text),
  once signed with the right key (only the header is at fault) and once spliced onto a
  genuine token; ``alg`` none and a huge ``kid`` too.
- User ids (``sub``) the log can't hold (over 100 characters, NUL on PostgreSQL) or a
  reader can't read (control, direction-control or only invisible characters): they were
  recorded, or a 500. ``caseflow token`` signs none of them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from annotated_types import MaxLen
from sqlalchemy import func, select
from typer.testing import CliRunner

from services.notify.schema import subscriptions
from shared.adapters.auth import USER_ID_MAX_LENGTH, SigningKey, ensure_key_pair
from shared.adapters.tables.eventlog import events
from shared.adapters.tables.idempotency import idempotency_keys
from shared.adapters.tables.workflow import tasks
from shared.cli.main import app as cli
from shared.domain.events import Actor
from shared.web.http import PROBLEM_JSON
from tests.services import build_app, session_keys, token_for

VISIT = {"visitor_name": "张三", "purpose": "enquiry"}
# One operation per service that needs a token; intake's records the user as the actor.
READS = {"processing": "/worklist", "notify": "/webhooks"}
SIGNED_IN = [201, 200, 403]
"""What a window clerk's good token gets: the visit recorded, the worklist, and notify's
webhooks refused by role (they are the station head's), so past sign-in everywhere."""


class Apps:
    """The three services in-process on one database."""

    def __init__(self, database_url: str) -> None:
        self.built = {name: build_app(name, database_url) for name in ("intake", *READS)}
        self.http = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            for name, app in self.built.items()
        }

    async def log_size(self) -> int:
        async with self.built["intake"].state.runtime.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())

    async def answers(self, token: str) -> list[httpx.Response]:
        """Each service's answer to the token: a visit recorded at intake, a read elsewhere."""
        bearer = {"Authorization": f"Bearer {token}"}
        headers = {**bearer, "Idempotency-Key": f"edge-{uuid.uuid4()}"}
        answers = [await self.http["intake"].post("/reception", json=VISIT, headers=headers)]
        for service, path in READS.items():
            answers.append(await self.http[service].get(path, headers=bearer))
        return answers

    async def refused(self, token: str, says: str) -> None:
        before = await self.log_size()
        for response in await self.answers(token):
            where = f"{response.request.method} {response.request.url.path}"
            assert response.status_code == 401, f"{where}: {response.text}"
            assert response.headers["content-type"] == PROBLEM_JSON, where
            assert response.headers["www-authenticate"].startswith("Bearer"), where
            assert says in response.json()["detail"], f"{where}: {response.json()}"
        assert await self.log_size() == before


@pytest.fixture
async def apps(db_url: str) -> AsyncIterator[Apps]:
    running = Apps(db_url)
    yield running
    for name, client in running.http.items():
        await client.aclose()
        await running.built[name].state.runtime.engine.dispose()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user: str = "li.clerk") -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": user,
        "role": "window_clerk",
        "org": "xuefeng_station",
        "iss": "caseflow",
        "aud": "caseflow",
        "iat": now,
        "exp": now + 600,
    }


def signed(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWT with exactly this header and these claims, signed with the session's key."""
    key = SigningKey.load(session_keys().directory)
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64(signature)}"


MALFORMED_HEADERS: list[tuple[str, dict[str, Any]]] = [
    ("kid a number", {"alg": "EdDSA", "typ": "JWT", "kid": 7}),
    ("kid a list", {"alg": "EdDSA", "typ": "JWT", "kid": ["KID"]}),
    ("kid an object", {"alg": "EdDSA", "typ": "JWT", "kid": {"id": "KID"}}),
    ("kid null", {"alg": "EdDSA", "typ": "JWT", "kid": None}),
    ("crit an extension", {"alg": "EdDSA", "typ": "JWT", "kid": "KID", "crit": ["exp"]}),
    ("crit not a list", {"alg": "EdDSA", "typ": "JWT", "kid": "KID", "crit": "b64"}),
    ("crit of numbers", {"alg": "EdDSA", "typ": "JWT", "kid": "KID", "crit": [1]}),
    ("alg none", {"alg": "none", "typ": "JWT", "kid": "KID"}),
    ("alg a list", {"alg": ["EdDSA"], "typ": "JWT", "kid": "KID"}),
    ("huge kid", {"alg": "EdDSA", "typ": "JWT", "kid": "k" * 20_000}),
    ("no typ", {"alg": "EdDSA", "kid": "KID"}),
]


def _header(template: dict[str, Any]) -> dict[str, Any]:
    """The template with the session key's id where it says ``KID``."""
    kid = SigningKey.load(session_keys().directory).kid
    text = json.dumps(template).replace('"KID"', json.dumps(kid))
    header: dict[str, Any] = json.loads(text)
    return header


@pytest.mark.parametrize(
    ("what", "header"), MALFORMED_HEADERS, ids=[w for w, _ in MALFORMED_HEADERS]
)
async def test_a_malformed_header_on_a_genuine_token_is_a_401(
    apps: Apps, what: str, header: dict[str, Any]
) -> None:
    genuine = token_for("li.clerk", "window_clerk", "xuefeng_station")
    spliced = f"{_b64(json.dumps(_header(header)).encode())}.{genuine.split('.', 1)[1]}"
    await apps.refused(spliced, "sign in again")


@pytest.mark.parametrize(
    ("what", "header"),
    [(w, h) for w, h in MALFORMED_HEADERS if w != "no typ"],
    ids=[w for w, _ in MALFORMED_HEADERS if w != "no typ"],
)
async def test_a_malformed_header_signed_with_the_right_key_is_a_401(
    apps: Apps, what: str, header: dict[str, Any]
) -> None:
    """Only the header is at fault here: crit and a kid that is no text were a 500."""
    await apps.refused(signed(_header(header), _claims()), "sign in again")


async def test_a_header_without_typ_is_accepted(apps: Apps) -> None:
    """``typ`` is optional (RFC 7519 §5.1), so the 401s above are the headers' doing."""
    token = signed(_header({"alg": "EdDSA", "kid": "KID"}), _claims())
    assert [r.status_code for r in await apps.answers(token)] == SIGNED_IN


BAD_USER_IDS = [
    ("x" * (USER_ID_MAX_LENGTH + 1), "longer than 100 characters"),
    ("li\x00ming", "control character U+0000"),
    ("li\x1b[31mming", "control character U+001B"),
    ("li.ming\r\nforged log line", "control character U+000D"),
    ("li\u202egnim", "direction control U+202E"),
    ("li\u2066ming", "direction control U+2066"),
    ("\u200b\u200d", "no visible characters"),
    ("   ", "no visible characters"),
    ("", "doesn't name a user"),
]


@pytest.mark.parametrize(("user", "says"), BAD_USER_IDS, ids=[s for _, s in BAD_USER_IDS])
async def test_a_user_id_the_log_cant_hold_or_a_reader_cant_read_is_a_401(
    apps: Apps, user: str, says: str
) -> None:
    await apps.refused(signed(_header({"alg": "EdDSA", "kid": "KID"}), _claims(user)), says)


async def test_a_user_id_of_the_longest_length_is_recorded(apps: Apps) -> None:
    user = "王" * USER_ID_MAX_LENGTH  # 100 characters, 300 bytes: the column counts characters
    answers = await apps.answers(token_for(user, "window_clerk", "xuefeng_station"))
    assert [r.status_code for r in answers] == SIGNED_IN, answers[0].text


def test_the_longest_user_id_is_what_every_column_naming_a_user_holds() -> None:
    columns = [
        events.c.actor_user,
        idempotency_keys.c.actor_user,
        tasks.c.claimed_by,
        subscriptions.c.created_by,
    ]
    assert {column.type.length for column in columns} == {USER_ID_MAX_LENGTH}  # type: ignore[attr-defined]
    assert MaxLen(USER_ID_MAX_LENGTH) in Actor.model_fields["user"].metadata


@pytest.mark.parametrize(("user", "says"), BAD_USER_IDS[:-1], ids=[s for _, s in BAD_USER_IDS[:-1]])
def test_caseflow_token_signs_no_such_user_id(tmp_path: Path, user: str, says: str) -> None:
    ensure_key_pair(tmp_path)
    args = ["--role", "window_clerk", "--org", "xuefeng_station", "--key-dir", str(tmp_path)]
    result = CliRunner().invoke(cli, ["token", "--user", user, *args])
    assert result.exit_code == 2, result.output
    words = " ".join(result.output.replace("│", " ").split())  # Rich wraps its error box
    assert "--user" in words and "the user id" in words
    assert "eyJ" not in result.output  # no token printed
