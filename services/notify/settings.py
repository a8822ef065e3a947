"""Notify's settings (environment prefix ``CASEFLOW_NOTIFY_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    """Where notify listens."""

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_NOTIFY_", extra="ignore", validate_default=True
    )

    port: int = Field(default=8003, ge=1, le=65535)
