"""Notify's settings (environment prefix ``CASEFLOW_NOTIFY_``; nested with ``__``, e.g.
``CASEFLOW_NOTIFY_SMTP__HOST``, ``CASEFLOW_NOTIFY_DISPATCH__SMS__CONCURRENCY``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.notify.channels.email import EmailSettings
from services.notify.channels.sms import SmsSettings
from services.notify.dispatcher import DispatchSettings
from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    """Where notify listens and how it reaches people.

    A channel without settings is not configured: its notices end as dead letters
    ("channel not configured") that an operator can re-drive once it is.
    """

    model_config = SettingsConfigDict(
        env_prefix="CASEFLOW_NOTIFY_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    port: int = Field(default=8003, ge=1, le=65535)
    smtp: EmailSettings | None = Field(default=None, description="email over SMTP")
    sms: SmsSettings | None = Field(default=None, description="SMS through the gateway")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    dispatch: DispatchSettings = DispatchSettings()
    notice_max_age_hours: float = Field(
        default=72.0,
        gt=0,
        description="events recorded longer ago are not notified (a replayed stream)",
    )
