"""Intake's settings (environment prefix ``CASEFLOW_INTAKE_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    """Where intake listens and which station's window it serves."""

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_INTAKE_", extra="ignore", validate_default=True
    )

    port: int = Field(default=8001, ge=1, le=65535)
    station: str = Field(default="XF", pattern=r"^[A-Z0-9_]{1,20}$")
