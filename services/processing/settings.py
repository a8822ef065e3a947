"""Processing's settings (environment prefix ``CASEFLOW_PROCESSING_``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProcessingSettings(ServiceSettings):
    """Where processing listens."""

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_PROCESSING_", extra="ignore", validate_default=True
    )

    port: int = Field(default=8002, ge=1, le=65535)
    audit_key_file: Path = Field(
        default=Path("var/keys/audit-ed25519.pem"),
        description="the audit's Ed25519 private key that signs checkpoints of the log",
    )
    audit_checkpoint_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often new events are covered by a checkpoint"
    )
    audit_verify_interval_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="how often the whole log is verified for GET /audit/verification",
    )
    paper_file_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="how long the timers of an act entered later from paper (补录) wait after "
        "it was recorded, so the rest of its file can be entered before any warning",
    )
    audit_checkpoints: bool = Field(
        default=True, description="sign checkpoints in this process (any number may: one wins)"
    )
