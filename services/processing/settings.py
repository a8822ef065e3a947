"""Processing's settings (environment prefix ``CASEFLOW_PROCESSING_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProcessingSettings(ServiceSettings):
    """Where processing listens."""

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_PROCESSING_", extra="ignore", validate_default=True
    )

    port: int = Field(default=8002, ge=1, le=65535)
