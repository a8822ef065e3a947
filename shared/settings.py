"""Settings shared by the services, read from the environment (one prefix per service)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings; on a bad value stop with a message that names the variable."""
    try:
        return cls()
    except ValidationError as err:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [
            f"  {prefix}{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            f" (got {e.get('input')!r})"
            for e in err.errors()
        ]
        print("caseflow: invalid settings:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
