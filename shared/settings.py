"""Settings shared by the services, read from the environment (one prefix per service)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.privacy import hide_url_passwords

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/caseflow.db"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_MAX_REQUEST_BODY_BYTES = 1024 * 1024
"""The largest request body a service reads (``shared.web.http.InputGuardMiddleware``). The
largest legitimate ones are tens of KiB (a re-drive of 1,000 dead letters is 40 KB; a
mediation with every text field full of escaped Chinese 19 KB; an application with 50
materials 6 KB), so 1 MiB leaves a wide margin and bounds what the guard reads and parses
before anyone signs in."""


class ServiceSettings(BaseSettings):
    """What every service needs: where the log and the bus are, and where to listen."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    database_url: str = DEFAULT_DATABASE_URL
    nats_url: str = Field(
        default=DEFAULT_NATS_URL,
        description="the NATS server, or the nodes of a cluster separated by commas "
        "(nats://n1:4222,nats://n2:4222,nats://n3:4222): the service reconnects to another "
        "node when its own goes away",
    )
    nats_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="how many copies of each stream a NATS cluster keeps (JetStream's "
        "num_replicas): 1 on a single nats-server, 3 on a three-node cluster; the same "
        "for every service",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    nats_seed_file: Path | None = Field(
        default=None,
        description="the NKEY seed this service connects to NATS with (`caseflow up` makes "
        "one under var/nats); without it the service does not connect",
    )
    nats_relay_seed_file: Path | None = Field(
        default=None,
        description="the relay's NKEY seed: only the relay may publish events; a process "
        "without it runs no relay",
    )
    relay: bool = Field(
        default=True, description="run a relay in this process (one leads), given its seed"
    )
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    jwt_public_key_file: Path | None = Field(
        default=Path("var/keys/jwt-ed25519.pub.pem"),
        description="PEM public key(s) that staff tokens are checked against",
    )
    jwks_url: str | None = Field(
        default=None, description="or an identity provider's JWKS URL (production)"
    )
    jwt_issuer: str = "caseflow"
    jwt_audience: str = "caseflow"
    metrics_token_file: Path | None = Field(
        default=Path("var/keys/metrics-token"),
        description="the bearer token Prometheus must send for /metrics (caseflow up makes "
        "one); without a readable token /metrics serves nobody",
    )
    max_request_body_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BODY_BYTES,
        ge=1024,
        description="the largest request body read; a larger one is refused with 413 "
        "before the rest of it is read",
    )
    database_password_file: Path | None = Field(
        default=None,
        description="the database password, read from this file (e.g. a compose secret) and"
        " put into DATABASE_URL, which then carries none",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="where to send traces (OTLP over HTTP, e.g. http://collector:4318);"
        " unset: no tracing",
    )
    root_path: str = Field(
        default="",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="the path prefix a reverse proxy serves this service under (e.g."
        " /api/intake): /docs and the OpenAPI document link under it",
    )
    backlog_sample_seconds: float = Field(
        default=15.0,
        gt=0,
        description="how often the backlog gauges on /metrics are read (database, bus)",
    )
    data_dir: Path | None = Field(
        default=None,
        description="reference data (catalogue, workflows, organisations, holidays); "
        "the packaged data when unset",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @model_validator(mode="after")
    def _database_password(self) -> ServiceSettings:
        if self.database_password_file is not None:
            from shared.adapters.db import with_password_file

            self.database_url = with_password_file(self.database_url, self.database_password_file)
            self.database_password_file = None  # read once: the URL now has it
        return self

    @field_validator("jwks_url")
    @classmethod
    def _web_jwks(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// on a trusted network)")
        return value or None

    @field_validator("nats_seed_file", "nats_relay_seed_file")
    @classmethod
    def _user_seed(cls, value: Path | None) -> Path | None:
        if value is not None:
            from shared.adapters.bus.credentials import read_seed_file

            read_seed_file(value)  # ValueError names the file and what is wrong with it
        return value

    @field_validator("nats_url")
    @classmethod
    def _known_nats(cls, value: str) -> str:
        from shared.adapters.bus.client import server_list

        return ",".join(server_list(value))  # ValueError names the entry that is wrong

    @property
    def nats_servers(self) -> list[str]:
        """The servers of ``nats_url``, one or several."""
        return self.nats_url.split(",")


def secret_from_file(data: Any, field: str, *, required: bool = True) -> Any:
    """For a settings model's ``mode="before"`` validator: ``<field>`` read from the file
    ``<field>_file`` names (a compose secret), so that the secret need not travel in the
    environment. Both given is refused; an empty file is an error if ``required``, else
    the same as no value."""
    source = f"{field}_file"
    if not isinstance(data, dict) or not data.get(source):
        return data
    if data.get(field):
        raise ValueError(f"{field} and {source} are both set: keep one")
    path = Path(str(data[source]))
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ValueError(f"{source}: can't read {path} ({err.strerror})") from None
    if not secret and required:
        raise ValueError(f"{source}: {path} is empty")
    return {**data, field: secret or None}


S = TypeVar("S", bound=BaseSettings)

SHARED_DATABASE_URL = "CASEFLOW_DATABASE_URL"
SHARED_DATABASE_PASSWORD_FILE = "CASEFLOW_DATABASE_PASSWORD_FILE"  # noqa: S105 - a variable's name
"""The database of every service, where a service's own ``CASEFLOW_<SERVICE>_DATABASE_URL``
is not set."""

_SECRET_WORDS = ("secret", "password", "token", "key", "seed")


def _secret_name(name: str) -> bool:
    name = name.lower()
    return any(word in name for word in _SECRET_WORDS) and not name.endswith(("_file", "_url"))


def _redacted(value: object) -> object:
    """``value`` with secrets (by their keys' names) as ``***`` and URL passwords hidden."""
    if isinstance(value, dict):
        return {k: "***" if _secret_name(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if isinstance(value, str):
        return hide_url_passwords(value)
    return value


def _shown_input(loc: tuple[int | str, ...], value: object) -> str:
    """What was given, for the message: never a secret (by the setting's name), and URLs
    without their passwords."""
    if _secret_name("_".join(str(part) for part in loc)):
        return "value not shown"
    return f"got {_redacted(value)!r}"


def load_settings(cls: type[S]) -> S:
    """Read settings; on a bad value stop with a message that names the variable."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    given: dict[str, Any] = {}
    if (
        issubclass(cls, ServiceSettings)
        and f"{prefix}DATABASE_URL" not in os.environ
        and SHARED_DATABASE_URL in os.environ
    ):
        # One database for every service: the unprefixed variable, as `caseflow migrate`
        # and `caseflow up` read it; a service's own variable wins.
        given["database_url"] = os.environ[SHARED_DATABASE_URL]
        if f"{prefix}DATABASE_PASSWORD_FILE" not in os.environ and (
            shared_password := os.environ.get(SHARED_DATABASE_PASSWORD_FILE)
        ):
            given["database_password_file"] = shared_password
    try:
        return cls(**given)
    except ValidationError as err:

        def variable(loc: tuple[int | str, ...]) -> str:
            if loc == ("database_url",) and given:
                return SHARED_DATABASE_URL
            return f"{prefix}{'__'.join(str(p) for p in loc).upper()}"

        lines = [
            f"  {variable(e['loc'])}: {e['msg']} ({_shown_input(e['loc'], e.get('input'))})"
            for e in err.errors()
        ]
        print("caseflow: invalid settings:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
