"""The console's settings (environment prefix ``CASEFLOW_CONSOLE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Where the console listens, where the APIs answer and how staff sign in."""

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_CONSOLE_", extra="ignore", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    intake_url: str = "http://127.0.0.1:8001"
    processing_url: str = "http://127.0.0.1:8002"
    notify_url: str = "http://127.0.0.1:8003"
    api_timeout_seconds: float = Field(default=15.0, gt=0)
    local_sign_in_key_dir: Path | None = Field(
        default=None,
        description=(
            "the embedded default's signing keys (caseflow up): staff sign in by picking"
            " one of the demo staff, and the console signs their token with this key."
            " Never set in production, where staff sign in with OpenID Connect."
        ),
    )
    oidc_issuer: str | None = Field(
        default=None, description="the city's OpenID Connect provider (its issuer URL)"
    )
    oidc_client_id: str | None = None
    oidc_client_secret_file: Path | None = None
    oidc_scope: str = "openid profile"
    public_url: str | None = Field(
        default=None,
        description="the console's address as browsers reach it (the sign-in's redirect URI)",
    )
    jwks_url: str | None = Field(
        default=None,
        description="the keys of the staff tokens the APIs take (default: the provider's)",
    )
    jwt_issuer: str = "caseflow"
    jwt_audience: str = "caseflow"
    session_minutes: int = Field(
        default=480, ge=1, le=24 * 60, description="a session ends this long after sign-in"
    )
    idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="…or after this long without a request"
    )
    secure_cookies: bool = Field(
        default=False, description="mark the session cookie Secure (behind HTTPS)"
    )
    data_dir: Path | None = Field(
        default=None, description="reference data (catalogue, organisations) if not packaged"
    )

    @property
    def oidc(self) -> bool:
        """Staff sign in with OpenID Connect."""
        return bool(self.oidc_issuer and self.oidc_client_id and self.public_url)

    @field_validator("intake_url", "processing_url", "notify_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// address")
        return value.rstrip("/")
